"""Incident bodies, as in the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IncidentType = Literal["motion", "crowd", "device_alarm", "tamper"]
IncidentStatus = Literal["new", "acknowledged", "resolved", "dismissed"]


class SnapshotRef(BaseModel):
    url: str


class ClipRef(BaseModel):
    url: str | None = Field(description="Download URL; null until the clip is archived.")
    sha256: str | None
    size: int | None
    duration_s: float | None
    state: Literal["pending", "archived", "failed", "expired"] = Field(
        description="expired: removed by retention (older than the retention period)."
    )
    error: str | None = None


class HistoryItem(BaseModel):
    at: datetime
    actor: str
    action: str
    note: str | None


class DeviceAlarm(BaseModel):
    """A GB/T 28181 Notify/Alarm (GB/T 28181-2016 A.2.5): codes as the device sent them."""

    priority: int | None = Field(description="1 (highest) to 4.")
    method: str | None = Field(
        description="1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 fault, 7 other."
    )
    type: str | None = Field(description="Depends on the method (device: 1 video loss, 2 tamper…).")
    description: str | None
    time: str | None = Field(description="The device's own time of the alarm.")
    device_id: str | None = Field(default=None, description="The device that reported it.")
    channel_id: str | None = Field(default=None, description="The channel (alarm source) it names.")


class Tamper(BaseModel):
    """What a ``tamper`` incident's picture-quality check found (issue #17)."""

    kind: Literal["black", "blur", "occlusion", "displaced"] = Field(
        description="Lens covered (occlusion), camera turned (displaced), picture gone "
        "black after a healthy one, or suddenly blurred."
    )
    score: float = Field(description="The diagnosis' score when it was raised; higher is worse.")


class IncidentOut(BaseModel):
    id: str
    camera_id: str
    grid_code: str | None
    type: str
    status: IncidentStatus
    started_at: datetime
    ended_at: datetime | None
    end_reason: Literal["process_died"] | None = Field(
        default=None,
        description="Set when the incident did not end by itself: `process_died` — the "
        "process recording it died; `ended_at` is its last recorded frame and the clip was "
        "recovered from the spool's journal.",
    )
    peak_persons: int | None = None
    alarm: DeviceAlarm | None = Field(
        default=None, description="A `device_alarm`'s fields, as the GB/T 28181 device sent them."
    )
    tamper: Tamper | None = Field(default=None, description="A `tamper` incident's diagnosis.")
    snapshot: SnapshotRef | None = None
    clip: ClipRef | None = None
    case_ids: list[str] = []
    history: list[HistoryItem] = []


class IncidentPage(BaseModel):
    items: list[IncidentOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["acknowledge", "resolve", "dismiss", "reopen"]
    note: str | None = Field(default=None, max_length=2000)
