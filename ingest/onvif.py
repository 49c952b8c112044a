"""ONVIF cameras: probe a device by address and password, pick its streams, PTZ, snapshots.

The adapter edge for onvif-zeep-async (zeep over aiohttp) and httpx. Everything is async;
every library error leaves this module as an :class:`OnvifError` whose message says what
to fix, and never contains the password.

A probe is one bounded conversation with the device:

1. an unauthenticated ``GetSystemDateAndTime`` over plain HTTP (ONVIF requires it to be
   open) tells a closed port, a host that does not answer and a web server that is no
   ONVIF device apart before any password is sent;
2. the device's services (``GetServices``, clock skew compensated: WS-Security digests
   carry a timestamp that cameras with a wrong clock reject). The device names their
   addresses (XAddrs), and may name any host: each is judged by the egress policy before
   the first request to it (:class:`~ingest.egress.EgressRefused`, a 422);
3. ``GetDeviceInformation``, then the media profiles with the RTSP and snapshot URI of each.

:func:`choose_streams` then maps the profiles to the service's two roles: the
highest-resolution H.264 profile is recorded, the smallest one is analysed (Frigate's
``record``/``detect`` roles), unless the integrator names the profiles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import zeep.exceptions

from ingest.egress import EgressPolicy, EgressRefused, Purpose
from ingest.errors import IngestError
from ingest.redact import redact

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "NotOnvif",
    "OnvifAuthError",
    "OnvifDevice",
    "OnvifError",
    "OnvifNoMedia",
    "OnvifTimeout",
    "OnvifUnreachable",
    "Profile",
    "choose_profiles",
    "choose_streams",
    "fetch_snapshot",
    "probe",
    "ptz_move",
    "ptz_preset",
    "ptz_stop",
    "strip_userinfo",
    "warm_up",
    "with_credentials",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
H264 = "H264"
_SOAP_NS = ("http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/")
_MEDIA_NS = "http://www.onvif.org/ver10/media/wsdl"
_PTZ_NS = "http://www.onvif.org/ver20/ptz/wsdl"
_DATE_PROBE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
    '<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
    "</s:Body></s:Envelope>"
)
_DATE_ACTION = "http://www.onvif.org/ver10/device/wsdl/GetSystemDateAndTime"
# Words cameras put in the fault of a request with a wrong UsernameToken (ONVIF Core
# 5.12: ter:NotAuthorized; firmwares vary in the reason text).
_AUTH_WORDS = re.compile(
    r"not\s*authori[sz]ed|unauthori[sz]ed|authenticat|authority|password", re.I
)


class OnvifError(IngestError):
    """An ONVIF device could not be used; ``str(err)`` says why, without credentials."""


class OnvifUnreachable(OnvifError):
    """Nothing answers at the address: connection refused, no route, unknown host."""


class OnvifAuthError(OnvifError, PermissionError):
    """The device rejected the username or password (WS-Security or HTTP 401)."""

    permanent: ClassVar[bool] = True


class OnvifNoMedia(OnvifError):
    """The device speaks ONVIF but offers no media service or no video stream."""

    permanent: ClassVar[bool] = True


class OnvifTimeout(OnvifError):
    """The device accepted the connection but did not answer in time."""


class NotOnvif(OnvifError):
    """Something answers at the address, but it is not an ONVIF device service."""

    permanent: ClassVar[bool] = True


@dataclass(frozen=True)
class Profile:
    """One media profile: an encoder configuration and where to get its stream."""

    token: str
    name: str
    encoding: str
    width: int
    height: int
    fps: float | None
    stream_uri: str | None
    snapshot_uri: str | None

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class OnvifDevice:
    """What a probe found on a device."""

    manufacturer: str
    model: str
    firmware: str
    serial: str
    profiles: tuple[Profile, ...]
    ptz: bool
    hardware_id: str = ""

    @property
    def snapshot_uri(self) -> str | None:
        """The first snapshot URI of any profile (cameras give one per video source)."""
        return next((p.snapshot_uri for p in self.profiles if p.snapshot_uri), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for storage; URIs without any credentials the device put in them."""
        data = asdict(self)
        data["profiles"] = [asdict(_without_userinfo(p)) for p in self.profiles]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OnvifDevice:
        """The inverse of :meth:`to_dict`."""
        profiles = tuple(Profile(**p) for p in data.get("profiles", []))
        fields = {k: data[k] for k in ("manufacturer", "model", "firmware", "serial", "ptz")}
        return cls(profiles=profiles, hardware_id=data.get("hardware_id", ""), **fields)


# --- choosing streams (pure) -------------------------------------------------------------


def choose_profiles(
    device: OnvifDevice, profile_token: str | None = None, sub_profile_token: str | None = None
) -> tuple[Profile, Profile | None]:
    """The recorded (main) and analysed (sub) profiles of ``device``.

    Main: ``profile_token`` when given, else the highest-resolution H.264 profile (any
    encoding when there is no H.264). Sub: ``sub_profile_token`` when given, else the
    smallest profile with another stream, when it is smaller than the main one.
    """
    streams = [p for p in device.profiles if p.stream_uri]
    if not streams:
        raise OnvifNoMedia("the camera has no media profile with an RTSP stream")
    if profile_token is not None:
        main = _named(streams, profile_token)
    else:
        main = max(streams, key=lambda p: (p.encoding == H264, p.area, p.fps or 0.0))
    if sub_profile_token is not None:
        return main, _named(streams, sub_profile_token)
    others = [p for p in streams if p.stream_uri != main.stream_uri and p.area < main.area]
    sub = min(others, key=lambda p: (p.encoding != H264, p.area), default=None)
    return main, sub


def choose_streams(device: OnvifDevice, profile_token: str | None = None) -> tuple[str, str | None]:
    """The RTSP URIs (without credentials) of :func:`choose_profiles`: ``(main, sub | None)``."""
    main, sub = choose_profiles(device, profile_token)
    assert main.stream_uri is not None  # choose_profiles only picks profiles with a stream
    return main.stream_uri, sub.stream_uri if sub else None


def _named(profiles: Sequence[Profile], token: str) -> Profile:
    for profile in profiles:
        if profile.token == token:
            return profile
    have = ", ".join(p.token for p in profiles)
    raise OnvifError(f"the camera has no profile '{token}' with a stream; it has: {have}")


def with_credentials(uri: str, username: str, password: str) -> str:
    """``uri`` with ``username:password@`` (percent-encoded), replacing any userinfo in it.

    >>> with_credentials("rtsp://10.0.0.5:554/s1", "admin", "p@ss")
    'rtsp://admin:p%40ss@10.0.0.5:554/s1'
    """
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    if not username:
        return urlunsplit(parts._replace(netloc=host))
    userinfo = quote(username, safe="") + ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def strip_userinfo(uri: str) -> str:
    """``uri`` without ``user:password@`` (some cameras put their credentials in URIs)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _without_userinfo(profile: Profile) -> Profile:
    return replace(
        profile,
        stream_uri=strip_userinfo(profile.stream_uri) if profile.stream_uri else None,
        snapshot_uri=strip_userinfo(profile.snapshot_uri) if profile.snapshot_uri else None,
    )


# --- probing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a device is and how to log in; ``timeout_s`` bounds each whole operation."""

    host: str
    port: int
    username: str
    password: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    #: Judges the service addresses the device names; None: go wherever it says.
    egress: EgressPolicy | None = field(default=None, compare=False)

    @property
    def where(self) -> str:
        bare_ipv6 = ":" in self.host and not self.host.startswith("[")
        host = f"[{self.host}]" if bare_ipv6 else self.host
        return f"{host}:{self.port}"


async def probe(
    host: str,
    port: int,
    username: str,
    password: str,
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    egress: EgressPolicy | None = None,
) -> OnvifDevice:
    """Read the identity, profiles, stream and snapshot URIs and PTZ support of a device.

    Raises an :class:`OnvifError` subclass: :class:`OnvifUnreachable`, :class:`OnvifTimeout`,
    :class:`NotOnvif`, :class:`OnvifAuthError`, :class:`OnvifNoMedia`; or
    :class:`~ingest.egress.EgressRefused` when ``egress`` refuses a service address.
    """
    target = Target(host, port, username, password, timeout, egress)
    started = time.monotonic()
    async with _bounded(target, "probe"):
        await _preflight(target)
        async with _camera(target) as cam:
            device = await _read_device(cam, target)
    log.info(
        "ONVIF %s: %s %s, %d profiles, ptz=%s (%.2f s)",
        target.where,
        device.manufacturer,
        device.model,
        len(device.profiles),
        device.ptz,
        time.monotonic() - started,
    )
    return device


@asynccontextmanager
async def _bounded(target: Target, what: str) -> AsyncIterator[None]:
    """Bound an operation by the target's timeout and translate library errors."""
    try:
        async with asyncio.timeout(target.timeout_s):
            yield
    except (OnvifError, EgressRefused):
        raise
    except Exception as err:
        raise _translate(err, target, what) from err


async def _preflight(target: Target) -> None:
    """Tell "nothing there" and "not ONVIF" apart before sending any password."""
    url = f"http://{target.where}/onvif/device_service"
    headers = {"Content-Type": f'application/soap+xml; charset=utf-8; action="{_DATE_ACTION}"'}
    async with httpx.AsyncClient(timeout=target.timeout_s, trust_env=False) as client:
        try:
            response = await client.post(url, content=_DATE_PROBE, headers=headers)
        except httpx.TimeoutException:
            raise
        except (httpx.ConnectError, httpx.NetworkError) as err:
            raise OnvifUnreachable(_unreachable(target, err)) from err
        except httpx.HTTPError as err:
            raise NotOnvif(
                f"{target.where} does not speak HTTP: it is not an ONVIF device service"
            ) from err
    if not _is_soap(response.content) and response.status_code != 401:
        raise NotOnvif(
            f"{target.where} answers HTTP but is not an ONVIF device: POST "
            f"/onvif/device_service gave HTTP {response.status_code} "
            f"({response.headers.get('content-type', 'no content type')}) instead of SOAP"
        )


def _is_soap(content: bytes) -> bool:
    try:
        root = ET.fromstring(content)
    except ET.ParseError:
        return False
    return any(root.tag == f"{{{ns}}}Envelope" for ns in _SOAP_NS)


@asynccontextmanager
async def _camera(target: Target) -> AsyncIterator[Any]:
    """An ``onvif.ONVIFCamera`` with its services' addresses read, closed afterwards."""
    # Imported here: importing onvif.client calls logging.basicConfig(), which must not run
    # before the service configured its own logging.
    from onvif import ONVIFCamera

    cam = ONVIFCamera(
        target.host,
        target.port,
        target.username,
        target.password,
        no_cache=True,
        adjust_time=True,
    )
    try:
        await cam.update_xaddrs()
        await _judge_xaddrs(cam.xaddrs, target)
        yield cam
    finally:
        await cam.close()


async def _judge_xaddrs(xaddrs: dict[str, str], target: Target) -> None:
    """Refuse the device's service addresses the egress policy refuses: a device (or
    whoever answers at its address) could otherwise aim our requests, with the camera's
    password, at a metadata service or anywhere else the policy keeps us from."""
    if target.egress is None:
        return
    for namespace, xaddr in sorted(xaddrs.items()):
        service = namespace.rstrip("/").split("/")[-2] if "/" in namespace else namespace
        await target.egress.check_url_async(f"onvif.xaddrs.{service}", xaddr, Purpose.CAMERA)


async def _read_device(cam: Any, target: Target) -> OnvifDevice:
    devicemgmt = await cam.create_devicemgmt_service()
    info = await devicemgmt.GetDeviceInformation()
    if _MEDIA_NS not in cam.xaddrs:
        raise OnvifNoMedia(
            f"the ONVIF device at {target.where} ({_text(info, 'Manufacturer')} "
            f"{_text(info, 'Model')}) has no media service: it offers no video stream"
        )
    media = await cam.create_media_service()
    raw_profiles = await media.GetProfiles() or []
    profiles = [await _profile(media, raw) for raw in raw_profiles if _video(raw) is not None]
    if not profiles:
        raise OnvifNoMedia(f"the ONVIF device at {target.where} has no video profile")
    has_ptz = _PTZ_NS in cam.xaddrs and any(
        getattr(raw, "PTZConfiguration", None) is not None for raw in raw_profiles
    )
    return OnvifDevice(
        manufacturer=_text(info, "Manufacturer"),
        model=_text(info, "Model"),
        firmware=_text(info, "FirmwareVersion"),
        serial=_text(info, "SerialNumber"),
        hardware_id=_text(info, "HardwareId"),
        profiles=tuple(profiles),
        ptz=has_ptz,
    )


def _text(obj: Any, name: str) -> str:
    value = getattr(obj, name, None)
    return "" if value is None else str(value).strip()


def _video(raw: Any) -> Any:
    return getattr(raw, "VideoEncoderConfiguration", None)


async def _profile(media: Any, raw: Any) -> Profile:
    encoder = _video(raw)
    resolution = getattr(encoder, "Resolution", None)
    rate = getattr(getattr(encoder, "RateControl", None), "FrameRateLimit", None)
    return Profile(
        token=str(raw.token),
        name=_text(raw, "Name"),
        encoding=_text(encoder, "Encoding").upper(),
        width=int(getattr(resolution, "Width", 0) or 0),
        height=int(getattr(resolution, "Height", 0) or 0),
        fps=float(rate) if rate else None,
        stream_uri=await _stream_uri(media, raw.token),
        snapshot_uri=await _snapshot_uri(media, raw.token),
    )


async def _stream_uri(media: Any, token: str) -> str | None:
    setup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
    try:
        answer = await media.GetStreamUri({"StreamSetup": setup, "ProfileToken": token})
    except zeep.exceptions.Fault as fault:
        if _is_auth_fault(fault):
            raise
        log.info("profile %s has no RTSP stream: %s", token, fault.message)
        return None
    uri = getattr(answer, "Uri", None)
    return str(uri) if uri else None


async def _snapshot_uri(media: Any, token: str) -> str | None:
    """Optional in ONVIF Profile S: a fault means "no snapshots", not a broken device."""
    try:
        answer = await media.GetSnapshotUri({"ProfileToken": token})
    except zeep.exceptions.Fault as fault:
        if _is_auth_fault(fault):
            raise
        return None
    uri = getattr(answer, "Uri", None)
    return str(uri) if uri else None


async def warm_up() -> None:
    """Parse the device, media and PTZ WSDLs now (about 2 s of CPU, once per process).

    Without it the first probe of a process pays for it. Sends nothing: the services are
    built for a placeholder address and never called.
    """
    from onvif import ONVIFCamera

    started = time.monotonic()
    cam = ONVIFCamera("127.0.0.1", 9, "", "", no_cache=True)
    cam.xaddrs = {_MEDIA_NS: "http://127.0.0.1:9/", _PTZ_NS: "http://127.0.0.1:9/"}
    try:
        await cam.create_devicemgmt_service()
        await cam.create_media_service()
        await cam.create_ptz_service()
    finally:
        await cam.close()
    log.debug("ONVIF WSDLs loaded in %.2f s", time.monotonic() - started)


# --- error translation --------------------------------------------------------------------


def _translate(err: BaseException, target: Target, what: str) -> OnvifError:
    """The :class:`OnvifError` an integrator should see for a library error."""
    err = _root(err)
    if isinstance(err, TimeoutError | httpx.TimeoutException):
        return OnvifTimeout(
            f"the device at {target.where} did not answer within {target.timeout_s:g} s"
        )
    if isinstance(err, OSError):  # aiohttp's ClientConnectorError is one too
        return OnvifUnreachable(_unreachable(target, err))
    if type(err).__name__ == "ONVIFAuthError":
        return _auth_error(target)
    if isinstance(err, zeep.exceptions.Fault):
        if _is_auth_fault(err):
            return _auth_error(target)
        return OnvifError(f"the device at {target.where} refused the {what}: {err.message}")
    if isinstance(err, zeep.exceptions.TransportError):
        if err.status_code in (401, 403):
            return _auth_error(target)
        return OnvifError(f"the device at {target.where} answered HTTP {err.status_code}")
    detail = redact(f"{type(err).__name__}: {err}", [target.password])
    return OnvifError(f"ONVIF {what} of {target.where} failed: {detail}")


def _root(err: BaseException) -> BaseException:
    """The library error inside onvif's wrapper (``ONVIFError`` keeps the cause)."""
    seen = 0
    while type(err).__module__.startswith("onvif") and err.__cause__ is not None and seen < 5:
        err, seen = err.__cause__, seen + 1
    if type(err).__name__ == "ONVIFTimeoutError":
        return TimeoutError(str(err))
    return err


def _is_auth_fault(fault: zeep.exceptions.Fault) -> bool:
    codes = [str(c) for c in (fault.subcodes or [])] + [str(fault.code or "")]
    return any("NotAuthorized" in c for c in codes) or bool(
        _AUTH_WORDS.search(str(fault.message or ""))
    )


def _auth_error(target: Target) -> OnvifAuthError:
    return OnvifAuthError(
        f"the device at {target.where} rejected the username or password "
        f"(WS-Security): check the credentials of user '{target.username}'"
    )


def _unreachable(target: Target, err: BaseException) -> str:
    return f"cannot connect to {target.where}: {_os_reason(err)}"


def _os_reason(err: BaseException) -> str:
    """The operating system's words ("Connection refused") from an error's chain."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno:
            # asyncio puts "Connect call failed (...)" in strerror; errno has the reason.
            words = os.strerror(seen.errno) if seen.errno > 0 else seen.strerror
            return str(words or seen).lower()
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return str(err) or type(err).__name__


# --- PTZ ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Velocity:
    """Continuous-move speeds in ONVIF's generic space: -1..1 (zoom: -1 out .. 1 in)."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0


async def ptz_move(
    target: Target, profile_token: str, velocity: Velocity, duration_s: float
) -> None:
    """Start a continuous move that the device ends by itself after ``duration_s``.

    Many cameras ignore the ONVIF ``Timeout`` of a continuous move, so callers should also
    :func:`ptz_stop` after the duration.
    """
    request = {
        "ProfileToken": profile_token,
        "Velocity": {
            "PanTilt": {"x": velocity.pan, "y": velocity.tilt},
            "Zoom": {"x": velocity.zoom},
        },
        "Timeout": timedelta(seconds=duration_s),
    }
    await _ptz_call(target, "ContinuousMove", request)


async def ptz_stop(target: Target, profile_token: str) -> None:
    """Stop any pan, tilt and zoom movement."""
    await _ptz_call(target, "Stop", {"ProfileToken": profile_token, "PanTilt": True, "Zoom": True})


async def ptz_preset(target: Target, profile_token: str, preset_token: str) -> None:
    """Go to a preset position stored on the camera."""
    await _ptz_call(
        target, "GotoPreset", {"ProfileToken": profile_token, "PresetToken": preset_token}
    )


async def _ptz_call(target: Target, operation: str, request: dict[str, Any]) -> None:
    async with _bounded(target, f"PTZ {operation}"), _camera(target) as cam:
        if _PTZ_NS not in cam.xaddrs:
            raise OnvifError(f"the device at {target.where} has no PTZ service")
        service = await cam.create_ptz_service()
        await getattr(service, operation)(request)


# --- snapshots ----------------------------------------------------------------------------


async def fetch_snapshot(
    uri: str, username: str, password: str, timeout: float = DEFAULT_TIMEOUT_S
) -> bytes:
    """The JPEG at an ONVIF snapshot URI, with HTTP digest or basic auth as the camera asks.

    Digest is tried first (it never sends the password); basic only when the camera's
    challenge asks for it.
    """
    plain = strip_userinfo(uri)
    parts = urlsplit(plain)
    target = Target(parts.hostname or "", parts.port or 80, username, password, timeout)
    async with (
        _bounded(target, "snapshot"),
        httpx.AsyncClient(timeout=timeout, trust_env=False) as client,
    ):
        response = await _get_with_auth(client, plain, username, password, target)
    kind = response.headers.get("content-type", "")
    if not response.content.startswith(b"\xff\xd8") and not kind.startswith("image/"):
        raise OnvifError(f"the snapshot URI of {target.where} did not return an image ({kind})")
    return response.content


async def _get_with_auth(
    client: httpx.AsyncClient, uri: str, username: str, password: str, target: Target
) -> httpx.Response:
    try:
        response = await client.get(uri, auth=httpx.DigestAuth(username, password))
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("basic"):
            response = await client.get(uri, auth=httpx.BasicAuth(username, password))
    except httpx.TimeoutException:
        raise
    except (httpx.ConnectError, httpx.NetworkError) as err:
        raise OnvifUnreachable(_unreachable(target, err)) from err
    if response.status_code in (401, 403):
        raise OnvifAuthError(
            f"the snapshot URI of {target.where} rejected the username or password"
        )
    if response.status_code != 200:
        raise OnvifError(f"the snapshot URI of {target.where} answered HTTP {response.status_code}")
    return response
