"""Response bodies of the availability report (``GET /cameras/availability``), its rate per
grid (``/cameras/availability/grids``) and the list of cameras not 完好 (``/cameras/health``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.cameras import QualityProblemOut


class CameraAvailability(BaseModel):
    camera_id: str
    name: str
    online_s: float
    ratio: float = Field(description="Share of the period online, 0..1.")
    good_s: float = Field(description="Seconds online with a usable picture (完好 time).")
    good_ratio: float = Field(
        description="Share of the period online and not degraded (完好), 0..1; at most `ratio`."
    )


class AvailabilityReport(BaseModel):
    since: datetime
    until: datetime
    cameras: list[CameraAvailability] = Field(
        description="Per camera, in registration order; empty with `cameras=false`."
    )
    camera_count: int = Field(description="Cameras measured (visible, in `grid_code`).")
    total_ratio: float = Field(description="Online time of all cameras over their total time.")
    cameras_at_or_above_98: int = Field(description="Cameras online at least 98 % of the time.")
    good_ratio: float = Field(
        description="完好率: time online with a usable picture, of all cameras, over their "
        "total time."
    )
    cameras_good_at_or_above_98: int = Field(
        description="Cameras online with a usable picture at least 98 % of the time."
    )


class GridAvailability(BaseModel):
    grid_code: str
    name: str
    level: str
    camera_count: int = Field(description="Cameras in the grid and every grid below it.")
    total_ratio: float = Field(description="Online time of its cameras over their total time.")
    good_ratio: float = Field(description="完好率 of its cameras.")
    cameras_at_or_above_98: int
    cameras_good_at_or_above_98: int


class GridAvailabilityReport(BaseModel):
    since: datetime
    until: datetime
    parent_code: str | None = Field(description="The grid whose children these are (null: top).")
    items: list[GridAvailability] = Field(
        description="Each grid right below `parent_code`, over its whole subtree, by code."
    )


class CameraHealth(BaseModel):
    """A camera that is not 完好 now, and why."""

    camera_id: str
    name: str
    grid_code: str | None
    state: Literal["connecting", "online", "offline"]
    since: datetime | None = Field(description="In this state since.")
    last_error: str | None = Field(description="Why it is not online, as the stream said.")
    quality: Literal["ok", "degraded", "unknown"] = Field(
        description="The picture's state (`degraded` only counts while it is online)."
    )
    quality_since: datetime | None = None
    problems: list[QualityProblemOut] = Field(description="What is wrong with the picture.")
    reference_at: datetime | None = Field(
        default=None, description="When its reference view (`.../quality/reference.jpg`) was taken."
    )


class CameraHealthList(BaseModel):
    items: list[CameraHealth]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last."
    )
