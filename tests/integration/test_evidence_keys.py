"""The installation's evidence key: one key however many processes create it at once, and
kept readable through a rotation of the credential key."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config.errors import ConfigError
from storage.db import Database
from storage.evidence_keys import CURRENT, create_if_missing, installation_key
from storage.evidence_package import key_id
from storage.models import EvidenceKey
from storage.secrets import SecretBox, new_key, rotate_stored_secrets
from tests.conftest import REPO, wait_for

PROCESSES = 4


def _keys(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(EvidenceKey)) or 0)


def test_a_creator_waiting_on_another_ends_with_the_others_key(db_url: str) -> None:
    """Deterministic race: one transaction has inserted the key and not committed; a second
    creator must wait for it, then use that key rather than a second one."""
    db = Database(db_url)
    db.migrate()
    box = SecretBox(new_key())
    got: list[str] = []
    with db.sessions() as holder, holder.begin():
        create_if_missing(holder, box)  # inserted, not committed
        held = holder.scalar(select(EvidenceKey.id).where(EvidenceKey.slot == CURRENT))
        other = threading.Thread(target=lambda: got.append(installation_key(db, box).key_id))
        other.start()
        time.sleep(1.0)
        assert other.is_alive(), "the second creator did not wait for the first"
    other.join(timeout=30)
    assert got == [held]
    assert _keys(db) == 1
    db.dispose()


#: One process of the installation: imports, says it is ready, waits for the start signal,
#: then asks for the key (so the processes reach the database together, not seconds apart).
CREATOR = """
import sys, time
from pathlib import Path
from storage.db import Database
from storage.evidence_keys import installation_key
from storage.secrets import SecretBox
url, key, ready, go = sys.argv[1:]
db = Database(url, pool_size=1)
db.engine.connect().close()
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
start = float(Path(go).read_text())
while time.time() < start:  # the same instant in every process (no sleep's granularity)
    pass
print(installation_key(db, SecretBox(key)).key_id)
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_processes_creating_the_key_at_once_end_with_one(shared_db: str, tmp_path: Path) -> None:
    """Real processes on one PostgreSQL database ask for the key at the same moment: all
    get the same key and one row exists."""
    db = Database(shared_db)
    db.migrate()
    box_key, go = new_key(), tmp_path / "go"
    ready = [tmp_path / f"ready{n}" for n in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATOR, shared_db, box_key, str(r), str(go)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in ready
    ]
    wait_for(lambda: all(r.exists() for r in ready), 60, "the processes to be ready", 0.05)
    (tmp_path / "go.tmp").write_text(str(time.time() + 0.5))
    (tmp_path / "go.tmp").rename(go)  # atomic: no process reads it half written
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, outputs
    ids = {out.strip() for out, _ in outputs}
    assert len(ids) == 1, outputs
    with db.session() as session:
        assert [row.id for row in session.scalars(select(EvidenceKey))] == list(ids)
    db.dispose()


def test_rotating_the_credential_key_keeps_the_signing_key(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()
    old, new = new_key(), new_key()
    key = installation_key(db, SecretBox(old))
    with db.session() as session:
        stored = session.scalars(select(EvidenceKey)).one().private_key_enc
        assert key.private.private_bytes_raw().hex() not in stored
        report = rotate_stored_secrets(session, SecretBox(new, [old]))
    assert report.rotated == 1 and not report.unreadable
    again = installation_key(db, SecretBox(new))  # the new key alone opens it
    assert again.key_id == key.key_id == key_id(key.public)
    with pytest.raises(ConfigError, match="cannot decrypt the evidence signing key"):
        installation_key(db, SecretBox(old))
    db.dispose()
