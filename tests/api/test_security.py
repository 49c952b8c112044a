"""The security review's claims (docs/security.md), each checked against real peers.

Tokens hashed and revoked on every node; camera credentials encrypted at rest with key
rotation; presigned URLs short-lived (SeaweedFS); the audit log append-only in the database
(SQLite and PostgreSQL); rate limits on failed authentication and token creation; CORS;
security headers.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import DBAPIError

from api.app import create_app
from api.ratelimit import client_key
from config.errors import ConfigError
from config.settings import Settings, load_settings
from runtime.retention import RetentionWorker
from runtime.services import Services
from storage.audit import audit
from storage.db import MIGRATIONS, Database
from storage.incidents import ArchivedClip, NewIncident, create_incident, mark_archived
from storage.models import ApiToken, AuditEntry, Base, Camera, RateLimit, utcnow
from storage.ratelimit import Limit, purge, retry_after, spend
from storage.secrets import (
    SecretBox,
    load_key_file,
    load_or_create_key,
    new_key,
    rotate_stored_secrets,
)
from storage.tokens import hash_token
from tests.api.test_auth import _api_routes
from tests.peers.seaweedfs import SeaweedS3, unique_bucket

BOOT = "xl_security_review_bootstrap_0001"
ADMIN = {"Authorization": f"Bearer {BOOT}"}
PASSWORD = "Cam-pw-7f3a9c"
#: The webhook stored with the credentials points at a closed port on loopback.
LOOPBACK_HOOKS = {"allow": ["127.0.0.0/8"]}
ONVIF_PASSWORD = "Onvif-pw-51e2d8"
HOOK_SECRET = "hook-secret-c0ffee"


@contextmanager
def serving(settings: Settings, role: str = "api", **client: Any) -> Iterator[TestClient]:
    """The app (its lifespan run) behind a TestClient."""
    with TestClient(create_app(settings, role=role), **client) as c:
        yield c


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def run_cli(
    args: list[str], data_dir: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "XUELIANG_DATA_DIR": str(data_dir), **env}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
        check=False,
    )


def all_stored_text(db: Database) -> str:
    """Every row of every table, as text: what someone with a copy of the database sees."""
    import storage.grid_models  # noqa: F401  (all tables registered)

    out = []
    with db.session() as session:
        for table in Base.metadata.sorted_tables:
            out += [repr(tuple(row)) for row in session.execute(select(table))]
    return "\n".join(out)


# --- 1. API tokens --------------------------------------------------------------------------


def test_cli_token_is_stored_only_as_its_hash(db_url: str, tmp_path: Path) -> None:
    result = run_cli(
        ["token", "create", "--role", "operator", "--name", "desk-9"],
        tmp_path / "data",
        {"XUELIANG_DATABASE__URL": db_url},
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    db = Database(db_url)
    try:
        with db.session() as session:
            row = session.scalars(select(ApiToken).where(ApiToken.name == "desk-9")).one()
            assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        stored = all_stored_text(db)
    finally:
        db.dispose()
    assert token not in stored and token[3:] not in stored


def test_api_token_is_shown_once_and_stored_hashed(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database={"url": db_url}, auth={"bootstrap_token": BOOT})
    with serving(settings) as client:
        created = client.post("/api/v1/tokens", json={"role": "integrator"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        assert created.headers["cache-control"] == "no-store"
        listed = client.get("/api/v1/tokens", headers=ADMIN).text
        assert token not in listed
        db = services_of(client).db
        with db.session() as session:
            row = session.get_one(ApiToken, created.json()["id"])
            assert row.token_hash == hash_token(token)
        assert token not in all_stored_text(db)


def test_revoked_token_is_refused_at_once_on_every_node(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database={"url": db_url}, auth={"bootstrap_token": BOOT})
    with serving(settings) as node_a, serving(settings) as node_b:
        assert services_of(node_a) is not services_of(node_b)  # two processes' worth
        created = node_a.post("/api/v1/tokens", json={"role": "operator"}, headers=ADMIN).json()
        who = {"Authorization": f"Bearer {created['token']}"}
        assert node_b.get("/api/v1/incidents", headers=who).status_code == 200
        assert node_a.delete(f"/api/v1/tokens/{created['id']}", headers=ADMIN).status_code == 204
        # No cache anywhere: the very next request on the other node is refused.
        assert node_b.get("/api/v1/incidents", headers=who).status_code == 401
        assert node_a.get("/api/v1/incidents", headers=who).status_code == 401


def test_bootstrap_token_must_be_long() -> None:
    with pytest.raises(ConfigError, match="at least 24 characters"):
        load_settings(environ={"XUELIANG_AUTH__BOOTSTRAP_TOKEN": "admin123"})
    assert load_settings(environ={"XUELIANG_AUTH__BOOTSTRAP_TOKEN": BOOT}).auth.bootstrap_token


# --- 2. camera credentials at rest ------------------------------------------------------------


def _store_credentials(client: TestClient) -> str:
    """A camera (main and sub URL with a password, and an ONVIF login) and a webhook."""
    cam = client.post(
        "/api/v1/cameras",
        json={
            "name": "gate",
            "rtsp_url": f"rtsp://admin:{PASSWORD}@127.0.0.1:1/main",
            "substream_url": f"rtsp://admin:{PASSWORD}@127.0.0.1:1/sub",
        },
        headers=ADMIN,
    )
    assert cam.status_code == 201, cam.text
    hook = client.post(
        "/api/v1/subscriptions",
        json={"url": "http://127.0.0.1:1/hook", "secret": HOOK_SECRET},
        headers=ADMIN,
    )
    assert hook.status_code == 201, hook.text
    services = services_of(client)
    # The ONVIF login as POST /cameras stores it (a real device is needed to probe one).
    with services.db.session() as session:
        row = session.get_one(Camera, cam.json()["id"])
        row.onvif = {
            "host": "127.0.0.1",
            "port": 1,
            "username": "admin",
            "password_enc": services.secrets.encrypt(ONVIF_PASSWORD),
        }
    camera_id: str = cam.json()["id"]
    return camera_id


def _ciphertexts(db: Database) -> dict[str, str]:
    with db.session() as session:
        cam = session.execute(text("SELECT id, main_url_enc, sub_url_enc FROM cameras")).one()
        onvif = session.get_one(Camera, cam.id).onvif or {}
        hook = session.execute(text("SELECT secret_enc FROM subscriptions")).scalar_one()
    return {
        "main": cam.main_url_enc,
        "sub": cam.sub_url_enc,
        "onvif": onvif["password_enc"],
        "hook": hook,
    }


def _plaintexts(box: SecretBox, enc: dict[str, str]) -> dict[str, str]:
    return {name: box.decrypt(token) for name, token in enc.items()}


EXPECTED = {
    "main": f"rtsp://admin:{PASSWORD}@127.0.0.1:1/main",
    "sub": f"rtsp://admin:{PASSWORD}@127.0.0.1:1/sub",
    "onvif": ONVIF_PASSWORD,
    "hook": HOOK_SECRET,
}


def test_no_credential_is_stored_in_plaintext(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(
        database={"url": db_url}, auth={"bootstrap_token": BOOT}, egress=LOOPBACK_HOOKS
    )
    with serving(settings) as client:
        _store_credentials(client)
        db = services_of(client).db
        stored = all_stored_text(db)
        for secret in (PASSWORD, ONVIF_PASSWORD, HOOK_SECRET):
            assert secret not in stored
        assert _plaintexts(services_of(client).secrets, _ciphertexts(db)) == EXPECTED
    if db_url.startswith("sqlite"):
        # Nor in the file's free pages or write-ahead log.
        path = Path(db_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert PASSWORD.encode() not in raw and HOOK_SECRET.encode() not in raw


def test_key_file_is_created_private_and_a_readable_one_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data" / "secret.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key  # kept, not replaced
    SecretBox(key)  # a valid Fernet key
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="storage.secrets"):
        assert load_key_file(path) == [key]
    assert "chmod 600" in caplog.text


@pytest.mark.slow
def test_rotation_re_encrypts_every_credential_end_to_end(
    make_settings: Callable[..., Settings], db_url: str, tmp_path: Path
) -> None:
    old, new, stranger = new_key(), new_key(), new_key()
    data = tmp_path / "data"

    def settings(current: str, *previous: str) -> Settings:
        secrets: dict[str, Any] = {"camera_key": current, "previous_keys": list(previous)}
        return make_settings(
            database={"url": db_url},
            auth={"bootstrap_token": BOOT},
            secrets=secrets,
            egress=LOOPBACK_HOOKS,
        )

    def rotate(current: str, *previous: str) -> subprocess.CompletedProcess[str]:
        env = {"XUELIANG_DATABASE__URL": db_url, "XUELIANG_SECRETS__CAMERA_KEY": current}
        if previous:
            env["XUELIANG_SECRETS__PREVIOUS_KEYS"] = ",".join(previous)
        return run_cli(["secrets", "rotate"], data, env)

    # The service runs as in step 1 of the procedure (docs/security.md): the new key is
    # known to it as a previous key before any secret is encrypted with it.
    with serving(settings(old, new)) as client:
        camera_id = _store_credentials(client)
        db = services_of(client).db
        before = _ciphertexts(db)

        # A key that opens nothing: refused, rows named, nothing changed.
        refused = rotate(stranger)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"cameras/{camera_id}.main_url_enc" in refused.stderr
        assert "subscriptions/" in refused.stderr and "Traceback" not in refused.stderr
        assert _ciphertexts(db) == before

        done = rotate(new, old)
        assert done.returncode == 0, done.stderr
        assert "re-encrypted 4 stored secret(s)" in done.stdout
        assert "remove secrets.previous_keys" in done.stdout
        after = _ciphertexts(db)
        assert all(after[name] != before[name] for name in before)
        assert _plaintexts(SecretBox(new), after) == EXPECTED
        assert _plaintexts(services_of(client).secrets, after) == EXPECTED  # still running
        with pytest.raises(ConfigError):
            SecretBox(old).decrypt(after["main"])
        with db.session() as session:
            entry = session.scalars(
                select(AuditEntry).where(AuditEntry.resource == "secrets")
            ).one()
            assert entry.action == "rotate" and entry.detail == {"rotated": 4, "current": 0}
            assert entry.actor.startswith("cli:")
            onvif = session.get_one(Camera, camera_id).onvif or {}
            assert onvif["host"] == "127.0.0.1" and onvif["username"] == "admin"

        again = rotate(new, old)
        assert again.returncode == 0 and "re-encrypted 0 stored secret(s)" in again.stdout
        assert "(4 already were)" in again.stdout

    # The service with the new key alone reads everything (and keeps a '***' password).
    with serving(settings(new)) as client:
        patched = client.patch(
            f"/api/v1/cameras/{camera_id}",
            json={"rtsp_url": "rtsp://admin:***@127.0.0.1:2/main"},
            headers=ADMIN,
        )
        assert patched.status_code == 200, patched.text
        enc = _ciphertexts(services_of(client).db)
        assert SecretBox(new).decrypt(enc["main"]) == f"rtsp://admin:{PASSWORD}@127.0.0.1:2/main"


def test_key_file_rotation_with_a_new_key(
    make_settings: Callable[..., Settings], db_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = make_settings(
        database={"url": db_url}, auth={"bootstrap_token": BOOT}, egress=LOOPBACK_HOOKS
    )
    with serving(settings) as client:
        _store_credentials(client)
        db = services_of(client).db
    key_file = settings.camera_key_file
    (old,) = load_key_file(key_file)
    before = _ciphertexts(db)

    env = {"XUELIANG_DATABASE__URL": db_url}
    done = run_cli(["secrets", "rotate", "--new-key"], data, env)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 4 stored secret(s)" in done.stdout
    keys = load_key_file(key_file)
    assert len(keys) == 1 and keys[0] != old  # the old key is gone from the file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    after = _ciphertexts(db)
    assert _plaintexts(SecretBox(keys[0]), after) == EXPECTED
    assert all(after[name] != before[name] for name in before)
    db.dispose()

    with_setting = {**env, "XUELIANG_SECRETS__CAMERA_KEY": new_key()}
    refused = run_cli(["secrets", "rotate", "--new-key"], data, with_setting)
    assert refused.returncode == 2 and "secrets.camera_key is set" in refused.stderr
    assert load_key_file(key_file) == keys


def test_rotation_locks_the_rows_it_rewrites(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    """A camera edited during a rotation waits for it (no lost update, no stale key).

    The rows are locked when read, before any is rewritten: here none needs rewriting (all
    are current already), and an edit must wait all the same.
    """
    old = new_key()
    settings = make_settings(
        database={"url": db_url},
        auth={"bootstrap_token": BOOT},
        secrets={"camera_key": old},
        egress=LOOPBACK_HOOKS,
    )
    with serving(settings) as client:
        camera_id = _store_credentials(client)
        db = services_of(client).db
    other = create_engine(db_url, connect_args={"timeout": 0} if "sqlite" in db_url else {})
    edit = text("UPDATE cameras SET name = 'edited' WHERE id = :id")
    try:
        with db.session() as session:
            result = rotate_stored_secrets(session, SecretBox(old))
            assert (result.rotated, result.current, result.unreadable) == (0, 4, [])
            with pytest.raises(DBAPIError), other.begin() as conn:
                if other.dialect.name == "postgresql":
                    conn.execute(text("SET LOCAL lock_timeout = '200ms'"))
                conn.execute(edit, {"id": camera_id})
        with other.begin() as conn:  # committed: the edit goes through
            conn.execute(edit, {"id": camera_id})
    finally:
        other.dispose()
        db.dispose()


def test_secret_settings_take_previous_keys_from_the_environment() -> None:
    a, b, c = new_key(), new_key(), new_key()
    s = load_settings(
        environ={"XUELIANG_SECRETS__CAMERA_KEY": a, "XUELIANG_SECRETS__PREVIOUS_KEYS": f"{b},{c}"}
    )
    assert [k.get_secret_value() for k in s.secrets.previous_keys] == [b, c]
    assert c not in repr(s)
    token = SecretBox(c).encrypt("x")
    box = SecretBox(a, [b, c])
    assert box.decrypt(token) == "x" and not box.is_current(token)
    assert box.is_current(box.encrypt("y"))  # encrypts with the current key
    with pytest.raises(ConfigError, match="previous_keys"):
        SecretBox(a, ["not a key"])


# --- 3. presigned URLs ------------------------------------------------------------------------


def s3_settings(
    make_settings: Callable[..., Settings], seaweedfs: SeaweedS3, **storage: Any
) -> Settings:
    seaweedfs.ensure_running()
    s3 = {
        "endpoint": seaweedfs.endpoint,
        "access_key": seaweedfs.credentials.access_key,
        "secret_key": seaweedfs.credentials.secret_key,
        "bucket": unique_bucket(),
        "region": "us-east-1",
    }
    return make_settings(
        auth={"bootstrap_token": BOOT}, storage={"backend": "s3", "s3": s3, **storage}
    )


def archived_incident(services: Services, clip: bytes = b"\x00mp4 bytes") -> str:
    with services.tx() as session:
        row = create_incident(session, NewIncident("cam_s", None, "motion", utcnow()))
        key = f"clips/cam_s/x/{row.id}.mp4"
        info = services.objects.put_bytes(key, clip, content_type="video/mp4")
        mark_archived(session, row.id, ArchivedClip(key, info.sha256, info.size, 1.0, None, None))
        incident_id: str = row.id
        return incident_id


def test_clip_redirects_to_a_url_presigned_for_presign_s(
    make_settings: Callable[..., Settings], seaweedfs: SeaweedS3
) -> None:
    settings = s3_settings(make_settings, seaweedfs, presign_s=10)
    with serving(settings) as client:
        incident_id = archived_incident(services_of(client), b"evidence bytes")
        r = client.get(
            f"/api/v1/incidents/{incident_id}/clip", headers=ADMIN, follow_redirects=False
        )
        assert r.status_code == 307, r.text
        url = r.headers["location"]
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["10"]
        assert urlsplit(url).netloc == seaweedfs.endpoint
        assert httpx.get(url).content == b"evidence bytes"
        # The link a browser page uses instead of following the redirect: same lifetime.
        before = utcnow()
        link = client.get(f"/api/v1/incidents/{incident_id}/clip/link", headers=ADMIN).json()
        assert parse_qs(urlsplit(link["url"]).query)["X-Amz-Expires"] == ["10"]
        expires_at = datetime.fromisoformat(link["expires_at"])
        assert before + timedelta(seconds=10) <= expires_at <= utcnow() + timedelta(seconds=10)
        assert httpx.get(link["url"]).content == b"evidence bytes"
        trail = client.get("/api/v1/audit", params={"resource_id": incident_id}, headers=ADMIN)
        assert [a["action"] for a in trail.json()] == ["link", "download"]


def test_local_store_links_point_back_to_the_api(make_settings: Callable[..., Settings]) -> None:
    with serving(make_settings(auth={"bootstrap_token": BOOT})) as client:
        incident_id = archived_incident(services_of(client))
        link = client.get(f"/api/v1/incidents/{incident_id}/clip/link", headers=ADMIN).json()
        assert link == {"url": f"/api/v1/incidents/{incident_id}/clip", "expires_at": None}
        assert client.get(link["url"]).status_code == 401  # the bearer token is needed


def test_an_expired_presigned_url_is_refused(seaweedfs: SeaweedS3) -> None:
    seaweedfs.ensure_running()
    store = seaweedfs.store()
    store.put_bytes("clips/expiring.mp4", b"soon gone")
    url = store.presigned_get_url("clips/expiring.mp4", timedelta(seconds=1))
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["1"]
    deadline = time.monotonic() + 30
    answer = httpx.get(url)
    while answer.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = httpx.get(url)
    assert answer.status_code == 403 and "expired" in answer.text.lower(), answer.text
    # Not the object's fault: a fresh URL still works.
    fresh = store.presigned_get_url("clips/expiring.mp4", timedelta(seconds=60))
    assert httpx.get(fresh).content == b"soon gone"


@pytest.mark.parametrize(("value", "ok"), [(9, False), (10, True), (300, True), (86401, False)])
def test_presign_lifetime_is_bounded(value: int, ok: bool) -> None:
    env = {"XUELIANG_STORAGE__PRESIGN_S": str(value)}
    if ok:
        assert load_settings(environ=env).storage.presign_s == value
    else:
        with pytest.raises(ConfigError, match=r"storage\.presign_s"):
            load_settings(environ=env)
    assert load_settings(environ={}).storage.presign_s == 300


# --- 4. append-only audit log ----------------------------------------------------------------


def test_the_database_refuses_to_change_or_delete_audit_rows(db_url: str) -> None:
    db = Database(db_url)
    try:
        db.migrate()
        with db.session() as session:
            audit(session, "op-1", "download", "clip", "inc_1", {"key": "k"})
        refused = [
            "UPDATE audit_log SET actor = 'someone else'",
            "DELETE FROM audit_log",
        ]
        if db.dialect == "postgresql":
            refused.append("TRUNCATE audit_log")
        for statement in refused:
            with pytest.raises(DBAPIError, match="append-only"), db.session() as session:
                session.execute(text(statement))
        with pytest.raises(DBAPIError, match="append-only"), db.session() as session:
            session.delete(session.scalars(select(AuditEntry)).one())  # the ORM way too
        with db.session() as session:  # appending still works
            audit(session, "op-2", "download", "clip", "inc_1")
        with db.session() as session:
            rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
            assert [(r.actor, r.detail) for r in rows] == [("op-1", {"key": "k"}), ("op-2", {})]
    finally:
        db.dispose()


def test_audit_triggers_come_and_go_with_the_migration(db_url: str) -> None:
    db = Database(db_url)
    try:
        db.migrate()
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
        with db.session() as session:  # the schema of 0004: no hash chain yet
            session.execute(
                text(
                    "INSERT INTO audit_log (at, actor, action, resource, resource_id, detail) "
                    "VALUES (:at, 'op', 'read', 'clip', 'i', '{}')"
                ),
                {"at": utcnow().replace(tzinfo=None)},
            )
            session.execute(text("UPDATE audit_log SET actor = 'x'"))  # no trigger now
        db.migrate()
        with pytest.raises(DBAPIError, match="append-only"), db.session() as session:
            session.execute(text("DELETE FROM audit_log"))
        assert "audit_log" in inspect(db.engine).get_table_names()
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_role_that_does_not_own_the_tables_cannot_undo_the_guard(pg_database: str) -> None:
    """docs/security.md's recipe: migrate as the owner, serve as a role with plain DML
    rights minus UPDATE/DELETE/TRUNCATE on audit_log; that role can neither rewrite audit
    rows nor disable or drop the triggers, and its start-up migration is a no-op."""
    suffix = uuid.uuid4().hex[:8]
    schema, role, password = f"t_{suffix}", f"xl_app_{suffix}", uuid.uuid4().hex
    admin = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    owner_url = f"{pg_database}?options=-csearch_path%3D{schema}"
    app_url = owner_url.replace("://postgres:postgres@", f"://{role}:{password}@", 1)
    assert app_url != owner_url, "PG_ADMIN_URL is expected to log in as postgres:postgres"
    grants = [
        f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'",
        f'CREATE SCHEMA "{schema}"',
    ]
    after_migration = [
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"',
        f'REVOKE UPDATE, DELETE, TRUNCATE ON "{schema}".audit_log FROM "{role}"',
    ]
    owner = Database(owner_url)
    app = Database(app_url)
    try:
        with admin.connect() as conn:
            for statement in grants:
                conn.execute(text(statement))
        owner.migrate()
        with admin.connect() as conn:
            for statement in after_migration:
                conn.execute(text(statement))
        app.migrate()  # at head already: nothing to create
        with app.session() as session:
            audit(session, "op", "download", "clip", "inc_9")
        for statement in [
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
            "DROP TRIGGER audit_log_no_update_delete ON audit_log",
        ]:
            refused = pytest.raises(DBAPIError, match=r"permission denied|must be owner")
            with refused, app.session() as session:
                session.execute(text(statement))
        with app.session() as session:
            assert session.scalars(select(AuditEntry.actor)).all() == ["op"]
    finally:
        app.dispose()
        owner.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def test_retention_still_sweeps_with_an_append_only_audit_log(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    settings = make_settings(database={"url": db_url}, auth={"bootstrap_token": BOOT})
    with serving(settings) as client:
        services = services_of(client)
        incident_id = archived_incident(services)
        clip = client.get(f"/api/v1/incidents/{incident_id}/clip", headers=ADMIN)
        assert clip.status_code == 200  # audited
        later = utcnow() + timedelta(days=settings.recording.retention_days + 1)
        assert RetentionWorker(services).sweep(now=later) == 1
        shown = client.get(f"/api/v1/incidents/{incident_id}", headers=ADMIN).json()
        assert shown["clip"]["state"] == "expired"
        trail = client.get(
            "/api/v1/audit", params={"resource_id": incident_id}, headers=ADMIN
        ).json()
        assert [a["action"] for a in trail] == ["download"]  # evidence of access stays


# --- 5. rate limits ---------------------------------------------------------------------------


def test_wrong_tokens_from_one_address_get_429_with_retry_after(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        auth={"bootstrap_token": BOOT},
        security={"auth_failures": 3, "auth_failures_window_s": 300},
    )
    wrong = {"Authorization": "Bearer xl_guess"}
    with serving(settings) as client:
        for _ in range(10):  # no token at all guesses nothing: not counted
            assert client.get("/api/v1/incidents").status_code == 401
        for _ in range(3):
            assert client.get("/api/v1/incidents", headers=wrong).status_code == 401
        limited = client.get("/api/v1/incidents", headers=wrong)
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= 100  # one attempt back: 300 s / 3
        assert "wrong token" in limited.json()["detail"]
        # The right token from that address waits too: answers must not confirm a guess.
        assert client.get("/api/v1/incidents", headers=ADMIN).status_code == 429
        assert client.get("/healthz").status_code == 200  # operations endpoints stay open
        other = TestClient(client.app, client=("203.0.113.7", 50000))
        assert other.get("/api/v1/incidents", headers=ADMIN).status_code == 200


def test_token_creation_is_limited_per_address(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(auth={"bootstrap_token": BOOT}, security={"token_creations": 2})
    with serving(settings) as client:
        body = {"role": "operator"}
        assert client.post("/api/v1/tokens", json={"role": "x"}, headers=ADMIN).status_code == 422
        for _ in range(2):
            assert client.post("/api/v1/tokens", json=body, headers=ADMIN).status_code == 201
        limited = client.post("/api/v1/tokens", json=body, headers=ADMIN)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "tokens created" in limited.json()["detail"]
        assert client.get("/api/v1/tokens", headers=ADMIN).status_code == 200
        assert len(client.get("/api/v1/tokens", headers=ADMIN).json()) == 2


def test_the_allowance_comes_back_and_the_table_stays_bounded(db_url: str) -> None:
    """The buckets in the database refill at the configured rate; full ones are purged and
    at most ``max_clients`` are kept (the least recently spent forgotten first)."""
    limit = Limit("t", attempts=2, window_s=60, max_clients=100)
    db = Database(db_url)
    db.migrate()
    try:
        with db.session() as session:
            assert spend(session, limit, "a", 1000.0) is True  # a fresh bucket: purge due
            assert spend(session, limit, "a", 1000.0) is False
            assert retry_after(session, limit, "a", 1000.0) == pytest.approx(30)
            assert retry_after(session, limit, "a", 1029.0) == pytest.approx(1)
            assert retry_after(session, limit, "a", 1030.0) == 0
            assert retry_after(session, limit, "a", 1999.0) == 0  # full, not beyond
            for i in range(250):
                spend(session, limit, f"client-{i}", 1040.0 + i)
        with db.session() as session:
            assert purge(session, limit, 1100.0) == 1 + 150  # "a" was full again at 1060
        with db.session() as session:
            rows = session.scalars(select(RateLimit.client).where(RateLimit.scope == "t")).all()
            assert sorted(rows) == sorted(f"client-{i}" for i in range(150, 250))
            assert retry_after(session, limit, "client-249", 1289.0) == 0
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.10", "192.0.2.10"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.10", "192.0.2.10"),
        ("testclient", "testclient"),
    ],
)
def test_addresses_are_counted_per_host_or_ipv6_64(host: str, key: str) -> None:
    assert client_key({"client": (host, 1)}) == key


def test_trusted_proxies_are_addresses_or_networks_and_none_by_default() -> None:
    assert Settings().server.trusted_proxies == ()  # X-Forwarded-For believed from nobody
    env = {"XUELIANG_SERVER__TRUSTED_PROXIES": "10.0.0.5, 192.168.0.0/24,::1"}
    proxies = load_settings(environ=env).server.trusted_proxies
    assert proxies == ("10.0.0.5", "192.168.0.0/24", "::1")
    with pytest.raises(ConfigError, match="trusted_proxies") as err:
        load_settings(environ={"XUELIANG_SERVER__TRUSTED_PROXIES": "nginx.local"})
    assert "not an IP address or network" in str(err.value)


def test_default_allowance_leaves_room_for_the_route_by_route_auth_test(
    make_settings: Callable[..., Settings],
) -> None:
    """tests/api/test_auth.py sends one wrong token to every API route from one client."""
    with serving(make_settings()) as client:
        routes = len(_api_routes(client))
    assert Settings().security.auth_failures >= 2 * routes


def test_the_api_documents_429_with_retry_after(make_settings: Callable[..., Settings]) -> None:
    with serving(make_settings()) as client:
        paths = client.get("/openapi.json").json()["paths"]
    for path, method in [("/api/v1/incidents", "get"), ("/api/v1/tokens", "post")]:
        answer = paths[path][method]["responses"]["429"]
        assert "Retry-After" in answer["headers"], (path, method)
    assert "429" not in paths["/healthz"]["get"]["responses"]


# --- 6. CORS ----------------------------------------------------------------------------------

PREFLIGHT = {
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}


def test_no_cross_origin_access_by_default(make_settings: Callable[..., Settings]) -> None:
    with serving(make_settings(auth={"bootstrap_token": BOOT})) as client:
        r = client.options(
            "/api/v1/incidents", headers={"Origin": "https://grid.example", **PREFLIGHT}
        )
        assert "access-control-allow-origin" not in r.headers
        r = client.get("/api/v1/incidents", headers={"Origin": "https://grid.example", **ADMIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_listed_origins_only(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        auth={"bootstrap_token": BOOT}, security={"cors_origins": ["https://grid.example"]}
    )
    with serving(settings) as client:
        ok = client.options(
            "/api/v1/incidents", headers={"Origin": "https://grid.example", **PREFLIGHT}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://grid.example"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in ok.headers
        bad = client.options(
            "/api/v1/incidents", headers={"Origin": "https://evil.example", **PREFLIGHT}
        )
        assert "access-control-allow-origin" not in bad.headers
        get = client.get("/api/v1/incidents", headers={"Origin": "https://grid.example", **ADMIN})
        assert get.headers["access-control-allow-origin"] == "https://grid.example"
    with pytest.raises(ConfigError, match="cors_origins"):
        load_settings(environ={"XUELIANG_SECURITY__CORS_ORIGINS": "*"})
    parsed = load_settings(environ={"XUELIANG_SECURITY__CORS_ORIGINS": "https://a.b, http://c:8"})
    assert parsed.security.cors_origins == ("https://a.b", "http://c:8")


# --- 7. security headers ---------------------------------------------------------------------

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_every_answer_carries_the_security_headers(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(auth={"bootstrap_token": BOOT}, security={"auth_failures": 1})
    with serving(settings) as client:
        answers = {
            "json": client.get("/api/v1/incidents", headers=ADMIN),
            "401": client.get("/api/v1/incidents"),
            "404": client.get("/api/v1/incidents/nope", headers=ADMIN),
            "413": client.post("/api/v1/tokens", content=b"x" * (9 << 20), headers=ADMIN),
            "health": client.get("/healthz"),
            "openapi": client.get("/openapi.json"),
            "console": client.get("/console/"),
            "script": client.get("/console/app.js"),
            "redirect": client.get("/", follow_redirects=False),
        }
        client.get("/api/v1/incidents", headers={"Authorization": "Bearer xl_wrong"})
        answers["429"] = client.get("/api/v1/incidents", headers=ADMIN)
    codes = {name: r.status_code for name, r in answers.items()}
    assert codes == {
        "json": 200,
        "401": 401,
        "404": 404,
        "413": 413,
        "health": 200,
        "openapi": 200,
        "console": 200,
        "script": 200,
        "redirect": 307,
        "429": 429,
    }
    for name, r in answers.items():
        for header, value in COMMON.items():
            assert r.headers.get(header) == value, (name, header)
        csp = directives(r.headers["content-security-policy"])
        assert csp["frame-ancestors"] == ["'none'"], name
        assert "'unsafe-inline'" not in str(csp) and "'unsafe-eval'" not in str(csp), name
        assert "strict-transport-security" not in r.headers  # plain HTTP
    assert directives(answers["json"].headers["content-security-policy"])["default-src"] == [
        "'none'"
    ]
    assert answers["json"].headers["cache-control"] == "no-store"
    assert answers["console"].headers["cache-control"] == "no-cache"  # the route's own
    console = directives(answers["console"].headers["content-security-policy"])
    assert console["script-src"] == ["'self'"] and console["style-src"] == ["'self'"]
    assert console["connect-src"] == ["'self'"] and console["default-src"] == ["'none'"]


def test_console_has_no_inline_code() -> None:
    """What makes script-src/style-src 'self' workable: nothing inline in the page; and the
    scripts build the DOM from text nodes (no HTML parsing of data)."""
    from api.routes.console import STATIC

    page = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    for script in STATIC.glob("*.js"):  # and no string turned into markup or code
        code = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, (script.name, sink)


def test_docs_allow_exactly_their_inline_script(make_settings: Callable[..., Settings]) -> None:
    with serving(make_settings()) as client:
        page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    csp = directives(page.headers["content-security-policy"])
    assert f"'sha256-{digest}'" in csp["script-src"]
    assert "'unsafe-inline'" not in csp["script-src"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert int(page.headers["content-length"]) == len(page.content)


def test_hsts_over_https(make_settings: Callable[..., Settings]) -> None:
    with serving(make_settings(), base_url="https://testserver") as client:
        r = client.get("/healthz")
    assert r.headers["strict-transport-security"] == "max-age=31536000"


def test_console_may_load_clips_from_the_object_store(
    make_settings: Callable[..., Settings], seaweedfs: SeaweedS3
) -> None:
    """With S3 the clip URL redirects there: the console's policy names that origin."""
    settings = s3_settings(make_settings, seaweedfs)
    with serving(settings) as client:
        csp = directives(client.get("/console/").headers["content-security-policy"])
        api_csp = directives(client.get("/healthz").headers["content-security-policy"])
    origin = f"http://{seaweedfs.endpoint}"
    for directive in ("media-src", "connect-src", "img-src"):
        assert origin in csp[directive], directive
    assert "*" not in " ".join(csp["media-src"])  # an IP endpoint: no subdomains
    assert origin not in str(api_csp)
