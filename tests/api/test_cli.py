"""The command line: one clear line and a non-zero exit on bad setup; a working demo."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port


def run_cli(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "XUELIANG_DATA_DIR": str(tmp_path / "data"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve", "--config", "{cfg}"], {}, "unknown setting 'storage.bakend'"),
        (["serve"], {"XUELIANG_SERVR__PORT": "1"}, "XUELIANG_SERVR__PORT"),
        (["serve"], {"XUELIANG_DATABASE__URL": "nosuchdb://x"}, "XUELIANG_DATABASE__URL"),
        (
            ["serve"],
            {"XUELIANG_DATABASE__URL": "postgresql+psycopg://nobody:pw@127.0.0.1:1/db"},
            "cannot use database postgresql+psycopg://nobody:***@127.0.0.1:1/db",
        ),
        (
            ["serve"],
            {
                "XUELIANG_STORAGE__BACKEND": "s3",
                "XUELIANG_STORAGE__S3__ENDPOINT": "127.0.0.1:1",
                "XUELIANG_STORAGE__S3__ACCESS_KEY": "k",
                "XUELIANG_STORAGE__S3__SECRET_KEY": "s3-secret-value",
            },
            "127.0.0.1:1",
        ),
        (["serve"], {"XUELIANG_STORAGE__BACKEND": "s3"}, "XUELIANG_STORAGE__S3__ENDPOINT"),
    ],
)
def test_bad_setup_gives_one_clear_line_and_non_zero_exit(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("storage:\n  bakend: s3\n")
    result = run_cli([a.replace("{cfg}", str(cfg)) for a in args], tmp_path, env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert says in errors[0]
    assert "Traceback" not in result.stderr
    assert "s3-secret-value" not in result.stderr + result.stdout
    assert ":pw@" not in result.stderr


def test_token_create_prints_a_working_token(tmp_path: Path) -> None:
    result = run_cli(["token", "create", "--role", "operator", "--name", "desk-1"], tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("xl_") and len(token) > 40

    from storage.db import Database
    from storage.models import ApiToken, utcnow
    from storage.tokens import find_token

    db = Database(f"sqlite:///{tmp_path / 'data' / 'xueliang.db'}")
    with db.session() as session:
        principal = find_token(session, token)
        assert principal is not None
        expires_at = session.get_one(ApiToken, principal.token_id).expires_at
    assert (principal.role, principal.name) == ("operator", "desk-1")
    # An operator's token expires after the role's default lifetime (30 days), as printed.
    assert expires_at is not None
    assert abs((expires_at - utcnow()).total_seconds() - 30 * 86400) < 120
    assert f"expires: {expires_at.isoformat(timespec='seconds')}" in result.stderr


@pytest.mark.slow
def test_demo_serves_health_docs_and_prints_a_working_admin_token(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "XUELIANG_DATA_DIR": str(tmp_path / "data")},
    )
    try:
        token = _read_banner_token(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "demo never answered /healthz"
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        assert httpx.get(f"{base}/docs").status_code == 200
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/api/v1/tokens", headers=auth).status_code == 200
        assert httpx.get(f"{base}/api/v1/tokens").status_code == 401

        # A newcomer sees an incident with its clip within a minute.
        def archived() -> bool:
            items = httpx.get(f"{base}/api/v1/incidents", headers=auth).json()["items"]
            return any(i["clip"] and i["clip"]["state"] == "archived" for i in items)

        deadline = time.monotonic() + 60
        while not archived():
            assert time.monotonic() < deadline, "no archived demo incident within a minute"
            time.sleep(1)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _read_banner_token(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "admin token" in line:
            return line.split(":", 1)[1].strip()
        assert time.monotonic() < deadline
    raise AssertionError("demo printed no admin token")
