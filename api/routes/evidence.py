"""Evidence packages: an incident's clip, snapshot, record and audit trail in one ZIP with
a manifest signed by the installation's key, checkable without this server
(``xueliang evidence verify``; docs/security.md)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from api.deps import ServicesDep, require
from api.openapi import error
from api.scope import check_visible, visible_grid_codes
from runtime.services import Services
from storage import evidence
from storage.evidence_keys import installation_key, public_key
from storage.evidence_package import ALGORITHM
from storage.models import Incident
from storage.tokens import ROLES, Principal

router = APIRouter(tags=["evidence"])
Operator = Annotated[Principal, Depends(require("operator"))]
Anyone = Annotated[Principal, Depends(require(*ROLES))]
CHUNK = 256 * 1024


class EvidenceKeyOut(BaseModel):
    key_id: str = Field(description="SHA-256 (hex) of the key's 32 raw bytes; manifests name it.")
    algorithm: str = Field(description="Always `Ed25519`.")
    public_key_pem: str = Field(description="SubjectPublicKeyInfo PEM (for openssl).")
    public_key_base64: str = Field(description="The 32 raw bytes, base64.")


@router.get("/evidence/key", response_model=EvidenceKeyOut)
def get_evidence_key(services: ServicesDep, _who: Anyone) -> EvidenceKeyOut:
    """The installation's public key that signs evidence packages (created on first use)."""
    key = public_key(services.db, services.secrets)
    return EvidenceKeyOut(
        key_id=key.key_id,
        algorithm=ALGORITHM,
        public_key_pem=key.pem,
        public_key_base64=key.base64,
    )


@router.get(
    "/incidents/{incident_id}/evidence",
    response_class=Response,
    responses={
        200: {
            "description": "The evidence package (ZIP).",
            "content": {"application/zip": {}},
        },
        404: error("No such incident (or outside the caller's grid scope)."),
        409: error(
            "The clip is not archived yet, or the stored clip or snapshot no longer matches "
            "the SHA-256 recorded when it was archived."
        ),
    },
)
def export_evidence(incident_id: str, services: ServicesDep, who: Operator) -> Response:
    """The incident's evidence package: clip, snapshot, incident record, audit trail and a
    manifest of their SHA-256 signed with the installation's Ed25519 key. Audited
    (``export``). Built in a temporary file in the data dir, then streamed."""
    with services.db.session() as session:
        src = evidence.sources(session, _visible(session, incident_id, who))
    key = installation_key(services.db, services.secrets)
    out = _temporary(services)
    try:
        by = evidence.Exporter(who.name, services.settings.evidence.installation_name)
        evidence.write_package(out, services.db, services.objects, key, src, by)
        size = out.seek(0, 2)
        out.seek(0)
    except BaseException:
        out.close()
        raise
    return StreamingResponse(
        _chunks(out),
        media_type="application/zip",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="evidence-{incident_id}.zip"',
            "X-Evidence-Key-Id": key.key_id,
        },
        background=BackgroundTask(out.close),
    )


def _visible(session: Session, incident_id: str, who: Principal) -> Incident:
    row = session.get(Incident, incident_id)
    not_found = f"no incident {incident_id}"
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, not_found)
    check_visible(visible_grid_codes(session, who), row.grid_code, not_found)
    return row


def _temporary(services: Services) -> IO[bytes]:
    # Unnamed (O_TMPFILE where available): nothing is left behind if the process dies. In
    # the data dir, not /tmp, which may be RAM and too small for a long clip.
    where = services.settings.data_dir
    where.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=where, prefix=".evidence-")


def _chunks(src: IO[bytes]) -> Iterator[bytes]:
    while chunk := src.read(CHUNK):
        yield chunk
