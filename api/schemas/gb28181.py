"""Request and response bodies of the GB/T 28181 device routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ChannelOut(BaseModel):
    channel_id: str
    name: str | None
    manufacturer: str | None = None
    model: str | None = None
    civil_code: str | None
    parent_id: str | None = None
    status: str = Field(description='"ON" or "OFF", as the device reported it.')
    longitude: float | None
    latitude: float | None
    camera_id: str | None = Field(description="The camera fed by this channel, if any.")


class DeviceOut(BaseModel):
    device_id: str
    name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    transport: str | None = Field(description='"UDP" or "TCP": how it registered.')
    address: str | None = Field(description="host:port its signalling comes from.")
    online: bool
    enabled: bool
    has_password: bool = Field(description="It has its own password (else the default).")
    registered_at: datetime | None
    last_keepalive_at: datetime | None
    expires_at: datetime | None
    channels: list[ChannelOut]


class DeviceList(BaseModel):
    items: list[DeviceOut]


class DevicePut(BaseModel):
    """Create or change a device ahead of (or after) its registration."""

    model_config = ConfigDict(extra="forbid")
    password: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Its own digest password; never returned. Absent: unchanged (new: the "
        "installation's default).",
    )
    enabled: bool | None = Field(default=None, description="False refuses its REGISTERs.")
    name: str | None = Field(default=None, min_length=1, max_length=200)
