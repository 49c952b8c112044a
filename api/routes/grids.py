"""Grids: the hierarchy integrators load, with boundaries cameras are placed in."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response, status
from sqlalchemy.orm import Session

from api.deps import CamerasDep, ServicesDep, require
from api.openapi import BAD_CURSOR
from api.schemas.grids import GridImportOut, GridList, GridOut, GridPut, Level
from api.scope import check_visible, visible_grid_codes
from storage import grids as repo
from storage.audit import audit
from storage.grid_models import Grid
from storage.tokens import Principal

router = APIRouter(prefix="/grids", tags=["grids"])
Integrator = Annotated[Principal, Depends(require("integrator"))]
Reader = Annotated[Principal, Depends(require("integrator", "operator", "grid_platform"))]
CodePath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _out(row: Grid, with_boundary: bool = True) -> GridOut:
    return GridOut(
        code=row.code,
        name=row.name,
        level=row.level,  # validated on the way in
        parent_code=row.parent_code,
        boundary=row.boundary if with_boundary else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.put(
    "/{code}",
    response_model=GridOut,
    responses={201: {"model": GridOut, "description": "Created."}},
)
def put_grid(
    code: CodePath,
    body: GridPut,
    response: Response,
    services: ServicesDep,
    cameras: CamerasDep,
    who: Integrator,
) -> GridOut:
    """Create or replace a grid; cameras placed automatically follow a changed boundary."""
    spec = repo.GridSpec(code, body.name, body.level, body.parent_code, body.boundary)
    with services.tx() as session:
        current = repo.get_grid(session, code)
        _check_writable(session, who, spec, current)
        reshaped = current is None or (current.boundary, current.level) != (
            spec.boundary,
            spec.level,
        )
        row, created = repo.put_grid(session, spec)
        moved = repo.reassign_cameras(session) if reshaped else 0
        audit(session, who.name, "create" if created else "update", "grid", code)
        out = _out(row)
    if moved:
        cameras.changed()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return out


def _check_writable(
    session: Session, who: Principal, spec: repo.GridSpec, current: Grid | None
) -> None:
    visible = visible_grid_codes(session, who)
    if visible is None:
        return
    if current is not None:
        check_visible(visible, current.code, f"no grid {current.code}")
    state = (current.level, current.parent_code) if current is not None else None
    if not repo.writable(spec, state, set(visible)):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"grid {spec.code} would be outside this token's grid scope "
            f"({who.grid_scope}): its parent must be inside it",
        )


@router.post("/import", response_model=GridImportOut)
def import_grids(
    services: ServicesDep,
    cameras: CamerasDep,
    who: Integrator,
    collection: Annotated[
        dict[str, Any],
        Body(
            description="A GeoJSON FeatureCollection; each feature's properties: code, name, "
            "level, parent_code; its geometry: the boundary (Polygon, MultiPolygon or null).",
        ),
    ],
) -> GridImportOut:
    """Create or update many grids at once, all or nothing; re-places automatic cameras."""
    with services.tx() as session:
        within = visible_grid_codes(session, who)
        result = repo.import_grids(session, collection, within)
        detail = {
            "created": result.created,
            "updated": result.updated,
            "cameras_reassigned": result.cameras_reassigned,
        }
        audit(session, who.name, "import", "grid", "*", detail)
    if result.cameras_reassigned:
        cameras.changed()
    return GridImportOut(**detail)


@router.get("", response_model=GridList, responses={400: BAD_CURSOR})
def list_grids(
    services: ServicesDep,
    who: Reader,
    parent: Annotated[str | None, Query(max_length=64, description="Children of it.")] = None,
    level: Level | None = None,
    boundary: Annotated[bool, Query(description="Include the boundaries.")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> GridList:
    """Grids ordered by code; a grid-scoped token sees its subtree only."""
    f = repo.GridFilter(parent_code=parent, level=level, within=who.grid_scope)
    with services.db.session() as session:
        rows, next_cursor = repo.list_grids(session, f, limit, cursor)
        return GridList(items=[_out(r, boundary) for r in rows], next_cursor=next_cursor)


@router.get("/{code}", response_model=GridOut)
def get_grid(code: CodePath, services: ServicesDep, who: Reader) -> GridOut:
    with services.db.session() as session:
        row = repo.get_grid(session, code)
        if row is not None:
            check_visible(visible_grid_codes(session, who), row.code, f"no grid {code}")
            return _out(row)
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"no grid {code}")
