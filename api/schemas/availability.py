"""Response bodies of the availability report (``GET /cameras/availability``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class CameraAvailability(BaseModel):
    camera_id: str
    name: str
    online_s: float
    ratio: float = Field(description="Share of the period online, 0..1.")


class AvailabilityReport(BaseModel):
    since: datetime
    until: datetime
    cameras: list[CameraAvailability] = Field(
        description="Per camera, in registration order; empty with `cameras=false`."
    )
    camera_count: int = Field(description="Cameras measured (visible, in `grid_code`).")
    total_ratio: float = Field(description="Online time of all cameras over their total time.")
    cameras_at_or_above_98: int = Field(description="Cameras online at least 98 % of the time.")
