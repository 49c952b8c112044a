"""Request and response bodies of the ONVIF routes and of a camera's ``onvif`` field."""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Address
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

HOST_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OnvifIn(_In):
    """How to reach a camera's ONVIF device service; its streams are found by a probe."""

    host: str = Field(
        min_length=1, max_length=253, pattern=HOST_PATTERN, description="IP address or name."
    )
    port: int = Field(default=80, ge=1, le=65535, description="HTTP port of the ONVIF service.")
    username: str = Field(default="", max_length=128)
    password: SecretStr = Field(
        default=SecretStr(""), description="Stored encrypted; never returned."
    )
    profile_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Profile to record; default: the highest-resolution H.264 profile.",
    )
    sub_profile_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Profile to analyse; default: the smallest other profile.",
    )


class OnvifRefreshIn(_In):
    """Optional changes applied before probing again (e.g. the camera's new password)."""

    username: str | None = Field(default=None, max_length=128)
    password: SecretStr | None = None
    profile_token: str | None = Field(default=None, min_length=1, max_length=64)
    sub_profile_token: str | None = Field(default=None, min_length=1, max_length=64)


class ProfileOut(BaseModel):
    token: str
    name: str
    encoding: str = Field(description="H264, H265, JPEG, MPEG4, …")
    width: int
    height: int
    fps: float | None
    stream_uri: str | None = Field(description="RTSP URI as the camera gives it, no password.")
    snapshot_uri: str | None


class OnvifOut(BaseModel):
    """What the last probe found, and which profiles the camera's streams come from."""

    camera_id: str
    host: str
    port: int
    username: str
    password: Literal["***"] = "***"
    manufacturer: str
    model: str
    firmware: str
    serial: str
    hardware_id: str
    ptz: bool
    profiles: list[ProfileOut]
    main_profile: str = Field(description="Token of the recorded profile.")
    sub_profile: str | None = Field(description="Token of the analysed profile.")
    snapshot_uri: str | None
    probed_at: datetime


class DiscoverIn(_In):
    interface: IPv4Address = Field(
        description="Address of this server's interface on the cameras' network segment; "
        "the probe is multicast from it only."
    )
    timeout_s: float = Field(default=2.0, ge=0.2, le=10, description="How long to listen.")


class DiscoveredOut(BaseModel):
    address: str = Field(description="Device service URL (first XAddr).")
    host: str
    port: int
    endpoint: str = Field(description="WS-Addressing endpoint reference, e.g. urn:uuid:….")
    name: str | None
    hardware: str | None
    location: str | None
    scopes: list[str]
    registered: bool = Field(description="A camera of this registry is this device.")
    camera_ids: list[str]


class DiscoverOut(BaseModel):
    items: list[DiscoveredOut]
    duration_s: float


class PtzIn(_In):
    """``move``: continuous move for ``duration_s``; ``stop``; ``preset``: go to a preset."""

    action: Literal["move", "stop", "preset"]
    pan: float = Field(default=0.0, ge=-1, le=1, description="Speed, -1 (left) .. 1 (right).")
    tilt: float = Field(default=0.0, ge=-1, le=1, description="Speed, -1 (down) .. 1 (up).")
    zoom: float = Field(default=0.0, ge=-1, le=1, description="Speed, -1 (out) .. 1 (in).")
    duration_s: float = Field(default=1.0, gt=0, le=10, description="Move this long, then stop.")
    preset_token: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.action == "preset" and self.preset_token is None:
            raise ValueError("preset_token is required with action 'preset'")
        if self.action == "move" and not (self.pan or self.tilt or self.zoom):
            raise ValueError("a move needs a non-zero pan, tilt or zoom speed")
        return self


class PtzOut(BaseModel):
    camera_id: str
    action: str
    stops_after_s: float | None = None
