"""``python -m tests.e2e.loopback_node serve …``: ``xueliang serve`` whose WebRTC gathers
127.0.0.1 only, as the in-process services of the Chromium tests do (see
``tests/e2e/conftest.py``), for tests that run the service as separate processes."""

from __future__ import annotations

import sys

import aioice.ice

from cli.main import main


def _loopback(*_args: object, **_kwargs: object) -> list[str]:
    return ["127.0.0.1"]


if __name__ == "__main__":
    aioice.ice.get_host_addresses = _loopback
    sys.exit(main())
