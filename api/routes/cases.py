"""Cases of outside systems and the incidents linked to them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from sqlalchemy.orm import Session

from api.deps import ServicesDep, require
from api.openapi import BAD_CURSOR, error
from api.schemas.cases import (
    CaseCreate,
    CaseDetail,
    CaseList,
    CaseOut,
    CasePatch,
    CaseStatus,
    Kind,
    LinkedIncident,
    LinkIn,
)
from api.scope import check_visible, visible_grid_codes
from storage import cases as repo
from storage.audit import audit
from storage.grid_models import Case
from storage.grids import get_grid
from storage.models import Incident
from storage.tokens import Principal

router = APIRouter(prefix="/cases", tags=["cases"])
#: Operators open cases; the grid platform mirrors its own cases here and links them.
CaseWorker = Annotated[Principal, Depends(require("operator", "grid_platform"))]
CLOSED = error("The case is closed: reopen it (PATCH status open) before changing its links.")


def _out(case: Case, incident_ids: list[str]) -> CaseOut:
    return CaseOut(
        id=case.id,
        external_ref=case.external_ref,
        title=case.title,
        kind=case.kind,  # validated on the way in
        grid_code=case.grid_code,
        status=case.status,
        created_at=case.created_at,
        updated_at=case.updated_at,
        closed_at=case.closed_at,
        incident_ids=incident_ids,
    )


def _detail(session: Session, case: Case) -> CaseDetail:
    incidents = repo.linked_incidents(session, case.id)
    base = _out(case, [i.id for i in incidents])
    return CaseDetail(
        **base.model_dump(),
        incidents=[LinkedIncident.model_validate(i, from_attributes=True) for i in incidents],
    )


def _visible_case(session: Session, who: Principal, case_id: str) -> Case:
    case = repo.get_case(session, case_id)
    if case is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {case_id}")
    check_visible(visible_grid_codes(session, who), case.grid_code, f"no case {case_id}")
    return case


def _visible_incident(session: Session, who: Principal, incident_id: str) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no incident {incident_id}")
    visible = visible_grid_codes(session, who)
    check_visible(visible, incident.grid_code, f"no incident {incident_id}")
    return incident


def _grid_for_new_case(session: Session, who: Principal, grid_code: str | None) -> str | None:
    grid_code = grid_code or who.grid_scope
    if grid_code is None:
        return None
    visible = visible_grid_codes(session, who)
    if get_grid(session, grid_code) is None or (visible is not None and grid_code not in visible):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["body", "grid_code"],
                    "msg": f"no grid {grid_code}" + (" in this token's scope" if visible else ""),
                    "type": "value_error",
                }
            ],
        )
    return grid_code


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CaseDetail)
def create_case(body: CaseCreate, services: ServicesDep, who: CaseWorker) -> CaseDetail:
    """Reference a case of another system here, so incidents can be linked to it."""
    with services.tx() as session:
        grid_code = _grid_for_new_case(session, who, body.grid_code)
        new = repo.NewCase(body.external_ref, body.title, body.kind, grid_code)
        case = repo.create_case(session, new, who.name)
        audit(session, who.name, "create", "case", case.id, {"external_ref": body.external_ref})
        return _detail(session, case)


@router.get("", response_model=CaseList, responses={400: BAD_CURSOR})
def list_cases(
    services: ServicesDep,
    who: CaseWorker,
    status_: Annotated[CaseStatus | None, Query(alias="status")] = None,
    kind: Kind | None = None,
    grid_code: Annotated[
        str | None, Query(max_length=64, description="This grid and the grids below it.")
    ] = None,
    external_ref: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> CaseList:
    """Newest first; a grid-scoped token sees the cases of its subtree only."""
    f = repo.CaseFilter(status_, kind, external_ref, grid_code, who.grid_scope)
    with services.db.session() as session:
        rows, next_cursor = repo.list_cases(session, f, limit, cursor)
        links = repo.incident_ids_for(session, [c.id for c in rows])
        return CaseList(items=[_out(c, links[c.id]) for c in rows], next_cursor=next_cursor)


@router.get("/{case_id}", response_model=CaseDetail)
def get_case(case_id: str, services: ServicesDep, who: CaseWorker) -> CaseDetail:
    with services.db.session() as session:
        return _detail(session, _visible_case(session, who, case_id))


@router.patch("/{case_id}", response_model=CaseDetail)
def patch_case(case_id: str, body: CasePatch, services: ServicesDep, who: CaseWorker) -> CaseDetail:
    """Close or reopen a case (clips of incidents of open cases are kept), or retitle it."""
    with services.tx() as session:
        case = _visible_case(session, who, case_id)
        changes: dict[str, str] = {}
        if body.status is not None and repo.set_status(session, case, body.status):
            changes["status"] = body.status
        if body.title is not None and body.title != case.title:
            case.title = body.title
            changes["title"] = body.title
        if changes:
            audit(session, who.name, "update", "case", case_id, changes)
        return _detail(session, case)


@router.post(
    "/{case_id}/incidents",
    response_model=CaseDetail,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CaseDetail, "description": "Already linked."}, 409: CLOSED},
)
def link_incident(
    case_id: str, body: LinkIn, response: Response, services: ServicesDep, who: CaseWorker
) -> CaseDetail:
    """Link an incident to an open case; appends an `incident.linked` event."""
    with services.tx() as session:
        case = _visible_case(session, who, case_id)
        incident = _visible_incident(session, who, body.incident_id)
        if repo.link(session, case, incident, who.name):
            audit(session, who.name, "link", "case", case_id, {"incident_id": incident.id})
        else:
            response.status_code = status.HTTP_200_OK
        return _detail(session, case)


@router.delete(
    "/{case_id}/incidents/{incident_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={409: CLOSED},
)
def unlink_incident(case_id: str, incident_id: str, services: ServicesDep, who: CaseWorker) -> None:
    """Remove a link; appends an `incident.linked` event with `linked: false`."""
    with services.tx() as session:
        case = _visible_case(session, who, case_id)
        incident = _visible_incident(session, who, incident_id)
        if not repo.unlink(session, case, incident):
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"incident {incident_id} is not linked to {case_id}"
            )
        audit(session, who.name, "unlink", "case", case_id, {"incident_id": incident_id})
