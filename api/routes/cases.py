"""Cases of the grid platform and the incidents linked to them, and their handling.

A case moves through the grid platform's handling (storage/case_flow.py) by
``POST /cases/{id}/transitions`` (operators, the grid platform) or by the platform's own
signed webhooks to ``POST /hooks/cases``; an operator sends a video incident on as a new
case in ``reported`` with ``POST /incidents/{id}/report``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
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
    EventClassOut,
    Evidence,
    InboundIn,
    Kind,
    LinkedIncident,
    LinkIn,
    Location,
    ReportIn,
    TimelineItem,
    TransitionIn,
)
from api.scope import check_visible, visible_grid_codes
from config.settings import CaseSettings, CaseState
from storage import cases as repo
from storage.audit import audit
from storage.cameras import national_id
from storage.case_flow import Step, TransitionRefused, is_overdue, timeline, transition
from storage.grid_models import Case, InboundMessage
from storage.grids import get_grid
from storage.models import Camera, Incident, utcnow
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
        state=case.state,
        class_code=case.class_code,
        location=Location(**case.location) if case.location else None,
        camera_national_id=case.camera_national_id,
        assignee=case.assignee,
        deadline_at=case.deadline_at,
        overdue=is_overdue(case),
        created_at=case.created_at,
        updated_at=case.updated_at,
        closed_at=case.closed_at,
        incident_ids=incident_ids,
    )


def _detail(session: Session, case: Case) -> CaseDetail:
    incidents = repo.linked_incidents(session, case.id)
    base = _out(case, [i.id for i in incidents])
    steps = [
        TimelineItem(
            at=t.at,
            actor=t.actor,
            from_=t.from_state,
            to=t.to_state,
            note=t.note,
            assignee=t.assignee,
            deadline_at=t.deadline_at,
        )
        for t in timeline(session, case.id)
    ]
    return CaseDetail(
        **base.model_dump(),
        incidents=[LinkedIncident.model_validate(i, from_attributes=True) for i in incidents],
        evidence=[_evidence(i) for i in incidents],
        timeline=steps,
    )


def _evidence(incident: Incident) -> Evidence:
    archived = incident.clip_state == "archived"
    return Evidence(
        incident_id=incident.id,
        clip_url=f"/api/v1/incidents/{incident.id}/clip" if archived else None,
        sha256=incident.clip_sha256 if archived else None,
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
        case = repo.create_case(session, new, who.name, services.settings.cases)
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
    state: CaseState | None = None,
    overdue: Annotated[
        bool | None, Query(description="Only cases past (true) or within (false) a deadline.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> CaseList:
    """Newest first; a grid-scoped token sees the cases of its subtree only."""
    f = repo.CaseFilter(
        status_, kind, external_ref, grid_code, who.grid_scope, state=state, overdue=overdue
    )
    with services.db.session() as session:
        rows, next_cursor = repo.list_cases(session, f, limit, cursor)
        links = repo.incident_ids_for(session, [c.id for c in rows])
        return CaseList(items=[_out(c, links[c.id]) for c in rows], next_cursor=next_cursor)


@router.get("/classes", response_model=list[EventClassOut])
def event_classes(services: ServicesDep, _: CaseWorker) -> list[EventClassOut]:
    """The event classes cases are filed under, and the deadline of each state."""
    return [
        EventClassOut(code=c.code, name=c.name, category=c.category, deadlines_s=c.deadlines_s)
        for c in services.settings.cases.classes
    ]


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
        cases = services.settings.cases
        if body.status is not None and repo.set_status(session, case, body.status, who.name, cases):
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


REFUSED = error("Not allowed from the case's state; `allowed` lists where it can go.")


@router.post("/{case_id}/transitions", response_model=CaseDetail, responses={409: REFUSED})
def move_case(
    case_id: str, body: TransitionIn, services: ServicesDep, who: CaseWorker
) -> CaseDetail | JSONResponse:
    """Move a case one step of its handling; in its timeline and on the event feed
    (`case.transitioned`). Dispatching needs an `assignee`."""
    step = Step(body.to, who.name, body.note, body.assignee, body.deadline_at)
    try:
        with services.tx() as session:
            case = _visible_case(session, who, case_id)
            transition(session, case, step, services.settings.cases)
            audit(session, who.name, "transition", "case", case_id, {"to": body.to})
            return _detail(session, case)
    except TransitionRefused as err:
        return _refused(err)


def _refused(err: TransitionRefused) -> JSONResponse:
    body = {"detail": str(err), "allowed": list(err.allowed)}
    return JSONResponse(body, status_code=status.HTTP_409_CONFLICT)


# -- Inbound webhooks of the grid platform ---------------------------------------------------

SIGNATURE = "X-Xueliang-Signature"
TIMESTAMP = "X-Xueliang-Timestamp"


#: Outside /api/v1: the grid platform signs these with the shared secret instead of a token.
hooks = APIRouter(prefix="/hooks", tags=["cases"])


@hooks.post(
    "/cases",
    response_model=CaseDetail,
    responses={401: error("Missing, stale or wrong signature."), 409: REFUSED},
)
async def inbound(request: Request, services: ServicesDep) -> CaseDetail | JSONResponse:
    """The grid platform moves a case by webhook: the body is an `InboundIn`, signed like
    our own webhooks — `X-Xueliang-Signature: sha256=<hex HMAC-SHA256 of "TIMESTAMP.BODY">`
    with `X-Xueliang-Timestamp` (Unix seconds) and the shared `cases.inbound_secret`. A
    message older than `cases.inbound_max_skew_s`, or one whose `message_id` was seen, is
    refused (401, 409)."""
    cases = services.settings.cases
    raw = await request.body()
    _check_signature(request, raw, cases)
    try:
        body = InboundIn.model_validate(json.loads(raw))
    except ValueError as err:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from None
    actor = "grid-platform (inbound webhook)"
    step = Step(body.to, actor, body.note, body.assignee, body.deadline_at)
    try:
        with services.tx() as session:
            session.add(InboundMessage(id=body.message_id, received_at=utcnow()))
            session.flush()
            case = repo.get_case(session, body.case_id)
            if case is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no case {body.case_id}")
            transition(session, case, step, cases)
            audit(session, actor, "transition", "case", case.id, {"to": body.to})
            return _detail(session, case)
    except TransitionRefused as err:  # rolled back, the message id with it
        return _refused(err)
    except IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"message {body.message_id} was received already (replay)"
        ) from None


def _check_signature(request: Request, raw: bytes, cases: CaseSettings) -> None:
    if cases.inbound_secret is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "inbound webhooks are off: set cases.inbound_secret (XUELIANG_CASES__INBOUND_SECRET)",
        )
    stamp = request.headers.get(TIMESTAMP, "")
    try:
        age = abs(time.time() - int(stamp))
    except ValueError:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{TIMESTAMP} missing") from None
    if age > cases.inbound_max_skew_s:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{TIMESTAMP} is {age:.0f} s off")
    secret = cases.inbound_secret.get_secret_value().encode()
    expected = "sha256=" + hmac.new(secret, stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get(SIGNATURE, "")):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"wrong {SIGNATURE}")


# -- From an incident to a case ------------------------------------------------------------

reports = APIRouter(prefix="/incidents", tags=["cases"])


@reports.post(
    "/{incident_id}/report",
    response_model=CaseDetail,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": CaseDetail, "description": "Reported already: that case."}},
)
def report_incident(
    incident_id: str, body: ReportIn, response: Response, services: ServicesDep, who: CaseWorker
) -> CaseDetail:
    """Send a video incident to the grid platform: a case in `reported` with the event
    class, grid, place, the camera's national ID and the incident's evidence, announced by
    `case.created` on the event feed and webhooks. Reporting it again gives the same case
    while that one is open."""
    cases = services.settings.cases
    with services.tx() as session:
        incident = _visible_incident(session, who, incident_id)
        existing = _reported_case(session, incident.id)
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return _detail(session, existing)
        class_code = body.class_code or cases.default_class.get(incident.type, "9999")
        event_class = cases.event_class(class_code)
        if event_class is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [
                    {
                        "loc": ["body", "class_code"],
                        "msg": f"no event class {class_code} (GET /cases/classes)",
                        "type": "value_error",
                    }
                ],
            )
        case_id = repo.new_case_id()  # also its external_ref until the platform gives its own
        new = _new_report(session, incident, event_class.name, class_code, case_id, body.note)
        case = repo.create_case(session, new, who.name, cases, case_id=case_id)
        repo.link(session, case, incident, who.name)
        audit(session, who.name, "report", "incident", incident.id, {"case_id": case.id})
        return _detail(session, case)


def _reported_case(session: Session, incident_id: str) -> Case | None:
    for case_id in repo.case_ids_for(session, [incident_id]).get(incident_id, []):
        case = repo.get_case(session, case_id)
        if case is None or case.status != "open":
            continue
        first = timeline(session, case.id)[:1]
        if first and first[0].to_state == "reported":
            return case
    return None


def _new_report(
    session: Session, incident: Incident, class_name: str, code: str, case_id: str, note: str | None
) -> repo.NewCase:
    camera = session.get(Camera, incident.camera_id)
    where = camera.name if camera is not None else incident.camera_id
    location = None
    if camera is not None and camera.lat is not None and camera.lon is not None:
        location = {"lat": camera.lat, "lon": camera.lon}
    national = national_id(camera) if camera is not None else None
    started = incident.started_at.strftime("%Y-%m-%d %H:%M:%S")
    title = f"{class_name} · {where} · {started} UTC" + (f": {note}" if note else "")
    return repo.NewCase(
        external_ref=case_id,
        title=title[:500],
        kind="other",
        grid_code=incident.grid_code,
        state="reported",
        class_code=code,
        location=location,
        camera_national_id=national,
    )
