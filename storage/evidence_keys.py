"""The installation's evidence key: the Ed25519 key that signs evidence packages.

Every process of an installation (several share one database) must sign with the same key,
so the key lives in the database, in ``evidence_keys``: created by whichever process first
needs it, its private half encrypted with the camera-credential key (:mod:`storage.secrets`,
which every process of an installation already shares; ``xueliang secrets rotate``
re-encrypts it with the rest). Two processes creating it at once: the row's unique ``slot``
lets exactly one insert win, and both then read the winner's key.

Losing the credential key loses the signing key (a new one would be needed, with a new key
id); packages signed before stay verifiable with the old public key, which is kept in the
row even when retired.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from config.errors import ConfigError
from storage.db import Database
from storage.evidence_package import key_id, public_pem
from storage.models import EvidenceKey
from storage.secrets import SecretBox

log = logging.getLogger(__name__)

CURRENT = "current"


@dataclass(frozen=True)
class SigningKey:
    """The installation's key, opened: signs manifests, shows its public half."""

    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self.private.sign(data)


@dataclass(frozen=True)
class PublicKey:
    """What anyone may know of the installation's key."""

    key_id: str
    pem: str
    base64: str


def installation_key(db: Database, box: SecretBox) -> SigningKey:
    """The installation's current signing key, created on first use (safe when several
    processes ask at once: one key results)."""
    with db.session() as session:
        row = _current(session)
    if row is None:
        with db.session() as session:
            create_if_missing(session, box)
            row = _current(session)
    assert row is not None  # inserted, or another process's insert won
    return _open(row, box)


def public_key(db: Database, box: SecretBox) -> PublicKey:
    """The public half of :func:`installation_key`, as PEM and raw base64, with its id."""
    key = installation_key(db, box)
    raw = key.public.public_bytes_raw()
    return PublicKey(key.key_id, public_pem(key.public), base64.b64encode(raw).decode())


def _current(session: Session) -> EvidenceKey | None:
    return session.scalar(select(EvidenceKey).where(EvidenceKey.slot == CURRENT))


def create_if_missing(session: Session, box: SecretBox) -> None:
    """Insert a new current key unless one exists (the caller's transaction commits it)."""
    # The INSERT is the transaction's first statement: on PostgreSQL a concurrent insert of
    # the same slot waits for the other to commit, then does nothing (READ COMMITTED lets
    # the SELECT after it see the winner); on SQLite it takes the write lock first.
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    insert_ = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {
        "id": key_id(public),
        "slot": CURRENT,
        "public_key": base64.b64encode(public.public_bytes_raw()).decode(),
        "private_key_enc": box.encrypt(base64.b64encode(private.private_bytes_raw()).decode()),
    }
    stmt = insert_(EvidenceKey).values(**values).on_conflict_do_nothing()
    if session.execute(stmt.returning(EvidenceKey.id)).first() is not None:
        log.info("created the installation's evidence signing key %s", values["id"])


def _open(row: EvidenceKey, box: SecretBox) -> SigningKey:
    try:
        raw = base64.b64decode(box.decrypt(row.private_key_enc))
    except ConfigError as err:
        raise ConfigError(
            f"cannot decrypt the evidence signing key {row.id}: it was stored with another "
            "secrets.camera_key (every process of an installation needs the same key; add "
            "the old one to secrets.previous_keys)"
        ) from err
    private = Ed25519PrivateKey.from_private_bytes(raw)
    if key_id(private.public_key()) != row.id:
        raise ConfigError(f"the stored evidence signing key does not match its id {row.id}")
    return SigningKey(private)
