"""Request and response bodies of the grid routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.schemas.cameras import GridCode
from storage.grids import check_boundary

Level = Literal["city", "county", "town", "community", "grid"]


def _valid_boundary(value: dict[str, Any]) -> dict[str, Any]:
    check_boundary(value)  # BoundaryError is a ValueError: a 422 naming `boundary`
    return value


Boundary = Annotated[
    dict[str, Any],
    AfterValidator(_valid_boundary),
    Field(
        description="GeoJSON Polygon or MultiPolygon in WGS 84, positions [lon, lat]; "
        "rings closed and not self-intersecting."
    ),
]


class GridPut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    level: Level
    parent_code: GridCode | None = Field(
        default=None, description="The grid one level up (city → county → town → …)."
    )
    boundary: Boundary | None = None


class GridOut(BaseModel):
    code: str
    name: str
    level: Level
    parent_code: str | None
    boundary: dict[str, Any] | None = Field(
        default=None, description="In lists only with `boundary=true`."
    )
    created_at: datetime
    updated_at: datetime


class GridList(BaseModel):
    items: list[GridOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class GridImportOut(BaseModel):
    created: int
    updated: int
    cameras_reassigned: int = Field(
        description="Cameras with an automatically assigned grid that moved to another grid."
    )
