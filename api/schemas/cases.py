"""Request and response bodies of the case routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.cameras import GridCode

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


class CaseOut(BaseModel):
    id: str
    external_ref: str
    title: str
    kind: Kind
    grid_code: str | None
    status: CaseStatus
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    incident_ids: list[str]


class CaseDetail(CaseOut):
    incidents: list[LinkedIncident]


class CaseList(BaseModel):
    items: list[CaseOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
