"""Cases of outside systems (disputes, police matters) and their links to incidents.

Linking and unlinking append an ``incident.linked`` event in the same transaction, stamped
with the incident's grid so grid-scoped subscribers receive it. Incidents linked to an open
case are *held*: retention keeps their clips (:func:`held_incident_ids`).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from config.errors import XueliangError
from config.settings import CaseSettings
from storage.case_flow import TERMINAL, Step, case_event, force, record_start
from storage.events import append_event
from storage.grid_models import Case, CaseIncident
from storage.grids import subtree_query
from storage.incidents import BadCursor
from storage.models import Incident, utcnow

KINDS = ("dispute", "police", "other")
STATUSES = ("open", "closed")


class CaseClosed(XueliangError):
    """The case is closed: reopen it before changing its links."""


class BadCaseCursor(BadCursor):
    """The pagination cursor is not one this service issued."""


@dataclass(frozen=True)
class NewCase:
    external_ref: str
    title: str
    kind: str
    grid_code: str | None = None
    #: ``filed`` for a case the platform already filed (``POST /cases``), ``reported`` for
    #: one a video incident reports to it.
    state: str = "filed"
    class_code: str | None = None
    location: dict[str, float] | None = None
    camera_national_id: str | None = None


def new_case_id() -> str:
    return "case_" + uuid.uuid4().hex[:16]


def create_case(
    session: Session, new: NewCase, actor: str, cases: CaseSettings, case_id: str | None = None
) -> Case:
    """Create an open case in ``new.state``: its timeline starts, ``case.created`` is
    appended."""
    now = utcnow()
    row = Case(
        id=case_id or new_case_id(),
        external_ref=new.external_ref,
        title=new.title,
        kind=new.kind,
        grid_code=new.grid_code,
        status="open",
        created_by=actor,
        created_at=now,
        updated_at=now,
        state=new.state,
        state_since=now,
        class_code=new.class_code,
        location=new.location,
        camera_national_id=new.camera_national_id,
    )
    session.add(row)
    session.flush()
    record_start(session, row, actor, cases)
    append_event(session, "case.created", case_event(row) | {"title": row.title}, row.grid_code)
    return row


def get_case(session: Session, case_id: str) -> Case | None:
    return session.get(Case, case_id)


def linked_incidents(session: Session, case_id: str) -> list[Incident]:
    """The incidents linked to a case, in the order they were linked."""
    query = (
        select(Incident)
        .join(CaseIncident, CaseIncident.incident_id == Incident.id)
        .where(CaseIncident.case_id == case_id)
        .order_by(CaseIncident.linked_at, Incident.id)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class CaseFilter:
    status: str | None = None
    kind: str | None = None
    external_ref: str | None = None
    #: Cases of this grid and the grids below it.
    grid_code: str | None = None
    #: A scoped token's grid: only cases in its subtree.
    within: str | None = None
    state: str | None = None
    #: True: past the deadline of their state; False: not (or without one).
    overdue: bool | None = None


def list_cases(
    session: Session, f: CaseFilter, limit: int, cursor: str | None
) -> tuple[list[Case], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Case).order_by(Case.created_at.desc(), Case.id.desc())
    for column, value in ((Case.status, f.status), (Case.kind, f.kind), (Case.state, f.state)):
        if value is not None:
            query = query.where(column == value)
    if f.external_ref is not None:
        query = query.where(Case.external_ref == f.external_ref)
    if f.overdue is not None:
        now = utcnow()
        late = and_(Case.deadline_at < now, Case.state.not_in(TERMINAL))
        in_time = or_(Case.deadline_at.is_(None), Case.deadline_at >= now, Case.state.in_(TERMINAL))
        query = query.where(late if f.overdue else in_time)
    for i, grid in enumerate((f.grid_code, f.within)):
        if grid is not None:
            query = query.where(Case.grid_code.in_(subtree_query(grid, f"subtree{i}")))
    if cursor:
        at, last_id = _decode_cursor(cursor)
        query = query.where(
            or_(Case.created_at < at, and_(Case.created_at == at, Case.id < last_id))
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, _encode_cursor(rows[-1]) if more and rows else None


def _encode_cursor(row: Case) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        at, last_id = raw.split("|", 1)
        return datetime.fromisoformat(at), last_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise BadCaseCursor("invalid cursor: pass the next_cursor of a previous page") from err


def set_status(session: Session, case: Case, status: str, actor: str, cases: CaseSettings) -> bool:
    """Close or reopen a case directly (``PATCH``, before the lifecycle existed): closing
    puts it in ``closed``, reopening back in ``filed``; both are in its timeline. Returns
    whether its status changed."""
    if status not in STATUSES:
        raise ValueError(f"unknown case status {status!r}")
    if case.status == status:
        return False
    note = "closed directly (PATCH status)" if status == "closed" else "reopened (PATCH status)"
    force(session, case, Step("closed" if status == "closed" else "filed", actor, note), cases)
    return True


def link(session: Session, case: Case, incident: Incident, actor: str) -> bool:
    """Link an incident to an open case; returns False when it already was linked."""
    _require_open(case)
    if session.get(CaseIncident, (case.id, incident.id)) is not None:
        return False
    session.add(
        CaseIncident(case_id=case.id, incident_id=incident.id, linked_at=utcnow(), linked_by=actor)
    )
    _touch(case)
    _linked_event(session, case, incident, linked=True)
    return True


def unlink(session: Session, case: Case, incident: Incident) -> bool:
    """Remove a link; returns False when there was none."""
    _require_open(case)
    gone = session.execute(
        delete(CaseIncident).where(
            CaseIncident.case_id == case.id, CaseIncident.incident_id == incident.id
        )
    )
    if not gone.rowcount:  # type: ignore[attr-defined]  # CursorResult of a DELETE
        return False
    _touch(case)
    _linked_event(session, case, incident, linked=False)
    return True


def _require_open(case: Case) -> None:
    if case.status != "open":
        raise CaseClosed(f"case {case.id} is closed: reopen it before changing its incidents")


def _touch(case: Case) -> None:
    case.updated_at = utcnow()


def _linked_event(session: Session, case: Case, incident: Incident, *, linked: bool) -> None:
    data = {
        "incident_id": incident.id,
        "case_id": case.id,
        "external_ref": case.external_ref,
        "kind": case.kind,
        "linked": linked,
    }
    append_event(session, "incident.linked", data, incident.grid_code)


#: Ids per IN (...) list: well below SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 5000


def _chunks(ids: Collection[str]) -> list[list[str]]:
    items = list(dict.fromkeys(ids))
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def case_ids_for(session: Session, incident_ids: Collection[str]) -> dict[str, list[str]]:
    """Every given incident id → the ids of the cases it is linked to (``[]`` when none)."""
    result: dict[str, list[str]] = {i: [] for i in incident_ids}
    for chunk in _chunks(result):
        query = (
            select(CaseIncident.incident_id, CaseIncident.case_id)
            .where(CaseIncident.incident_id.in_(chunk))
            .order_by(CaseIncident.linked_at, CaseIncident.case_id)
        )
        for incident_id, case_id in session.execute(query):
            result[incident_id].append(case_id)
    return result


def held_incident_ids(session: Session, incident_ids: Collection[str]) -> set[str]:
    """Those of the given incidents linked to at least one open case (retention keeps them)."""
    held: set[str] = set()
    for chunk in _chunks(incident_ids):
        query = (
            select(CaseIncident.incident_id)
            .join(Case, Case.id == CaseIncident.case_id)
            .where(CaseIncident.incident_id.in_(chunk), Case.status == "open")
            .distinct()
        )
        held.update(session.scalars(query))
    return held


def incident_ids_for(session: Session, case_ids: Collection[str]) -> dict[str, list[str]]:
    """Every given case id → the ids of its linked incidents, in link order."""
    result: dict[str, list[str]] = {c: [] for c in case_ids}
    for chunk in _chunks(result):
        query = (
            select(CaseIncident.case_id, CaseIncident.incident_id)
            .where(CaseIncident.case_id.in_(chunk))
            .order_by(CaseIncident.linked_at, CaseIncident.incident_id)
        )
        for case_id, incident_id in session.execute(query):
            result[case_id].append(incident_id)
    return result
