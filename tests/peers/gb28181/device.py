"""A GB/T 28181 device (an IP camera, or an NVR with N channels) played by SIPp, for tests.

The platform under test must be tested against a peer that shares none of its SIP code:
this device is two kinds of SIPp (Debian ``sip-tester``) runs driven by the scenarios
beside this module, plus the RTP sender of ``media.py``::

    with GbDevice("34020000001320000001", "12345678", platform_port=5060,
                  channels=make_channels("34020000001320000001", 4, ps_file)) as device:
        assert device.register().ok          # REGISTER, 401, REGISTER with digest, 200
        ...                                  # Keepalive every keepalive_s from now on
        device.wait_for("INVITE")            # the platform asked for a stream
        device.stop_keepalives()             # the platform should mark it offline
        device.send_alarm(channel_id, description="区域入侵")
        device.unregister()

Processes (all bound to 127.0.0.1):

- **UAS** (``uas.xml``), started by :meth:`GbDevice.start` on :attr:`GbDevice.uas_port`,
  the port the REGISTER's Contact names, and running until :meth:`GbDevice.close`. It
  answers the platform's MESSAGE queries (Catalog in two GB2312 Response MESSAGEs,
  DeviceInfo, DeviceStatus), SUBSCRIBE, and INVITE/ACK/BYE; on ACK it starts the RTP sender
  through ``send.sh`` (one process per call, stopped on that call's BYE). Each platform
  request has a Call-ID of its own, so each is a SIPp call of its own and any number run at
  once (20 channels streaming together is fine).
- **UAC** runs on :attr:`GbDevice.uac_port`, one at a time: ``register.xml`` (-m 1) for
  REGISTER and un-REGISTER, then ``keepalive.xml``, a run that sends one Keepalive MESSAGE
  per SIPp call every ``keepalive_s`` until :meth:`stop_keepalives` ends it. A platform
  must send its requests to the Contact, not to the REGISTER's source port: nothing
  answers there. Alarms (``message.xml``, -m 1) go from a port of their own, so they do
  not disturb the keepalive rhythm.

What the device saw and did is read back from SIPp's ``<log>`` lines and ``send.sh``'s
``media.log``: :meth:`events` (INVITE, ACK, BYE, MESSAGE, SUBSCRIBE, ANSWER with their fields),
:meth:`keepalives` (SN and the platform's answer), :meth:`senders` (one JSON summary per
RTP sender: frames, packets, when the first packet left, why it ended).

Response MESSAGEs (Catalog, DeviceInfo, ...) have Call-IDs of their own, as cameras send
them; SIPp cannot wait for their 200 in the query's call, so they are sent once, not
retransmitted, and the platform's 200 shows up as an ``ANSWER`` event. Un-REGISTER reuses
the REGISTER's Call-ID with a higher CSeq, as cameras do.
SIPp's digest answers whatever the 401 asks (``qop=auth`` or none): the variant is the
platform's choice. ``transport="tcp"`` runs SIPp with ``-t t1``; a platform must then
open its own connection to the Contact port for its requests. An INVITE inside an
established call (a session refresh) is not handled: SIPp aborts that call.

Fixture: ``gb_device`` (a factory of started devices, closed at teardown), available once
``"tests.peers.gb28181.device"`` is listed in ``pytest_plugins`` (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal
from xml.sax.saxutils import escape

import pytest

__all__ = [
    "ChannelSpec",
    "DeviceEvent",
    "DeviceInfo",
    "GbDevice",
    "RegisterResult",
    "gb_device",
    "make_channels",
]

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SIPP = "sipp"
USER_AGENT = "SIPp-GB28181-test-device"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_SIPP_BIND_FAILED = 254  # SIPp's exit status -2: "fatal error binding a socket"

Transport = Literal["udp", "tcp"]


@dataclass(frozen=True)
class ChannelSpec:
    """One channel (a camera) of the device, as its Catalog item describes it."""

    channel_id: str  # 20 digits; type code 131 (IP camera) at positions 11-13
    name: str
    longitude: float = 116.397128
    latitude: float = 39.916527
    ps_file: Path | None = None  # what the channel streams; None: INVITE gets no media
    manufacturer: str = "Xueliang"
    model: str = "SIPp-IPC"
    owner: str = "Owner"
    civil_code: str = ""  # default: the first 6 digits of the channel ID
    address: str = "测试路1号"
    parent_id: str = ""  # default: the device ID
    status: str = "ON"

    def __post_init__(self) -> None:
        if len(self.channel_id) != 20 or not self.channel_id.isdigit():
            raise ValueError(f"channel ID {self.channel_id!r} is not 20 digits")

    def catalog_item(self, device_id: str) -> str:
        """The ``<Item>`` of this channel in a Catalog Response."""
        fields = {
            "DeviceID": self.channel_id,
            "Name": self.name,
            "Manufacturer": self.manufacturer,
            "Model": self.model,
            "Owner": self.owner,
            "CivilCode": self.civil_code or self.channel_id[:6],
            "Address": self.address,
            "Parental": "0",
            "ParentID": self.parent_id or device_id,
            "RegisterWay": "1",
            "Secrecy": "0",
            "Status": self.status,
            "Longitude": f"{self.longitude:.6f}",
            "Latitude": f"{self.latitude:.6f}",
        }
        inner = "".join(f"<{key}>{escape(value)}</{key}>\r\n" for key, value in fields.items())
        return f"<Item>\r\n{inner}</Item>"


def make_channels(
    device_id: str, count: int, ps_file: Path | None = None, *, name: str = "通道"
) -> list[ChannelSpec]:
    """``count`` IP-camera channels under ``device_id``: IDs with the device's first 10
    digits, type 131 and a serial 1..count; Chinese names ``通道1``...; spread positions."""
    return [
        ChannelSpec(
            channel_id=f"{device_id[:10]}131{index:07d}",
            name=f"{name}{index}",
            longitude=116.397128 + index * 0.001,
            latitude=39.916527 + index * 0.001,
            ps_file=ps_file,
        )
        for index in range(1, count + 1)
    ]


@dataclass(frozen=True)
class DeviceInfo:
    """What the device says about itself in a DeviceInfo Response."""

    name: str = "测试设备"
    manufacturer: str = "Xueliang"
    model: str = "SIPp-NVR"
    firmware: str = "V1.0.0"


@dataclass(frozen=True)
class RegisterResult:
    """How a REGISTER (or un-REGISTER) ended."""

    code: int | None  # the final SIP status; None: no final answer (see ``detail``)
    challenged: bool  # the platform answered 401 first
    qop: str  # the qop the 401 asked for ("auth"), "" for none
    detail: str = ""  # SIPp's error log when code is None

    @property
    def ok(self) -> bool:
        """Registered (or unregistered)."""
        return self.code == 200


@dataclass(frozen=True)
class DeviceEvent:
    """A request the device's UAS received (a line of its log)."""

    kind: str  # INVITE, ACK, BYE, MESSAGE, SUBSCRIBE; ANSWER: the platform's 200 to a Response
    call: int  # SIPp's call number: an INVITE, its ACK and its BYE share it
    fields: dict[str, str] = field(default_factory=dict)  # channel, ssrc, cmd, sn, ...


@dataclass
class _Run:
    """One SIPp process and its files."""

    process: subprocess.Popen[bytes]
    log: Path
    stderr: IO[bytes]


class GbDevice:
    """One GB/T 28181 device; see the module docstring. A context manager."""

    def __init__(
        self,
        device_id: str,
        password: str,
        *,
        platform_port: int,
        platform_id: str = "34020000002000000001",
        domain: str = "3402000000",
        platform_host: str = HOST,
        channels: Sequence[ChannelSpec] = (),
        keepalive_s: float = 2.0,
        transport: Transport = "udp",
        mute: bool = False,
        loop_media: bool = True,
        info: DeviceInfo | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.device_id, self.password = device_id, password
        self.platform_id, self.domain = platform_id, domain
        self.platform = (platform_host, platform_port)
        self.channels = list(channels)
        self.keepalive_s, self.transport = keepalive_s, transport
        self.info = info or DeviceInfo()
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="gb28181-device-"))
        self._loop_media = loop_media
        self._mute_initially = mute
        self.uas_port = 0
        self.uac_port = 0
        self._uas: _Run | None = None
        self._keepalive: _Run | None = None
        self._runs = 0
        self._cseq = 1
        self._sn_base = 0  # Keepalive SN = this + SIPp's call number
        self._notify_sn = 100_000  # other Notify (Alarm) SNs, clear of the Keepalive ones
        self._call_id = f"{secrets.token_hex(8)}@{HOST}"

    # -- life cycle --

    def __enter__(self) -> GbDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = START_TIMEOUT_S) -> GbDevice:
        """Start the UAS (the device's Contact) and wait until its port is bound."""
        for sub in ("channels", "senders"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self._link_channel_files()
        self.mute = self._mute_initially
        self._uas, self.uas_port = self._spawn_bound("uas", None, timeout)
        (self.workdir / "uas.pid").write_text(str(self._uas.process.pid))
        self.uac_port = _free_port(self.transport)
        return self

    def close(self) -> None:
        """Stop keepalives, the UAS and every RTP sender; remove a temporary workdir."""
        self.stop_keepalives()
        if self._uas is not None:
            _stop(self._uas)
            self._uas = None
        self.stop_streams()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def contact(self) -> str:
        """The SIP URI the REGISTER's Contact names (where the platform sends requests)."""
        return f"sip:{self.device_id}@{HOST}:{self.uas_port}"

    # -- UAC: REGISTER, Keepalive, Alarm --

    def register(
        self, *, expires: int = 3600, keepalives: bool = True, timeout: float = 15.0
    ) -> RegisterResult:
        """REGISTER (digest as the platform asks); on 200 start the Keepalive loop unless
        ``keepalives`` is false or ``keepalive_s`` is 0."""
        self.stop_keepalives()
        result = self._register(expires, timeout)
        if result.ok and expires > 0 and keepalives and self.keepalive_s > 0:
            self.start_keepalives()
        return result

    def unregister(self, timeout: float = 15.0) -> RegisterResult:
        """Stop the Keepalives and REGISTER with Expires: 0."""
        self.stop_keepalives()
        return self._register(0, timeout)

    def start_keepalives(self) -> None:
        """Send a Keepalive now and then every ``keepalive_s`` (SN continues)."""
        if self._keepalive is not None:
            return
        self._keepalive, self.uac_port = self._spawn_bound("keepalive", self.uac_port)

    def stop_keepalives(self) -> None:
        """End the Keepalive loop at once (the UAS keeps answering)."""
        run, self._keepalive = self._keepalive, None
        if run is None:
            return
        _stop(run)
        sent = [sn for sn, _ in _keepalive_lines(run.log)]
        # a Keepalive sent just before the stop may not be logged: leave a gap in SN
        self._sn_base = max([self._sn_base, *sent]) + 10

    def keepalives(self) -> list[tuple[int, str]]:
        """Every Keepalive answered or timed out so far: (SN, status code or "timeout")."""
        lines: list[tuple[int, str]] = []
        for log in sorted(self.workdir.glob("keepalive-*.log"), key=_run_number):
            lines.extend(_keepalive_lines(log))
        return lines

    def send_alarm(
        self,
        channel_id: str,
        *,
        description: str = "移动侦测报警",
        alarm_type: int = 2,
        priority: int = 1,
        method: int = 2,
        alarm_time: str = "2026-12-02T10:00:00",
        longitude: float | None = None,
        latitude: float | None = None,
    ) -> str:
        """Send an Alarm Notify for ``channel_id``; returns the platform's status code
        ("200") or "timeout". Position: the channel's, unless given."""
        channel = next((c for c in self.channels if c.channel_id == channel_id), None)
        lon = longitude if longitude is not None else (channel.longitude if channel else 0.0)
        lat = latitude if latitude is not None else (channel.latitude if channel else 0.0)
        body = _xml_body(
            "Notify",
            [
                ("CmdType", "Alarm"),
                ("SN", str(self._next_sn())),
                ("DeviceID", channel_id),
                ("AlarmPriority", str(priority)),
                ("AlarmMethod", str(method)),
                ("AlarmTime", alarm_time),
                ("AlarmDescription", description),
                ("Longitude", f"{lon:.6f}"),
                ("Latitude", f"{lat:.6f}"),
            ],
            extra=f"<Info>\r\n<AlarmType>{alarm_type}</AlarmType>\r\n</Info>\r\n",
        )
        return self.send_message(body)

    def send_message(self, body: str, timeout: float = 10.0) -> str:
        """Send one MANSCDP MESSAGE with ``body`` (encoded GB2312) from a port of its own;
        returns the status code of the answer, "timeout", or "" when SIPp failed."""
        name = self._run_name("message")
        command = [
            *self._uac_command(name, 0),
            *("-m", "1"),
            *self._keys(body=body.encode("gb2312")),
        ]
        run = self._spawn(name, command)
        _wait(run, timeout)
        for words in _log_lines(run.log, "MESSAGE"):
            return words.get("code", "")
        return ""

    # -- UAS: what the platform asked --

    def events(self, kind: str | None = None) -> list[DeviceEvent]:
        """What the UAS received, oldest first (only ``kind`` if given): the platform's
        requests, and ANSWER for its 200 to a Response MESSAGE."""
        path = self.workdir / "uas.log"
        found = []
        for line in _read_lines(path):
            word, _, rest = line.partition(" ")
            fields = dict(item.split("=", 1) for item in rest.split() if "=" in item)
            if (kind is None or word == kind) and "call" in fields:
                found.append(DeviceEvent(word, int(fields.pop("call")), fields))
        return found

    def count(self, kind: str) -> int:
        """How many requests of ``kind`` (INVITE, BYE, MESSAGE, ...) the UAS received."""
        return len(self.events(kind))

    def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[DeviceEvent]:
        """Wait until the UAS has received ``count`` requests of ``kind``; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(kind)
            if len(found) >= count or time.monotonic() > deadline:
                if len(found) < count:
                    raise AssertionError(f"{len(found)} {kind} after {timeout:g} s, not {count}")
                return found
            time.sleep(0.05)

    # -- media --

    @property
    def mute(self) -> bool:
        """True: INVITEs are answered and acknowledged, and no RTP is ever sent."""
        return (self.workdir / "mute").exists()

    @mute.setter
    def mute(self, value: bool) -> None:
        flag = self.workdir / "mute"
        if value:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def senders(self) -> dict[int, dict[str, object]]:
        """JSON summaries of the RTP senders that have ended, by call number."""
        summaries: dict[int, dict[str, object]] = {}
        for path in (self.workdir / "senders").glob("*.json"):
            with contextlib.suppress(ValueError, OSError):
                summaries[int(path.stem)] = json.loads(path.read_text())
        return summaries

    def running_senders(self) -> list[int]:
        """Call numbers whose RTP sender is running now."""
        return sorted(int(p.stem) for p in (self.workdir / "senders").glob("*.pid"))

    def stop_streams(self) -> None:
        """Stop every RTP sender without a BYE (the camera's encoder died)."""
        for pid_file in (self.workdir / "senders").glob("*.pid"):
            pid_file.with_suffix(".stop").touch()
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)

    # -- internals --

    def _register(self, expires: int, timeout: float) -> RegisterResult:
        for _ in range(3):
            run = self._register_once(expires, timeout)
            if run.process.returncode != _SIPP_BIND_FAILED:
                break
            self.uac_port = _free_port(self.transport)  # taken meanwhile: take another
        for words in _log_lines(run.log, "RESULT"):
            code = int(words["code"]) if words["code"].isdigit() else None
            detail = "" if code else "no final answer within 5 s"
            return RegisterResult(code, words["challenged"] == "yes", words.get("qop", ""), detail)
        return RegisterResult(None, False, "", self._stderr_tail(run.log.stem))

    def _register_once(self, expires: int, timeout: float) -> _Run:
        cseq, self._cseq = self._cseq, self._cseq + 2
        name = self._run_name("register")
        command = [
            *self._uac_command(name, self.uac_port),
            *("-m", "1", "-au", self.device_id, "-ap", self.password),
            # SIPp puts "sip:" in front of -auth_uri itself (3.6.1): without it here.
            *("-auth_uri", f"{self.platform_id}@{self.domain}", "-cid_str", self._call_id),
            *self._keys(expires=str(expires), cseq1=str(cseq), cseq2=str(cseq + 1)),
        ]
        run = self._spawn(name, command)
        _wait(run, timeout)
        return run

    def _spawn_bound(
        self, scenario: str, port: int | None, timeout: float = START_TIMEOUT_S
    ) -> tuple[_Run, int]:
        """Start the UAS or the Keepalive run on ``port`` (or a free one) and wait until it
        is bound; if the port was taken meanwhile, start again on another."""
        deadline = time.monotonic() + timeout
        while True:
            port = port or _free_port(self.transport)
            name = "uas" if scenario == "uas" else self._run_name(scenario)
            run = self._spawn(name, self._bound_command(name, port))
            if _wait_bound(port, self.transport, run.process, deadline):
                return run, port
            _stop(run)
            if time.monotonic() > deadline:
                raise RuntimeError(f"SIPp {name} did not start:\n{self._stderr_tail(name)}")
            port = None

    def _bound_command(self, name: str, port: int) -> list[str | bytes]:
        if name == "uas":
            return self._uas_command(name, port)
        period_ms = max(1, round(self.keepalive_s * 1000))
        return [
            *self._uac_command(name, port),
            *("-r", "1", "-rp", str(period_ms), "-l", "10"),
            *self._keys(sn_base=str(self._sn_base)),
        ]

    def _next_sn(self) -> int:
        self._notify_sn += 1
        return self._notify_sn

    def _uas_command(self, name: str, port: int) -> list[str | bytes]:
        items = [c.catalog_item(self.device_id).encode("gb2312") for c in self.channels]
        half = math.ceil(len(items) / 2)
        first, second = items[:half], items[half:]
        return [
            *self._common(name, port),
            "-aa",
            *self._keys(
                hook=str(HERE / "send.sh"),
                catalog_sum=str(len(items)),
                catalog_parts="2" if second else "1",
                catalog_num1=str(len(first)),
                catalog_items1=b"\r\n".join(first),
                catalog_num2=str(len(second)),
                catalog_items2=b"\r\n".join(second),
                device_name=self.info.name.encode("gb2312"),
                manufacturer=self.info.manufacturer.encode("gb2312"),
                model=self.info.model.encode("gb2312"),
                firmware=self.info.firmware.encode("gb2312"),
                channel_count=str(len(self.channels)),
            ),
        ]

    def _run_name(self, scenario: str) -> str:
        self._runs += 1
        return f"{scenario}-{self._runs}"

    def _uac_command(self, name: str, port: int) -> list[str | bytes]:
        host, platform_port = self.platform
        return [*self._common(name, port), f"{host}:{platform_port}"]

    def _common(self, name: str, port: int) -> list[str | bytes]:
        """SIPp's options for run ``name`` ("SCENARIO-N", or "uas")."""
        scenario = name.partition("-")[0]
        command: list[str | bytes] = [SIPP, "-sf", str(HERE / f"{scenario}.xml")]
        command += ["-i", HOST, "-t", "t1" if self.transport == "tcp" else "u1"]
        command += ["-ci", HOST, "-nostdin", "-trace_logs", "-trace_err"]
        command += ["-log_file", str(self.workdir / f"{name}.log")]
        command += ["-error_file", str(self.workdir / f"{name}-errors.log")]
        if port:
            command += ["-p", str(port)]
        return command

    def _keys(self, **values: str | bytes) -> list[str | bytes]:
        base: dict[str, str | bytes] = {
            "device_id": self.device_id,
            "platform_id": self.platform_id,
            "domain": self.domain,
            "user_agent": USER_AGENT,
            "contact_port": str(self.uas_port),
        }
        command: list[str | bytes] = []
        for key, value in {**base, **values}.items():
            command += ["-key", key, value]
        return command

    def _spawn(self, name: str, command: list[str | bytes]) -> _Run:
        log = self.workdir / f"{name}.log"
        log.unlink(missing_ok=True)
        stderr = log.with_suffix(".stderr").open("wb")
        env = {
            **os.environ,
            "GB_PEER_DIR": str(self.workdir),
            "GB_PEER_PYTHON": sys.executable,
            "GB_PEER_LOOP": "1" if self._loop_media else "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # SIPp's statistics screens
            stderr=stderr,
            cwd=self.workdir,
            env=env,
            preexec_fn=_die_with_parent,
        )
        return _Run(process, log, stderr)

    def _link_channel_files(self) -> None:
        for channel in self.channels:
            link = self.workdir / "channels" / f"{channel.channel_id}.ps"
            link.unlink(missing_ok=True)
            if channel.ps_file is not None:
                link.symlink_to(Path(channel.ps_file).resolve())

    def _stderr_tail(self, name: str) -> str:
        texts = []
        for suffix in (".stderr", "-errors.log"):
            path = self.workdir / f"{name}{suffix}"
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace")[-1500:])
        return "\n".join(texts)


def _xml_body(root: str, items: Iterable[tuple[str, str]], extra: str = "") -> str:
    inner = "".join(f"<{key}>{escape(value)}</{key}>\r\n" for key, value in items)
    return f'<?xml version="1.0" encoding="GB2312"?>\r\n<{root}>\r\n{inner}{extra}</{root}>'


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _log_lines(path: Path, word: str) -> Iterator[dict[str, str]]:
    for line in _read_lines(path):
        first, _, rest = line.partition(" ")
        if first == word:
            yield dict(item.split("=", 1) for item in rest.split() if "=" in item)


def _keepalive_lines(path: Path) -> list[tuple[int, str]]:
    return [(int(w["sn"]), w["code"]) for w in _log_lines(path, "KEEPALIVE") if "sn" in w]


def _run_number(path: Path) -> int:
    return int(path.stem.rpartition("-")[2])


def _wait(run: _Run, timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        run.process.wait(timeout)
    _stop(run)


def _stop(run: _Run) -> None:
    if run.process.poll() is None:
        run.process.terminate()
        try:
            run.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()
    run.stderr.close()


def _free_port(transport: Transport) -> int:
    """A port free for UDP (and TCP, for ``tcp``) on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            if transport == "udp":
                return port
            with socket.socket() as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def _wait_bound(
    port: int, transport: Transport, process: subprocess.Popen[bytes], deadline: float
) -> bool:
    """Wait until something listens on ``port`` (read from /proc, no probing packets);
    False when the process died first (the port was taken meanwhile) or at the deadline."""
    # states: UDP 07 (unconnected); TCP 0A (listening) or 01 (a client's connection)
    tcp = transport == "tcp"
    table, states = ("/proc/net/tcp", {"0A", "01"}) if tcp else ("/proc/net/udp", {"07"})
    wanted = f"0100007F:{port:04X}"
    while time.monotonic() < deadline and process.poll() is None:
        rows = [line.split() for line in Path(table).read_text().splitlines()[1:]]
        if any(row[1] == wanted and row[3] in states for row in rows):
            return True
        time.sleep(0.02)
    return False


def _die_with_parent() -> None:
    # Linux PR_SET_PDEATHSIG: if pytest is killed, SIPp goes too (and the senders, which
    # watch the UAS's PID).
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)


@pytest.fixture
def gb_device(tmp_path: Path) -> Iterator[Callable[..., GbDevice]]:
    """A factory of started :class:`GbDevice` (arguments as its constructor's, without
    ``workdir``); every device it made is closed at teardown."""
    devices: list[GbDevice] = []

    def make(device_id: str, password: str, **kwargs: object) -> GbDevice:
        workdir = tmp_path / f"gb28181-{device_id}-{len(devices)}"
        device = GbDevice(device_id, password, workdir=workdir, **kwargs)  # type: ignore[arg-type]
        devices.append(device)
        return device.start()

    yield make
    for device in devices:
        device.close()
