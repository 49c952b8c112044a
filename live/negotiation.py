"""Which H.264 payload type of a browser's offer a camera's stream is sent as.

An answer may only use the offer's payload types, with the offer's numbers: the browser
maps each number to a decoder. An H.264 payload type's ``profile-level-id`` names the
profile the browser promises to decode, but the browsers' H.264 decoders (Chromium:
FFmpeg or the platform's hardware decoder; Firefox: FFmpeg or OpenH264; Safari:
VideoToolbox) are whole decoders that follow the stream's SPS, whatever was negotiated.
That matters because Chromium 156's recvonly offer lists H.264 only as 42001f, 42e01f,
4d001f and f4001f (no High, 64xxxx) while High is the default main stream of most
Hikvision/Dahua cameras. go2rtc and MediaMTX answer every H.264 stream as
``profile-level-id=42e01f`` and browsers play High that way.

So, for each offer (:func:`choose`): of the offered payload types with
packetization-mode 1 (aiortc's packetizer sends FU-A and STAP-A), the first whose profile
covers the stream's (the same one, or one that contains it: Constrained Baseline ⊂
Baseline, Constrained Baseline ⊂ Main ⊂ High, H.264 A.2), else what go2rtc and MediaMTX
answer: Constrained Baseline, then Baseline, Main, High. Measured with Chromium 156 and
``getStats()``: a High stream decodes answered as any of its four H.264 payload types,
and Baseline, Main, High and the demo camera all play as chosen here
(``tests/e2e/test_live_profiles.py``).

The answer carries exactly that payload type and its RTX, numbered as offered
(:func:`pin_answer`): aiortc pairs offered codecs with its own by profile and keeps its
own number when the offered one lies outside 96–127 (``find_common_codecs``), and
Chromium numbers f4001f 41. That is why live view of High cameras was black: the answer
said f4001f as payload type 107, which the browser never offered, so every packet
arrived (counted) and none reached a decoder.

What no browser decodes (4:2:2, High 10, other codecs) is not negotiated here:
:func:`live.webrtc.check_stream` sends it to the transcoder, whose Constrained Baseline
output is negotiated like any other stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpTransceiver
from aiortc import sdp as aiortc_sdp
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

from live.errors import BadOfferError

__all__ = [
    "STREAM_PROFILES",
    "OfferedH264",
    "answer_codecs",
    "choose",
    "offered_h264",
    "pin_answer",
    "register_h264_profiles",
]

CLOCK_RATE = 90_000

# aiortc's names of the H.264 profiles an SDP offer may name (``H264Profile``).
_CB, _B, _MAIN = "PROFILE_CONSTRAINED_BASELINE", "PROFILE_BASELINE", "PROFILE_MAIN"
_CHIGH, _HIGH = "PROFILE_CONSTRAINED_HIGH", "PROFILE_HIGH"
_HIGH444 = "PROFILE_PREDICTIVE_HIGH_444"

# Stream profile (FFmpeg's name) → offered profiles that honestly cover it, best first.
# Cameras' "Baseline" uses no FMO/ASO (nor does any browser decode them).
_COVERING: dict[str, tuple[str, ...]] = {
    "Constrained Baseline": (_CB, _B, _MAIN, _CHIGH, _HIGH),
    "Baseline": (_B, _CB, _MAIN, _CHIGH, _HIGH),
    "Main": (_MAIN, _HIGH),
    "High": (_HIGH, _CHIGH),
}
# What go2rtc and MediaMTX answer for any H.264 (42e01f), then the other profiles; High
# 4:4:4 Predictive (Chromium's f4001f) last: it contains High and Chromium decodes every
# 4:2:0 profile with it too, but only Chromium offers it.
_ANY_DECODER = (_CB, _B, _MAIN, _CHIGH, _HIGH, _HIGH444)

#: The stream profiles browsers decode when they are 8-bit 4:2:0.
STREAM_PROFILES = tuple(_COVERING)

# RTCP feedback aiortc's sender acts on: NACK (retransmit), PLI and FIR (keyframe
# request, see ``LiveTrack.request_keyframe``), REMB.
_FEEDBACK = {("nack", None), ("nack", "pli"), ("ccm", "fir"), ("goog-remb", None)}


@dataclass(frozen=True, slots=True)
class OfferedH264:
    """One H.264 payload type of an offer (packetization-mode 1), with its RTX."""

    payload_type: int
    profile: str  # aiortc's H264Profile name
    parameters: dict[str, Any]  # the offer's fmtp, answered as is
    rtcp_feedback: tuple[RTCRtcpFeedback, ...]
    rtx_payload_type: int | None


def offered_h264(offer: str) -> list[OfferedH264]:
    """The H.264 payload types with packetization-mode 1 of the offer's first video
    section, in the offer's order (the browser's preference)."""
    codecs = _video_codecs(offer)
    rtx = {
        c.parameters.get("apt"): c.payloadType
        for c in codecs
        if c.mimeType.lower() == "video/rtx" and c.payloadType is not None
    }
    found = []
    for codec in codecs:
        profile = _h264_profile(codec)
        if profile is not None and codec.payloadType is not None:
            found.append(
                OfferedH264(
                    payload_type=codec.payloadType,
                    profile=profile,
                    parameters=dict(codec.parameters),
                    rtcp_feedback=tuple(codec.rtcpFeedback),
                    rtx_payload_type=rtx.get(codec.payloadType),
                )
            )
    return found


def _video_codecs(offer: str) -> list[RTCRtpCodecParameters]:
    """The codecs of the offer's first video section."""
    try:
        description = aiortc_sdp.SessionDescription.parse(offer)
    except Exception as err:  # aiortc raises assorted errors on malformed SDP
        raise BadOfferError(f"not an SDP offer: {err}") from err
    video = [m for m in description.media if m.kind == "video"]
    if not video:
        raise BadOfferError("the SDP offer has no video section")
    return list(video[0].rtp.codecs)


def _h264_profile(codec: RTCRtpCodecParameters) -> str | None:
    """aiortc's profile name of an H.264 codec with packetization-mode 1, else None."""
    if codec.mimeType.lower() != "video/h264":
        return None
    if str(codec.parameters.get("packetization-mode")) != "1":
        return None  # mode 0 forbids FU-A: every NAL unit in one RTP packet
    plid = str(codec.parameters.get("profile-level-id", "42e01f"))  # RFC 6184 default
    with contextlib.suppress(ValueError):
        return aiortc_sdp.parse_h264_profile_level_id(plid)[0].name
    return None


def choose(offered: Sequence[OfferedH264], stream_profile: str) -> OfferedH264 | None:
    """The offered payload type to send a ``stream_profile`` stream as (module docstring).

    ``stream_profile`` is FFmpeg's name of an 8-bit 4:2:0 stream's profile (one of
    :data:`STREAM_PROFILES`). ``None`` only when nothing is offered: every profile an
    SDP can name has a decoder that plays 4:2:0 8-bit H.264.
    """
    covering = _COVERING.get(stream_profile, ())
    order = [*covering, *(p for p in _ANY_DECODER if p not in covering)]
    for profile in order:
        for codec in offered:
            if codec.profile == profile:
                return codec
    return None


def answer_codecs(chosen: OfferedH264) -> list[RTCRtpCodecParameters]:
    """``chosen`` and its RTX as aiortc codec parameters, numbered as the browser offered."""
    feedback = [f for f in chosen.rtcp_feedback if (f.type, f.parameter) in _FEEDBACK]
    codecs = [
        RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=CLOCK_RATE,
            payloadType=chosen.payload_type,
            rtcpFeedback=feedback,
            parameters=dict(chosen.parameters),
        )
    ]
    if chosen.rtx_payload_type is not None:
        codecs.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=CLOCK_RATE,
                payloadType=chosen.rtx_payload_type,
                parameters={"apt": chosen.payload_type},
            )
        )
    return codecs


def pin_answer(transceiver: RTCRtpTransceiver, chosen: OfferedH264) -> None:
    """Make aiortc answer, and send, exactly ``chosen`` (call between setting the remote
    description and creating the answer).

    aiortc has no public way to answer with a given offered payload type: its codec
    matching keeps aiortc's own number for offered numbers outside 96–127 (see the
    module docstring), so the negotiated list is replaced. The sender sends the first
    codec of this list and retransmits with the RTX whose ``apt`` names it.
    """
    transceiver._codecs = answer_codecs(chosen)


def register_h264_profiles() -> None:
    """Let aiortc accept offers that name Main, High, Constrained High or High 4:4:4 only.

    aiortc knows H.264 only as (Constrained) Baseline because its own encoder makes
    nothing else, and it refuses a remote description with no codec in common before
    :func:`pin_answer` could answer. Appended once per process, after aiortc's own codecs
    (same layout: each H.264 followed by its RTX).
    """
    video = CODECS["video"]
    present = {c.parameters.get("profile-level-id") for c in video if c.name == "H264"}
    pt = max(c.payloadType or 0 for c in video) + 1
    for plid in ("4d001f", "64001f", "640c1f", "f4001f"):
        if plid in present:
            continue
        video.append(_local_h264(pt, plid))
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=CLOCK_RATE,
                payloadType=pt + 1,
                parameters={"apt": pt},
            )
        )
        pt += 2


def _local_h264(payload_type: int, profile_level_id: str) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=CLOCK_RATE,
        payloadType=payload_type,
        rtcpFeedback=[
            RTCRtcpFeedback(type="nack"),
            RTCRtcpFeedback(type="nack", parameter="pli"),
            RTCRtcpFeedback(type="goog-remb"),
        ],
        parameters={
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": profile_level_id,
        },
    )


register_h264_profiles()
