"""Token lifetimes (issue #19): expiry, rotation with a grace period, listing by state, the
CLI's ``--expires``. In-process, on SQLite and PostgreSQL; the same across real processes
is tests/integration/test_token_processes.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from config.settings import Settings
from runtime.services import Services
from storage.models import ApiToken, utcnow
from tests.api.test_cli import run_cli

BOOT = "xl_token_lifetime_bootstrap_0001"
ADMIN = {"Authorization": f"Bearer {BOOT}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(make_settings: Callable[..., Settings], db_url: str) -> Iterator[TestClient]:
    settings = make_settings(
        database={"url": db_url}, auth={"bootstrap_token": BOOT, "rotation_grace_s": 1}
    )
    with TestClient(create_app(settings, role="api")) as c:
        yield c


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def create(client: TestClient, **body: object) -> dict[str, object]:
    created = client.post("/api/v1/tokens", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    answer: dict[str, object] = created.json()
    return answer


def set_expiry(client: TestClient, token_id: str, expires_at: datetime) -> None:
    with services_of(client).db.session() as session:
        session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(expires_at=expires_at)
        )


def lifetime_s(created: dict[str, object]) -> float:
    expires_at = datetime.fromisoformat(str(created["expires_at"]))
    return (expires_at - utcnow()).total_seconds()


def test_every_role_gets_its_default_lifetime_unless_the_body_says_otherwise(
    client: TestClient,
) -> None:
    for role, days in [("admin", 30), ("operator", 30), ("integrator", 365)]:
        assert abs(lifetime_s(create(client, role=role)) - days * 86400) < 60, role
    assert abs(lifetime_s(create(client, role="grid_platform", expires_in_s=3600)) - 3600) < 60
    moment = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    at = create(client, role="operator", expires_at=moment.isoformat())
    assert datetime.fromisoformat(str(at["expires_at"])) == moment
    assert create(client, role="integrator", never_expires=True)["expires_at"] is None


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"expires_in_s": 59}, "expires_in_s", "greater than or equal to 60"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at", "in the future"),
        ({"expires_at": "2031-01-01T00:00:00"}, "expires_at", "timezone"),
        ({"expires_in_s": 600, "expires_at": "2031-01-01T00:00:00Z"}, "expires_at", "not both"),
        ({"expires_in_s": 600, "never_expires": True}, "never_expires", "excludes"),
    ],
)
def test_a_wrong_expiry_is_422_naming_the_field(
    client: TestClient, body: dict[str, object], field: str, says: str
) -> None:
    answer = client.post("/api/v1/tokens", json={"role": "operator", **body}, headers=ADMIN)
    assert answer.status_code == 422, answer.text
    error = answer.json()["detail"][0]
    assert error["loc"] == ["body", field] and says in error["msg"], error


def test_an_expired_token_gets_401_saying_it_expired(client: TestClient) -> None:
    created = create(client, role="operator", expires_in_s=3600)
    who = bearer(str(created["token"]))
    assert client.get("/api/v1/incidents", headers=who).status_code == 200
    past = datetime(2020, 5, 1, 8, 0, tzinfo=UTC)
    set_expiry(client, str(created["id"]), past)
    refused = client.get("/api/v1/incidents", headers=who)
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith("token expired at 2020-05-01T08:00:00+00:00")
    assert "invalid_token" in refused.headers["www-authenticate"]
    wrong = client.get("/api/v1/incidents", headers=bearer("xl_never_issued"))
    assert wrong.json()["detail"] == "invalid or revoked token"  # a guess learns nothing


def test_tokens_are_listed_by_state_with_their_last_use(client: TestClient) -> None:
    used = create(client, role="operator", name="used")
    unused = create(client, role="operator", name="unused")
    revoked = create(client, role="operator", name="revoked")
    expired = create(client, role="operator", name="expired", expires_in_s=60)
    assert client.get("/api/v1/events", headers=bearer(str(used["token"]))).status_code == 200
    assert client.delete(f"/api/v1/tokens/{revoked['id']}", headers=ADMIN).status_code == 204
    set_expiry(client, str(expired["id"]), utcnow() - timedelta(seconds=1))

    def listed(state: str | None) -> dict[str, dict[str, object]]:
        params = {"state": state} if state else {}
        answer = client.get("/api/v1/tokens", params=params, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        return {t["name"]: t for t in answer.json()}

    assert set(listed(None)) == {"used", "unused"}  # the default: tokens that work
    assert set(listed("expired")) == {"expired"} and set(listed("revoked")) == {"revoked"}
    every = listed("all")
    assert {n: t["state"] for n, t in every.items()} == {
        "used": "active",
        "unused": "active",
        "revoked": "revoked",
        "expired": "expired",
    }
    assert every["unused"]["last_used_at"] is None
    last_use = datetime.fromisoformat(str(every["used"]["last_used_at"]))
    assert abs((utcnow() - last_use).total_seconds()) < 60
    assert every["revoked"]["revoked_at"] is not None
    assert all("token" not in t for t in every.values()) and str(unused["token"]) not in str(every)
    assert client.get("/api/v1/tokens?state=lost", headers=ADMIN).status_code == 422


def test_rotation_keeps_the_old_token_for_the_grace_period_then_refuses_it(
    client: TestClient,
) -> None:
    """``rotation_grace_s`` is 1 s here; the old token works until then, never after."""
    old = create(client, role="grid_platform", name="city-platform", expires_in_s=7200)
    old_auth = bearer(str(old["token"]))
    rotated = client.post(f"/api/v1/tokens/{old['id']}/rotate", headers=old_auth)  # itself
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert (new["replaces"], new["name"], new["role"]) == (old["id"], "city-platform", old["role"])
    assert abs(lifetime_s(new) - 7200) < 60  # the successor keeps the lifetime
    grace_end = datetime.fromisoformat(new["replaced_expires_at"])
    assert 0 < (grace_end - utcnow()).total_seconds() <= 1
    assert client.get("/api/v1/events", headers=old_auth).status_code == 200  # in grace
    assert client.get("/api/v1/events", headers=bearer(new["token"])).status_code == 200
    again = client.post(f"/api/v1/tokens/{old['id']}/rotate", headers=ADMIN)
    assert again.status_code == 409 and "already rotated" in again.json()["detail"]

    time.sleep(max((grace_end - utcnow()).total_seconds(), 0) + 0.1)
    refused = client.get("/api/v1/events", headers=old_auth)
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    assert client.get("/api/v1/events", headers=bearer(new["token"])).status_code == 200
    listed = {t["id"]: t for t in client.get("/api/v1/tokens?state=all", headers=ADMIN).json()}
    assert listed[str(old["id"])]["rotated_to"] == new["id"]
    audit = client.get("/api/v1/audit", params={"resource_id": old["id"]}, headers=ADMIN).json()
    assert (audit[0]["action"], audit[0]["detail"]) == ("rotate", {"successor": new["id"]})


def test_only_admins_rotate_other_tokens(client: TestClient) -> None:
    mine = create(client, role="operator")
    theirs = create(client, role="operator")
    forbidden = client.post(
        f"/api/v1/tokens/{theirs['id']}/rotate", headers=bearer(str(mine["token"]))
    )
    assert forbidden.status_code == 404  # another's token is not even confirmed to exist
    assert client.post(f"/api/v1/tokens/{theirs['id']}/rotate", headers=ADMIN).status_code == 201
    assert client.post("/api/v1/tokens/nope/rotate", headers=ADMIN).status_code == 404
    assert client.delete(f"/api/v1/tokens/{mine['id']}", headers=ADMIN).status_code == 204
    revoked = client.post(f"/api/v1/tokens/{mine['id']}/rotate", headers=ADMIN)
    assert revoked.status_code == 409 and "revoked" in revoked.json()["detail"]


def test_rotations_count_against_the_token_creation_limit(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(auth={"bootstrap_token": BOOT}, security={"token_creations": 2})
    with TestClient(create_app(settings, role="api")) as c:
        first = create(c, role="operator")
        assert c.post(f"/api/v1/tokens/{first['id']}/rotate", headers=ADMIN).status_code == 201
        limited = c.post("/api/v1/tokens", json={"role": "operator"}, headers=ADMIN)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_cli_expires_takes_lifetimes_times_and_never(tmp_path: Path) -> None:
    def created(expires: str) -> tuple[int, str]:
        """The exit code and the last line on stderr (logs of the migration come first)."""
        args = ["token", "create", "--role", "admin", "--expires", expires]
        result = run_cli(args, tmp_path)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stderr.strip().splitlines()[-1]

    code, said = created("2h")
    assert code == 0, said
    expires_at = datetime.fromisoformat(said.split("expires: ")[1].strip())
    assert abs((expires_at - utcnow()).total_seconds() - 7200) < 60
    assert created("never") == (0, "expires: never")
    assert created("2031-02-03T04:05:06+08:00") == (0, "expires: 2031-02-02T20:05:06+00:00")
    for wrong, says in [
        ("soon", "is not a lifetime"),
        ("30s", "between 1 minute and 10 years"),
        ("2001-01-01T00:00:00Z", "has already passed"),
        ("2031-01-01T00:00:00", "add a zone"),
    ]:
        code, said = created(wrong)
        assert code == 2 and says in said, (wrong, said)
