"""Every /api/v1 route refuses a missing token (401) and a token of the wrong role (403)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.app import API_PREFIX
from storage.tokens import ROLES
from tests.api.conftest import BOOTSTRAP, Api


def _allowed_roles(route: APIRoute) -> frozenset[str] | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        roles = getattr(dep.call, "roles", None)
        if roles is not None:
            return frozenset(roles)
        stack.extend(dep.dependencies)
    return None


def _walk(routes: list[Any], prefix: str = "") -> list[tuple[str, APIRoute]]:
    """(full path, route) of every API route, through included routers."""
    found = []
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            found += _walk(inner.routes, prefix + r.include_context.prefix)
        elif isinstance(r, APIRoute):
            found.append((prefix + r.path, r))
    return found


def _api_routes(client: TestClient) -> list[tuple[str, str, frozenset[str] | None]]:
    out: list[tuple[str, str, frozenset[str] | None]] = []
    for full, route in _walk(client.app.routes):  # type: ignore[attr-defined]
        if full.startswith(API_PREFIX):
            path = re.sub(r"\{[^}]+\}", "x1", full)
            assert route.methods is not None, full  # None: any method, not one route per verb
            out.extend((m, path, _allowed_roles(route)) for m in sorted(route.methods))
    return out


def _call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    return client.request(method, path, headers=headers, json={} if method != "GET" else None)


def test_every_api_route_requires_a_token_and_the_right_role(api: Api) -> None:
    routes = _api_routes(api.client)
    assert len(routes) >= 5
    for method, path, allowed in routes:
        assert allowed is not None, f"{method} {path} has no role check"
        assert "admin" in allowed
        assert _call(api.client, method, path, {}).status_code == 401, (method, path)
        bogus = {"Authorization": "Bearer xl_not_a_real_token"}
        assert _call(api.client, method, path, bogus).status_code == 401, (method, path)
        for role in ROLES:
            if role in allowed and path.endswith("/stream"):
                continue  # an admitted SSE client streams forever; test_events covers it
            code = _call(api.client, method, path, api.as_role(role)).status_code
            if role in allowed:
                assert code not in (401, 403), (method, path, role, code)
            else:
                assert code == 403, (method, path, role, code)


def test_bootstrap_token_is_admin_and_revoked_tokens_stop_working(api: Api) -> None:
    boot = {"Authorization": f"Bearer {BOOTSTRAP}"}
    created = api.client.post(
        "/api/v1/tokens", json={"role": "operator", "name": "o1"}, headers=boot
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    who = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/v1/events", headers=who).status_code == 200
    assert api.client.get("/api/v1/tokens", headers=who).status_code == 403
    listed = api.client.get("/api/v1/tokens", headers=boot).json()
    assert all("token" not in t for t in listed)
    assert (
        api.client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=boot).status_code == 204
    )
    assert api.client.get("/api/v1/events", headers=who).status_code == 401
    audit = api.client.get("/api/v1/audit", params={"resource": "token"}, headers=boot).json()
    assert [a["action"] for a in audit] == ["revoke", "create"]


def test_tokens_are_stored_hashed(api: Api) -> None:
    from sqlalchemy import text

    with api.services.db.session() as s:
        stored = [r[0] for r in s.execute(text("SELECT token_hash FROM api_tokens"))]
    assert stored and not any(t in stored for t in api.tokens.values())


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/docs", "/metrics", "/readyz"])
def test_operations_endpoints_are_open(api: Api, path: str) -> None:
    r = api.client.get(path)
    assert r.status_code == 200, r.text
    if path == "/readyz":
        assert r.json()["checks"] == {"database": "ok", "storage": "ok"}
    if path == "/metrics":
        assert "xueliang_http_requests" in r.text


def test_malformed_requests_name_the_field_and_big_bodies_are_refused(api: Api) -> None:
    admin = api.as_role("admin")
    r = api.client.post("/api/v1/tokens", json={"role": "superuser"}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "role"
    r = api.client.post("/api/v1/tokens", json={"role": "admin", "colour": 1}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "colour"
    big = b'{"role": "admin", "name": "' + b"x" * (10 << 20) + b'"}'
    r = api.client.post("/api/v1/tokens", content=big, headers=admin)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]
