"""Request and response bodies of the case routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.cameras import GridCode
from config.settings import CaseState

Kind = Literal["dispute", "police", "other"]
CaseStatus = Literal["open", "closed"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaseCreate(_In):
    external_ref: str = Field(
        min_length=1, max_length=200, description="The case's id in its own system."
    )
    title: str = Field(min_length=1, max_length=500)
    kind: Kind
    grid_code: GridCode | None = Field(
        default=None, description="A known grid; a grid-scoped token's own grid when absent."
    )


class CasePatch(_In):
    status: CaseStatus | None = Field(default=None, description="Close or reopen the case.")
    title: str | None = Field(default=None, min_length=1, max_length=500)


class LinkIn(_In):
    incident_id: str = Field(min_length=1, max_length=32)


class LinkedIncident(BaseModel):
    id: str
    camera_id: str
    grid_code: str | None
    type: str
    status: str
    started_at: datetime
    ended_at: datetime | None


class Location(BaseModel):
    lat: float
    lon: float


class CaseOut(BaseModel):
    id: str
    external_ref: str
    title: str
    kind: Kind
    grid_code: str | None
    status: CaseStatus = Field(description="`closed` once the case is closed or rejected.")
    state: CaseState = Field(
        description="Where it is in the handling: reported → accepted | rejected → filed → "
        "dispatched → handling → handled → verified → closed (handled → dispatched again "
        "when the check fails)."
    )
    class_code: str | None = Field(description="Its event class (`GET /cases/classes`).")
    location: Location | None = None
    camera_national_id: str | None = Field(
        default=None, description="The 20-digit GB/T 28181 ID of the camera that saw it."
    )
    assignee: str | None = Field(description="The department or grid worker sent.")
    deadline_at: datetime | None = Field(description="When its current state is due to end.")
    overdue: bool
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    incident_ids: list[str]


class Evidence(BaseModel):
    incident_id: str
    clip_url: str | None = Field(description="The clip (API path); null until archived.")
    sha256: str | None


class TimelineItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: datetime
    actor: str
    from_: CaseState | None = Field(alias="from", description="null: the case was created")
    to: CaseState
    note: str | None = None
    assignee: str | None = None
    deadline_at: datetime | None = None


class CaseDetail(CaseOut):
    incidents: list[LinkedIncident]
    evidence: list[Evidence]
    timeline: list[TimelineItem]


class TransitionIn(_In):
    to: CaseState
    note: str | None = Field(default=None, max_length=2000)
    assignee: str | None = Field(
        default=None, min_length=1, max_length=200, description="Needed to dispatch."
    )
    deadline_at: datetime | None = Field(
        default=None, description="Overrides the event class's deadline for the new state."
    )


class ReportIn(_In):
    class_code: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Za-z]{2,16}$",
        description="Its event class; by default the class configured for the incident's type.",
    )
    note: str | None = Field(default=None, max_length=2000)


class InboundIn(_In):
    """A transition the grid platform sends by webhook (signed, never replayed)."""

    message_id: str = Field(min_length=1, max_length=100)
    case_id: str = Field(min_length=1, max_length=32)
    to: CaseState
    note: str | None = Field(default=None, max_length=2000)
    assignee: str | None = Field(default=None, min_length=1, max_length=200)
    deadline_at: datetime | None = None


class EventClassOut(BaseModel):
    code: str
    name: str
    category: str
    deadlines_s: dict[str, float]


class CaseList(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
