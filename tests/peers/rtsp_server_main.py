"""A real RTSP server for tests: GStreamer's gst-rtsp-server, one mount per simulated camera.

Run with Debian's ``/usr/bin/python3`` (python3-gi exists only there, not in the venv)::

    /usr/bin/python3 tests/peers/rtsp_server_main.py CONFIG.json

CONFIG (JSON)::

    {"port": 0,                      # 0: let the kernel choose; the ready line says which
     "mounts": {
       "/cam1": {"kind": "testsrc", "width": 640, "height": 360, "fps": 15, "keyint": 15,
                 "user": "admin", "password": "secret"},      # user/password: Basic auth
       "/walk": {"kind": "file", "path": "vtest.avi", "fps": 10, "loop": true},
       "/h264": {"kind": "h264file", "path": "clip.mp4", "loop": true},
       "/raw": {"kind": "launch", "launch": "( videotestsrc ! x265enc ! rtph265pay name=pay0 )"}}}

Kinds:
- ``testsrc``: live ``videotestsrc`` with a clock overlay, encoded with x264 (baseline).
  Options: ``"profile"`` (``baseline`` by default, ``main``, ``high``: the SPS says that
  profile) and ``"parameter_sets"``: ``"in-band"`` (default: SPS/PPS before every IDR)
  or ``"sdp"`` (SPS/PPS only in the SDP's ``sprop-parameter-sets``, never in the RTP
  stream, like cameras that send them only at SETUP).
- ``file``: any file GStreamer can decode, re-encoded to H.264 at ``fps`` (default 10).
  With ``loop`` (default true) the file plays continuously like a live camera: a
  background pipeline decodes it in real time, seeks back to 0 on EOS and feeds an
  ``intervideosink``; each RTSP media reads the latest picture with ``intervideosrc``.
  Without ``loop`` every client gets the file once from its start, then EOS.
- ``h264file``: an H.264 file (MP4/MKV/Annex B) served without re-encoding. Its access
  units are read into memory once and pushed through an ``appsrc`` at ``fps`` (default:
  the file's own rate), looping with ever-increasing timestamps. ``"codec": "h265"``
  serves an H.265 file the same way.
- ``launch``: a raw gst-rtsp-server launch line (payloaders named ``pay0``, ``pay1``…), for
  cameras the other kinds cannot describe (H.265, audio only, corrupted payloads).

Prints ``READY port=<port>`` on stdout once bound, then runs until killed. Binds 127.0.0.1
only. Each client gets its own pipeline unless the mount says ``"shared": true``: shared
media in gst-rtsp-server 1.22 aborts the whole server (``gst_rtsp_media_get_rates:
assertion failed``) when clients connect and disconnect quickly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import sys
from fractions import Fraction
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

ANON_ROLE = "anonymous"
PR_SET_PDEATHSIG = 1
_keep: list[Any] = []  # background pipelines must outlive main()'s locals


def encoder(
    fps: float,
    keyint: int,
    bitrate_kbps: int,
    profile: str = "baseline",
    parameter_sets: str = "in-band",
) -> str:
    """The H.264 encoder chain every re-encoding mount shares.

    x264's ``ultrafast`` preset turns CABAC and the 8x8 transform off, which makes any
    stream Constrained Baseline whatever the caps ask: Main and High use ``superfast``.
    ``parameter_sets="sdp"``: AVC output whose SPS/PPS go to the caps' codec_data (hence
    the SDP's sprop-parameter-sets) and, with ``repeat-headers=0`` and the payloader's
    ``config-interval=0``, never into the stream.
    """
    if parameter_sets not in ("in-band", "sdp"):
        raise SystemExit(f"parameter_sets must be 'in-band' or 'sdp', not {parameter_sets!r}")
    preset = "ultrafast" if profile == "baseline" else "superfast"
    in_band = parameter_sets == "in-band"
    options = "" if in_band else " option-string=repeat-headers=0"
    stream_format = "" if in_band else ",stream-format=avc"
    return (
        f"videoconvert ! video/x-raw,format=I420 ! x264enc tune=zerolatency "
        f"speed-preset={preset} key-int-max={keyint} bitrate={bitrate_kbps}{options} "
        f"! video/x-h264,profile={profile}{stream_format} "
        f"! rtph264pay name=pay0 pt=96 config-interval={1 if in_band else 0}"
    )


def testsrc_launch(m: dict[str, Any]) -> str:
    """Launch line for a live test pattern camera."""
    w, h, fps = int(m.get("width", 640)), int(m.get("height", 360)), m.get("fps", 15)
    rate = Fraction(fps).limit_denominator(1001)
    overlay = "! timeoverlay " if m.get("overlay", True) else ""
    return (
        f"( videotestsrc is-live=true pattern={m.get('pattern', 'smpte')} "
        f"! video/x-raw,width={w},height={h},framerate={rate.numerator}/{rate.denominator} "
        f"{overlay}! {testsrc_encoder(m, fps)} )"
    )


def testsrc_encoder(m: dict[str, Any], fps: float) -> str:
    """The encoder of a ``testsrc`` mount, with its profile and parameter-set options."""
    return encoder(
        fps,
        int(m.get("keyint", fps)),
        int(m.get("bitrate", 1000)),
        str(m.get("profile", "baseline")),
        str(m.get("parameter_sets", "in-band")),
    )


def file_launch(mount: str, m: dict[str, Any]) -> str:
    """Launch line for a decoded-and-re-encoded file, looped through an inter channel."""
    fps = m.get("fps", 10)
    rate = Fraction(fps).limit_denominator(1001)
    caps = f"video/x-raw,framerate={rate.numerator}/{rate.denominator}"
    enc = encoder(fps, int(m.get("keyint", fps)), int(m.get("bitrate", 1500)))
    if not m.get("loop", True):
        path = GLib.strescape(m["path"])
        return (
            f'( filesrc location="{path}" ! decodebin ! videoconvert ! videorate ! {caps} ! {enc} )'
        )
    channel = "loop" + mount.replace("/", "_")
    start_looping_player(m["path"], channel)
    return f"( intervideosrc channel={channel} timeout=2000000000 ! {caps} ! {enc} )"


def start_looping_player(path: str, channel: str) -> None:
    """Decode ``path`` in real time forever into ``intervideosink channel=...``."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{GLib.strescape(path)}" ! decodebin ! videoconvert '
        f"! intervideosink channel={channel} sync=true"
    )
    bus = pipeline.get_bus()
    bus.add_signal_watch()

    def on_message(_bus: Gst.Bus, msg: Gst.Message) -> None:
        if msg.type == Gst.MessageType.EOS:
            # A flushing seek restarts the file; the inter channel keeps the last picture
            # meanwhile, so clients see a continuous live stream.
            pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"player {path}: {err.message} {dbg}", file=sys.stderr, flush=True)

    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    _keep.append(pipeline)


class H264FileFactory(GstRtspServer.RTSPMediaFactory):  # type: ignore[misc]
    """Serves pre-encoded access units (H.264 or H.265) from memory through ``appsrc``,
    looping."""

    def __init__(
        self, units: list[tuple[bytes, bool]], fps: float, loop: bool, codec: str = "h264"
    ) -> None:
        super().__init__()
        self.units, self.loop = units, loop
        self.duration = int(Gst.SECOND / fps)
        self.set_launch(
            "( appsrc name=src is-live=true format=time "
            f"caps=video/x-{codec},stream-format=byte-stream,alignment=au "
            f"! {codec}parse config-interval=-1 ! rtp{codec}pay name=pay0 pt=96 "
            "config-interval=1 )"
        )
        self.connect("media-configure", self.on_configure)

    def on_configure(self, _factory: Any, media: GstRtspServer.RTSPMedia) -> None:
        """Start pushing units, paced by the buffers' timestamps (the sink syncs)."""
        src = media.get_element().get_child_by_name("src")
        state = {"n": 0}

        def need_data(appsrc: GstApp.AppSrc, _length: int) -> None:
            n = state["n"]
            if n >= len(self.units) and not self.loop:
                appsrc.end_of_stream()
                return
            data, key = self.units[n % len(self.units)]
            buf = Gst.Buffer.new_wrapped(data)
            buf.pts = buf.dts = n * self.duration
            buf.duration = self.duration
            if not key:
                buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
            state["n"] = n + 1
            appsrc.push_buffer(buf)

        src.connect("need-data", need_data)


def read_access_units(path: str, codec: str = "h264") -> tuple[list[tuple[bytes, bool]], float]:
    """Read every access unit of ``path`` (with parameter sets in-band) and its frame rate."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{GLib.strescape(path)}" ! parsebin ! {codec}parse '
        f"config-interval=-1 ! video/x-{codec},stream-format=byte-stream,alignment=au "
        "! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units: list[tuple[bytes, bool]] = []
    fps = 0.0
    while (sample := sink.emit("pull-sample")) is not None:
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        units.append((bytes(info.data), not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)))
        buf.unmap(info)
        if not fps:
            ok, num, den = sample.get_caps().get_structure(0).get_fraction("framerate")
            fps = num / den if ok and num else 0.0
    pipeline.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"no {codec} access units in {path}")
    # A looped stream must restart on a keyframe: drop anything before the first IDR.
    first_key = next(i for i, (_d, key) in enumerate(units) if key)
    return units[first_key:], fps or 25.0


def make_factory(mount: str, m: dict[str, Any]) -> GstRtspServer.RTSPMediaFactory:
    """Build the media factory for one mount."""
    kind = m.get("kind", "testsrc")
    if kind == "h264file":
        codec = m.get("codec", "h264")
        units, file_fps = read_access_units(m["path"], codec)
        factory = H264FileFactory(units, float(m.get("fps", file_fps)), m.get("loop", True), codec)
    else:
        factory = GstRtspServer.RTSPMediaFactory()
        if kind == "testsrc":
            factory.set_launch(testsrc_launch(m))
        elif kind == "file":
            factory.set_launch(file_launch(mount, m))
        elif kind == "launch":
            factory.set_launch(m["launch"])
        else:
            raise SystemExit(f"unknown mount kind {kind!r} for {mount}")
    factory.set_shared(bool(m.get("shared", False)))
    return factory


def role_token(role: str) -> GstRtspServer.RTSPToken:
    """A token granting ``role`` (the varargs constructor is not introspectable)."""
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, role)
    return token


def protect(
    auth: GstRtspServer.RTSPAuth,
    factory: GstRtspServer.RTSPMediaFactory,
    mount: str,
    m: dict[str, Any],
) -> None:
    """Give ``factory`` Basic auth when the mount has a user, else anonymous access.

    gst-rtsp-server answers 404 when a role lacks ``access`` but 401 (with a Basic
    challenge) when it lacks ``construct``: anonymous clients of a protected mount get
    access without construct, so they are challenged like by a real camera.
    """
    grant = "media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    if m.get("user") is None:
        roles = {ANON_ROLE: grant}
    else:
        role = "user" + mount
        basic = GstRtspServer.RTSPAuth.make_basic(m["user"], m.get("password", ""))
        auth.add_basic(basic, role_token(role))
        roles = {
            role: grant,
            ANON_ROLE: "media.factory.access=(boolean)true, media.factory.construct=(boolean)false",
        }
    for role, perms in roles.items():
        factory.add_role_from_structure(Gst.Structure.new_from_string(f"{role}, {perms}"))


def die_with_parent() -> None:
    """Exit when the test process dies, so a crashed test run leaves no server behind."""
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit("parent exited")


def main() -> None:
    """Read the config, bind, print the ready line and serve until killed."""
    die_with_parent()
    Gst.init(None)
    with open(sys.argv[1], encoding="utf-8") as fh:
        config = json.load(fh)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(config.get("port", 0)))
    auth = GstRtspServer.RTSPAuth()
    # Clients without (valid) credentials get the anonymous role; see protect().
    auth.set_default_token(role_token(ANON_ROLE))
    server.set_auth(auth)
    mounts = server.get_mount_points()
    for mount, m in config["mounts"].items():
        factory = make_factory(mount, m)
        protect(auth, factory, mount, m)
        mounts.add_factory(mount, factory)
    if server.attach(None) == 0:
        raise SystemExit("could not bind the RTSP server")
    print(f"READY port={server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
