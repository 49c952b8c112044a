"""Incident bodies, as in the contract."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IncidentType = Literal["motion", "crowd"]
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


class IncidentOut(BaseModel):
    id: str
    camera_id: str
    grid_code: str | None
    type: str
    status: IncidentStatus
    started_at: datetime
    ended_at: datetime | None
    peak_persons: int | None = None
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
