"""Evidence packages (issue #19): exported through the API from a clip the archiver really
archived, verified offline by the CLI in a subprocess, tampered with byte by byte."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import cv2
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from cli.main import main
from config.settings import Settings
from runtime.process import Process
from storage import evidence_package as pkg
from storage.evidence_package import verify_package
from storage.incidents import NewIncident, create_incident
from storage.models import AuditEntry, Base, Camera, EvidenceKey, utcnow
from storage.spool import SpoolEntry
from storage.tokens import ROLES, create_token
from tests.api.conftest import Api
from tests.conftest import REPO
from tests.peers.seaweedfs import SeaweedS3, unique_bucket
from tests.unit.synthetic_h264 import encode_video, frame_image

NATIONAL_ID = "34020000001320000042"
DATA_FILES = (pkg.CLIP, pkg.SNAPSHOT, pkg.INCIDENT, pkg.AUDIT, pkg.README)


# --- helpers ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (exit code, stdout, stderr); :func:`run_cli` proves the same
    in a process of its own."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _grid_and_camera(api: Api) -> None:
    admin = api.as_role("admin")
    for code, name, level, parent in (
        ("C1", "雪城市", "city", None),
        ("G1", "东街", "county", "C1"),
    ):
        body = {"name": name, "level": level, "parent_code": parent}
        put = api.client.put(f"/api/v1/grids/{code}", json=body, headers=admin)
        assert put.status_code in (200, 201), put.text
    now = utcnow()
    with api.services.tx() as session:
        session.add(
            Camera(
                id="cam_ev",
                name="东门",
                main_url_enc=api.services.secrets.encrypt("rtsp://admin:hunter2@10.0.0.9/main"),
                main_url_shown="rtsp://admin:***@10.0.0.9/main",
                onvif={
                    "password_enc": "gAAAA-not-shown",
                    "device": {"model": "DS-2CD", "serial": "S1"},
                },
                grid_code="G1",
                lat=31.2,
                lon=121.5,
                national_id=NATIONAL_ID,
                zones=[],
                analytics={},
                recording={},
                enabled=False,
                created_at=now,
                updated_at=now,
            )
        )


def archived_incident(api: Api, tmp_path: Path) -> str:
    """A reviewed incident linked to a case, whose real MP4 and JPEG went through the
    process's own archiver (upload, read back, SHA-256 verified, marked archived)."""
    _grid_and_camera(api)
    with api.services.tx() as session:
        started = utcnow() - timedelta(minutes=5)
        incident_id = create_incident(session, NewIncident("cam_ev", "G1", "motion", started)).id
    process: Process = api.client.app.state.process  # type: ignore[attr-defined]
    spool = process.archiver.spool
    clip = encode_video(spool.file_path(f"{incident_id}.mp4"), 50, fmt="mp4")
    snapshot = spool.file_path(f"{incident_id}.jpg")
    snapshot.write_bytes(cv2.imencode(".jpg", frame_image(7))[1].tobytes())
    spool.add(
        SpoolEntry(
            incident_id=incident_id,
            camera_id="cam_ev",
            clip_path=str(clip),
            clip_key=f"clips/cam_ev/{incident_id}.mp4",
            clip_sha256=hashlib.sha256(clip.read_bytes()).hexdigest(),
            clip_size=clip.stat().st_size,
            duration_s=2.0,
            snapshot_path=str(snapshot),
            snapshot_key=f"snapshots/cam_ev/{incident_id}.jpg",
            snapshot_sha256=hashlib.sha256(snapshot.read_bytes()).hexdigest(),
        )
    )
    assert asyncio.run(process.archiver.drain()) == 0
    op = api.as_role("operator")
    review = {"action": "acknowledge", "note": "person at the gate"}
    assert api.client.post(f"/api/v1/incidents/{incident_id}/review", json=review, headers=op)
    case = api.client.post(
        "/api/v1/cases",
        json={"external_ref": "110-2024-7", "title": "门口纠纷", "kind": "police"},
        headers=op,
    ).json()
    linked = api.client.post(
        f"/api/v1/cases/{case['id']}/incidents", json={"incident_id": incident_id}, headers=op
    )
    assert linked.status_code < 300, linked.text
    return incident_id


def export(api: Api, incident_id: str, dest: Path, role: str = "operator") -> Path:
    got = api.client.get(f"/api/v1/incidents/{incident_id}/evidence", headers=api.as_role(role))
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    assert f"evidence-{incident_id}.zip" in got.headers["content-disposition"]
    dest.write_bytes(got.content)
    return dest


def published_key(api: Api, dest: Path) -> Path:
    body = api.client.get("/api/v1/evidence/key", headers=api.as_role("grid_platform")).json()
    dest.write_text(body["public_key_pem"])
    return dest


def rewritten(src: Path, dest: Path, name: str, change: str = "flip") -> Path:
    """A copy of the package with entry ``name`` changed ("flip": its middle byte), removed
    ("drop") or added ("add")."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == name and change == "drop":
                continue
            if info.filename == name and change == "flip":
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
            zout.writestr(info, data)
        if change == "add":
            zout.writestr(name, b"planted")
    return dest


# --- the package verifies ---------------------------------------------------------------


def test_an_exported_package_verifies_offline_and_holds_the_record(
    api: Api, tmp_path: Path
) -> None:
    incident_id = archived_incident(api, tmp_path)
    package = export(api, incident_id, tmp_path / "evidence.zip")
    key = published_key(api, tmp_path / "installation.pem")

    done = run_cli("evidence", "verify", str(package), "--key", str(key))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and "NOTE" not in done.stdout
    assert f"VERIFIED: evidence of incident {incident_id}" in done.stdout
    for name in DATA_FILES:
        assert f"OK    {name}: " in done.stdout
    assert "OK    signature of manifest.json verified" in done.stdout

    with zipfile.ZipFile(package) as z:
        assert sorted(z.namelist()) == sorted((*DATA_FILES, *pkg.UNLISTED))
        manifest = json.loads(z.read(pkg.MANIFEST))
        record = json.loads(z.read(pkg.INCIDENT))
        trail = json.loads(z.read(pkg.AUDIT))
        clip = z.read(pkg.CLIP)
        everything = b"".join(z.read(n) for n in z.namelist())
    shown = api.client.get(f"/api/v1/incidents/{incident_id}", headers=api.as_role("operator"))
    archived = shown.json()["clip"]
    # The clip is the archived one, byte for byte, and the manifest says so.
    files = {f["name"]: f for f in manifest["files"]}
    assert files[pkg.CLIP]["sha256"] == archived["sha256"] == hashlib.sha256(clip).hexdigest()
    assert files[pkg.CLIP]["size"] == archived["size"] == len(clip)
    assert manifest["incident_id"] == incident_id and manifest["exported_by"] == "test-operator"
    assert manifest["algorithm"] == "Ed25519" and manifest["format"] == "xueliang-evidence/1"
    key_body = api.client.get("/api/v1/evidence/key", headers=api.as_role("integrator")).json()
    assert manifest["key_id"] == key_body["key_id"]
    # The record: camera with its national ID and place, grid path, history, case.
    assert record["camera"]["national_id"] == NATIONAL_ID
    assert record["camera"]["location"] == {"lat": 31.2, "lon": 121.5}
    assert record["camera"]["device"]["serial"] == "S1"
    assert record["grid"]["name"] == "东街" and record["grid"]["parents"][0]["code"] == "C1"
    assert [(h["action"], h["note"]) for h in record["history"]][-1] == (
        "acknowledge",
        "person at the gate",
    )
    assert [c["external_ref"] for c in record["cases"]] == ["110-2024-7"]
    assert record["incident"]["started_at"].endswith("+00:00")
    # No credential travels with the evidence.
    for secret in (b"hunter2", b"gAAAA", b"password_enc", b"main_url"):
        assert secret not in everything
    # The audit trail in the package ends with this export; the API's log has it too.
    assert [a["action"] for a in trail][-1] == "export"
    assert {"acknowledge", "link"} <= {a["action"] for a in trail}
    audit = api.client.get(
        "/api/v1/audit", params={"resource_id": incident_id}, headers=api.as_role("admin")
    ).json()
    exports = [a for a in audit if a["action"] == "export"]
    assert len(exports) == 1 and exports[0]["resource"] == "incident"
    assert exports[0]["actor"] == "test-operator"
    assert exports[0]["detail"]["key_id"] == manifest["key_id"]


def test_any_changed_byte_fails_verification_naming_what_changed(api: Api, tmp_path: Path) -> None:
    incident_id = archived_incident(api, tmp_path)
    package = export(api, incident_id, tmp_path / "evidence.zip")
    pem = published_key(api, tmp_path / "installation.pem")
    public = pkg.load_public_key(pem.read_text())
    assert verify_package(package, public).ok

    for name in DATA_FILES:
        failures = verify_package(rewritten(package, tmp_path / f"{name}.zip", name), public)
        assert not failures.ok
        assert [f for f in failures.failures if f.startswith(f"{name}: SHA-256 expected")], (
            name,
            failures.failures,
        )
        assert len(failures.failures) == 1, failures.failures  # nothing else is blamed
    for name in (pkg.MANIFEST, pkg.SIGNATURE):
        failures = verify_package(rewritten(package, tmp_path / f"{name}.zip", name), public)
        assert any(f.startswith("signature does not match the key") for f in failures.failures)

    # One byte of the ZIP file itself, inside the clip's data: the entry is named damaged.
    raw = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as z:
        info = z.getinfo(pkg.CLIP)
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 1000
    raw[offset] ^= 0xFF
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(raw))
    result = verify_package(damaged, public)
    assert [f for f in result.failures if f.startswith(f"{pkg.CLIP}: ")], result.failures

    missing = verify_package(rewritten(package, tmp_path / "m.zip", pkg.SNAPSHOT, "drop"), public)
    assert [f for f in missing.failures if f.startswith(f"{pkg.SNAPSHOT}: missing")]
    extra = verify_package(rewritten(package, tmp_path / "x.zip", "note.txt", "add"), public)
    assert extra.failures == ["note.txt: extra file, not in the manifest"]

    # The CLI says the same and exits non-zero.
    bad = run_cli("evidence", "verify", str(tmp_path / f"{pkg.CLIP}.zip"), "--key", str(pem))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"FAIL  {pkg.CLIP}: SHA-256 expected" in bad.stdout
    assert "NOT VERIFIED: 1 problem" in bad.stdout


def test_another_installations_key_or_a_replaced_embedded_key_is_caught(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    incident_id = archived_incident(api, tmp_path)
    package = str(export(api, incident_id, tmp_path / "evidence.zip"))
    key = str(published_key(api, tmp_path / "installation.pem"))
    stranger = Ed25519PrivateKey.generate()
    other = tmp_path / "other.pem"
    other.write_text(pkg.public_pem(stranger.public_key()))

    code, out, _ = cli(capsys, "evidence", "verify", package, "--key", str(other))
    assert code == 1
    assert "FAIL  signature does not match the key" in out
    assert f"the key given is {pkg.key_id(stranger.public_key())}" in out

    # Without --key the embedded key is used, and the output says what that proves.
    code, out, _ = cli(capsys, "evidence", "verify", package)
    assert code == 0, out
    assert "NOTE  checked with the public key inside the package" in out
    assert "not which installation made it" in out

    # A forger re-signs a changed manifest with their own key and embeds it: intact in
    # itself, refused against the installation's key.
    forged = str(_resigned(Path(package), tmp_path / "forged.zip", stranger))
    assert cli(capsys, "evidence", "verify", forged)[0] == 0
    code, out, _ = cli(capsys, "evidence", "verify", forged, "--key", key)
    assert code == 1 and "FAIL  signature does not match the key" in out
    assert "NOT VERIFIED" in out

    # The key's base64 works as --key too; what cannot be read exits 2, saying why.
    b64 = api.client.get("/api/v1/evidence/key", headers=api.as_role("operator")).json()
    assert cli(capsys, "evidence", "verify", package, "--key", b64["public_key_base64"])[0] == 0
    code, _, err = cli(capsys, "evidence", "verify", package, "--key", "no-such.pem")
    assert code == 2 and "--key (no file of that name)" in err
    code, _, err = cli(capsys, "evidence", "verify", key)
    assert code == 2 and "is not a ZIP file" in err


def _resigned(src: Path, dest: Path, key: Ed25519PrivateKey) -> Path:
    with zipfile.ZipFile(src) as zin:
        manifest = json.loads(zin.read(pkg.MANIFEST))
        entries = {n: zin.read(n) for n in zin.namelist()}
    manifest["exported_by"] = "someone else"
    manifest["key_id"] = pkg.key_id(key.public_key())
    entries[pkg.MANIFEST] = pkg.dump_json(manifest)
    entries[pkg.SIGNATURE] = key.sign(entries[pkg.MANIFEST])
    entries[pkg.PUBLIC_KEY] = pkg.public_pem(key.public_key()).encode()
    with zipfile.ZipFile(dest, "w") as zout:
        for name, data in entries.items():
            zout.writestr(name, data)
    return dest


# --- refusals -----------------------------------------------------------------------------


def test_export_refuses_a_clip_not_archived_or_no_longer_matching(api: Api, tmp_path: Path) -> None:
    op = api.as_role("operator")
    with api.services.tx() as session:
        pending = create_incident(session, NewIncident("cam_x", None, "motion", utcnow())).id
    r = api.client.get(f"/api/v1/incidents/{pending}/evidence", headers=op)
    assert r.status_code == 409 and "not archived (clip state: pending)" in r.json()["detail"]

    incident_id = archived_incident(api, tmp_path)
    clip_key = f"clips/cam_ev/{incident_id}.mp4"
    original = api.services.objects.get_bytes(clip_key)
    api.services.objects.put_bytes(clip_key, original[:-1] + b"\x00", "video/mp4")
    r = api.client.get(f"/api/v1/incidents/{incident_id}/evidence", headers=op)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{pkg.CLIP}: the stored object {clip_key} no longer matches")
    assert hashlib.sha256(original).hexdigest() in detail
    with api.services.db.session() as session:
        actions = [
            a.action
            for a in session.query(AuditEntry).filter(AuditEntry.resource_id == incident_id)
        ]
    assert "export_refused" in actions and "export" not in actions

    api.services.objects.delete(clip_key)
    r = api.client.get(f"/api/v1/incidents/{incident_id}/evidence", headers=op)
    assert r.status_code == 409 and "gone from the store" in r.json()["detail"]
    api.services.objects.put_bytes(clip_key, original, "video/mp4")
    assert (
        api.client.get(f"/api/v1/incidents/{incident_id}/evidence", headers=op).status_code == 200
    )


def test_export_is_for_operators_within_their_grid_scope(api: Api, tmp_path: Path) -> None:
    incident_id = archived_incident(api, tmp_path)
    url = f"/api/v1/incidents/{incident_id}/evidence"
    for role in ("grid_platform", "integrator"):
        assert api.client.get(url, headers=api.as_role(role)).status_code == 403
    assert api.client.get(url).status_code == 401
    missing = api.client.get("/api/v1/incidents/inc_nope/evidence", headers=api.as_role("operator"))
    assert missing.status_code == 404
    admin = api.as_role("admin")
    api.client.put(
        "/api/v1/grids/G2",
        json={"name": "西街", "level": "county", "parent_code": "C1"},
        headers=admin,
    )
    with api.services.db.session() as session:
        outside, _ = create_token(session, "operator", "west", "G2")
        inside, _ = create_token(session, "operator", "east", "G1")
    far = api.client.get(url, headers={"Authorization": f"Bearer {outside}"})
    assert far.status_code == 404 and far.json()["detail"] == f"no incident {incident_id}"
    assert api.client.get(url, headers={"Authorization": f"Bearer {inside}"}).status_code == 200
    export(api, incident_id, tmp_path / "admin.zip", role="admin")


# --- the key --------------------------------------------------------------------------------


def test_the_key_is_the_same_from_the_api_the_cli_and_a_second_node(
    api: Api, api_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = api.client.get("/api/v1/evidence/key", headers=api.as_role("operator")).json()
    assert first["algorithm"] == "Ed25519"
    public = pkg.load_public_key(first["public_key_pem"])
    assert pkg.key_id(public) == first["key_id"]
    assert (
        pkg.load_public_key(first["public_key_base64"]).public_bytes_raw()
        == public.public_bytes_raw()
    )
    with TestClient(create_app(api_settings)) as other:
        second = other.get("/api/v1/evidence/key", headers=api.as_role("operator")).json()
    assert second == first
    config = tmp_path / "xueliang.yaml"
    config.write_text(
        f"data_dir: {api_settings.data_dir}\ndatabase:\n  url: '{api_settings.database_url}'\n"
    )
    printed = run_cli("evidence", "key", "--config", str(config))
    assert printed.returncode == 0, printed.stderr
    assert f"key id: {first['key_id']}" in printed.stdout
    assert first["public_key_pem"] in printed.stdout
    code, pem_only, _ = cli(capsys, "evidence", "key", "--config", str(config), "--pem")
    assert code == 0 and pem_only == first["public_key_pem"]
    with api.services.db.session() as session:
        assert session.scalar(select(func.count()).select_from(EvidenceKey)) == 1


#: The recipe of docs/security.md and VERIFY.txt, run from the unzipped package's folder
#: with the installation's key next to it.
FINGERPRINT = "openssl pkey -pubin -in ../INSTALLATION.pem -outform DER | tail -c 32 | sha256sum"
SIGNATURE_CHECK = (
    "openssl pkeyutl -verify -pubin -inkey ../INSTALLATION.pem -rawin "
    "-in manifest.json -sigfile manifest.sig"
)
SUMS = (
    'python3 -c \'import json; [print(f["sha256"] + "  " + f["name"]) for f in '
    'json.load(open("manifest.json"))["files"]]\' | sha256sum -c'
)


def test_standard_tools_verify_the_package(api: Api, tmp_path: Path) -> None:
    """openssl checks the key's fingerprint and the signature, sha256sum the files."""
    incident_id = archived_incident(api, tmp_path)
    package = export(api, incident_id, tmp_path / "evidence.zip")
    published_key(api, tmp_path / "INSTALLATION.pem")
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(package) as z:
        z.extractall(folder)
    manifest = json.loads((folder / pkg.MANIFEST).read_text())
    readme = (folder / pkg.README).read_text()
    assert "openssl pkeyutl -verify -pubin -inkey INSTALLATION.pem -rawin" in readme

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
        )

    fingerprint = sh(FINGERPRINT)
    assert fingerprint.stdout.split()[0] == manifest["key_id"], fingerprint.stderr
    signed = sh(SIGNATURE_CHECK)
    assert signed.returncode == 0 and "Signature Verified Successfully" in signed.stdout, signed
    sums = sh(SUMS)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.count(": OK") == len(DATA_FILES)
    # And they notice a change.
    manifest_path = folder / pkg.MANIFEST
    manifest_path.write_bytes(
        manifest_path.read_bytes().replace(b"test-operator", b"test-operatoR")
    )
    assert sh(SIGNATURE_CHECK).returncode != 0
    clip = folder / pkg.CLIP
    clip.write_bytes(b"x" + clip.read_bytes()[1:])
    changed = sh(SUMS)
    assert changed.returncode != 0 and f"{pkg.CLIP}: FAILED" in changed.stdout


def test_the_migration_creates_the_table_the_model_declares(api: Api) -> None:
    with api.services.db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "evidence_keys" in repr(d)] == []


@pytest.mark.slow
def test_export_from_s3(
    make_settings: Callable[..., Settings], seaweedfs: SeaweedS3, tmp_path: Path
) -> None:
    """The clip streamed from a real S3 server (SeaweedFS) into the package and verified."""
    seaweedfs.ensure_running()
    s3 = {
        "endpoint": seaweedfs.endpoint,
        "access_key": seaweedfs.credentials.access_key,
        "secret_key": seaweedfs.credentials.secret_key,
        "bucket": unique_bucket(),
        "region": "us-east-1",
    }
    settings = make_settings(
        storage={"backend": "s3", "s3": s3}, evidence={"installation_name": "雪亮 test city"}
    )
    app = create_app(settings)
    with TestClient(app) as client:
        services = app.state.services
        with services.db.session() as session:
            tokens = {role: create_token(session, role, f"test-{role}")[0] for role in ROLES}
        api = Api(client=client, services=services, tokens=tokens)
        incident_id = archived_incident(api, tmp_path)
        package = export(api, incident_id, tmp_path / "evidence.zip")
        key = pkg.load_public_key(published_key(api, tmp_path / "key.pem").read_text())
    result = verify_package(package, key)
    assert result.ok, result.failures
    assert result.manifest is not None
    assert result.manifest["installation"] == {"name": "雪亮 test city"}
