"""Exporting an incident's evidence package (format: :mod:`storage.evidence_package`).

The clip is streamed from the object store into the package (a file the caller gives,
on disk) and hashed on the way: only when its SHA-256 and size equal those recorded when
it was archived does the export go on, so a package can never carry a clip other than the
archived one. The export is audited (``export``, ``incident``) before the audit trail is
written into the package, which therefore shows the export itself; a refusal because the
stored object no longer matches is audited too (``export_refused``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from config.errors import XueliangError
from storage import evidence_package as pkg
from storage.audit import audit, pending
from storage.cameras import national_id
from storage.db import Database
from storage.errors import ObjectNotFound
from storage.evidence_keys import SigningKey
from storage.grid_models import Case, CaseIncident, Grid
from storage.incidents import history, incident_fields
from storage.models import AuditEntry, Camera, Incident, utcnow
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

#: Audit resources whose ``resource_id`` is an incident id.
_INCIDENT_RESOURCES = ("incident", "clip", "snapshot")
_MAX_GRID_DEPTH = 16  # deeper than any real hierarchy (city … grid is 5); stops a cycle


class EvidenceConflict(XueliangError):
    """The evidence cannot be exported as it is (HTTP 409): the clip is not archived, or
    the stored object no longer matches what was archived."""


class EvidenceMismatch(EvidenceConflict):
    """A stored object is missing or differs from the SHA-256 recorded at archiving."""


@dataclass(frozen=True)
class Sources:
    """What an export reads, taken from the database in one transaction."""

    incident_id: str
    clip_key: str
    clip_sha256: str
    clip_size: int | None
    snapshot_key: str | None
    snapshot_sha256: str | None
    case_ids: tuple[str, ...]
    record: dict[str, Any]


@dataclass(frozen=True)
class Exporter:
    """Who exports, for the audit log and the manifest."""

    actor: str
    installation_name: str | None = None


def sources(session: Session, row: Incident) -> Sources:
    """The evidence of ``row``; :class:`EvidenceConflict` unless its clip is archived."""
    if row.clip_state != "archived" or row.clip_key is None or row.clip_sha256 is None:
        state = row.clip_state or "none"
        raise EvidenceConflict(
            f"the clip of incident {row.id} is not archived (clip state: {state}); the "
            "evidence package can be exported once it is"
        )
    record = incident_record(session, row)
    return Sources(
        incident_id=row.id,
        clip_key=row.clip_key,
        clip_sha256=row.clip_sha256.lower(),
        clip_size=row.clip_size,
        snapshot_key=row.snapshot_key,
        snapshot_sha256=row.snapshot_sha256,
        case_ids=tuple(c["id"] for c in record["cases"]),
        record=record,
    )


def write_package(
    out: IO[bytes],
    db: Database,
    store: ObjectStore,
    key: SigningKey,
    src: Sources,
    by: Exporter,
) -> bytes:
    """Write the signed package of ``src`` into ``out``; returns the manifest's bytes.

    :class:`EvidenceMismatch` (audited, nothing usable left in ``out``) when a stored
    object no longer matches what was archived.
    """
    writer = pkg.PackageWriter(out)
    try:
        return _write(writer, db, store, key, src, by)
    except BaseException:
        writer.discard()
        raise


def _write(
    writer: pkg.PackageWriter,
    db: Database,
    store: ObjectStore,
    key: SigningKey,
    src: Sources,
    by: Exporter,
) -> bytes:
    try:
        _add_stored(writer, store, pkg.CLIP, src.clip_key, src.clip_sha256, src.clip_size)
        if src.snapshot_key:
            _add_stored(writer, store, pkg.SNAPSHOT, src.snapshot_key, src.snapshot_sha256)
    except EvidenceMismatch as err:
        log.error("incident %s: evidence export refused: %s", src.incident_id, err)
        with db.session() as session:
            why = {"why": str(err)}
            audit(session, by.actor, "export_refused", "incident", src.incident_id, why)
        raise
    with db.session() as session:
        detail = {"key_id": key.key_id, "clip_sha256": src.clip_sha256}
        audit(session, by.actor, "export", "incident", src.incident_id, detail)
        session.flush()
        trail = audit_trail(session, src.incident_id, src.case_ids)
    writer.add_json(pkg.INCIDENT, src.record)
    writer.add_json(pkg.AUDIT, trail)
    writer.add_bytes(pkg.README, VERIFY_TEXT.encode())
    fields = {
        "incident_id": src.incident_id,
        "installation": {"name": by.installation_name},
        "created_at": utcnow(),
        "exported_by": by.actor,
    }
    return writer.seal(fields, key.sign, key.public)


def _add_stored(
    writer: pkg.PackageWriter,
    store: ObjectStore,
    name: str,
    key: str,
    sha256: str | None,
    size: int | None = None,
) -> None:
    """Copy the object ``key`` into the package as ``name``; EvidenceMismatch unless its
    bytes have the recorded SHA-256 (and size). A missing recorded digest checks nothing."""
    try:
        with store.open(key) as stream:
            entry = writer.add_stream(name, stream)
    except ObjectNotFound as err:
        raise EvidenceMismatch(f"{name}: the stored object {key} is gone from the store") from err
    expected = (sha256 or entry.sha256).lower()
    if entry.sha256 != expected or (size is not None and entry.size != size):
        raise EvidenceMismatch(
            f"{name}: the stored object {key} no longer matches what was archived (recorded "
            f"SHA-256 {expected}, {size if size is not None else '?'} bytes; stored "
            f"{entry.sha256}, {entry.size} bytes); not exported"
        )


# --- the incident record ------------------------------------------------------------------


def incident_record(session: Session, row: Incident) -> dict[str, Any]:
    """The incident as a court reads it: what happened, where, seen by which camera, and
    what people did about it."""
    return {
        "incident": incident_fields(row)
        | {
            "peak_motion": row.peak_motion,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        },
        "clip": {
            "key": row.clip_key,
            "sha256": row.clip_sha256,
            "size": row.clip_size,
            "duration_s": row.clip_duration_s,
            "state": row.clip_state,
        },
        "snapshot": {"key": row.snapshot_key, "sha256": row.snapshot_sha256}
        if row.snapshot_key
        else None,
        "camera": _camera(session.get(Camera, row.camera_id)),
        "grid": _grid(session, row.grid_code),
        "history": [
            {"at": h.at, "actor": h.actor, "action": h.action, "note": h.note}
            for h in history(session, row.id)
        ],
        "cases": _cases(session, row.id),
    }


def _camera(cam: Camera | None) -> dict[str, Any] | None:
    """The camera's identity and place; never its URLs or credentials."""
    if cam is None:
        return None  # removed since; the incident keeps its camera_id
    device = (cam.onvif or {}).get("device") or {}
    return {
        "id": cam.id,
        "name": cam.name,
        "national_id": national_id(cam),
        "gb28181": cam.gb28181,
        "location": {"lat": cam.lat, "lon": cam.lon} if cam.lat is not None else None,
        "grid_code": cam.grid_code,
        "device": {k: device.get(k) for k in ("manufacturer", "model", "serial", "firmware")}
        if device
        else None,
    }


def _grid(session: Session, code: str | None) -> dict[str, Any] | None:
    """The incident's grid and the grids above it (community, town… city)."""
    grid = session.get(Grid, code) if code else None
    if grid is None:
        return {"code": code, "name": None, "level": None, "parents": []} if code else None
    parents: list[dict[str, Any]] = []
    parent = grid.parent_code
    while parent and len(parents) < _MAX_GRID_DEPTH:
        above = session.get(Grid, parent)
        if above is None:
            break
        parents.append({"code": above.code, "name": above.name, "level": above.level})
        parent = above.parent_code
    return {"code": grid.code, "name": grid.name, "level": grid.level, "parents": parents}


def _cases(session: Session, incident_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Case, CaseIncident)
        .join(CaseIncident, CaseIncident.case_id == Case.id)
        .where(CaseIncident.incident_id == incident_id)
        .order_by(CaseIncident.linked_at, Case.id)
    ).all()
    return [
        {
            "id": case.id,
            "external_ref": case.external_ref,
            "title": case.title,
            "kind": case.kind,
            "state": case.state,
            "status": case.status,
            "grid_code": case.grid_code,
            "linked_at": link.linked_at,
            "linked_by": link.linked_by,
        }
        for case, link in rows
    ]


def audit_trail(
    session: Session, incident_id: str, case_ids: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Every audit entry about the incident, oldest first: views, downloads, reviews,
    exports, and its cases being linked or unlinked."""
    about_incident = and_(
        AuditEntry.resource.in_(_INCIDENT_RESOURCES), AuditEntry.resource_id == incident_id
    )
    about_cases = and_(AuditEntry.resource == "case", AuditEntry.resource_id.in_(case_ids))
    query = select(AuditEntry).where(or_(about_incident, about_cases)).order_by(AuditEntry.id)
    # Entries of this transaction (the export itself) are written when it commits: last,
    # without an id yet.
    unwritten = [e for e in pending(session) if e.resource_id in (incident_id, *case_ids)]
    return [
        {
            "id": getattr(a, "id", None),
            "at": a.at,
            "actor": a.actor,
            "action": a.action,
            "resource": a.resource,
            "resource_id": a.resource_id,
            "detail": a.detail,
        }
        for a in [*session.scalars(query), *unwritten]
        if a.resource != "case" or (a.detail or {}).get("incident_id") in (None, incident_id)
    ]


VERIFY_TEXT = """\
Xueliang evidence package / 雪亮证据包

manifest.json lists every file of this package with its size and SHA-256; manifest.sig is
the Ed25519 signature of manifest.json's bytes by the installation's key (key_id in the
manifest = SHA-256 of the key's 32 raw bytes). public_key.pem is a copy of that key: it
proves the package is intact, not where it came from. To prove its origin, check it with
the key the installation publishes (GET /api/v1/evidence/key, `xueliang evidence key`).

With Xueliang:      xueliang evidence verify PACKAGE.zip --key INSTALLATION.pem
With standard tools (OpenSSL 3, coreutils), in the unzipped folder:
  openssl pkey -pubin -in INSTALLATION.pem -outform DER | tail -c 32 | sha256sum
      (must equal key_id in manifest.json)
  openssl pkeyutl -verify -pubin -inkey INSTALLATION.pem -rawin \\
      -in manifest.json -sigfile manifest.sig
      (must print: Signature Verified Successfully)
  python3 -c 'import json; [print(f["sha256"] + "  " + f["name"]) for f in \\
      json.load(open("manifest.json"))["files"]]' | sha256sum -c
      (every file: OK; and no file other than those, manifest.json, manifest.sig and
      public_key.pem may be in the package)
"""
