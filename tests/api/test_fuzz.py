"""Schemathesis against the service's own OpenAPI document: every operation, as every role.

The app runs in-process (ASGI) with its lifespan, on SQLite and the local object store,
with a few real rows (grids, cameras, an incident with its clip, a case, a subscription)
that generated path parameters sometimes name. Properties checked on every response:

- no 5xx, except a documented 503 where the answer depends on a live camera this process
  does not run (snapshot, live view);
- every 4xx carries a message: a JSON object with a ``detail``;
- the OpenAPI document describes the status, the content type and the body actually sent
  (schemathesis' ``status_code_conformance``, ``content_type_conformance``,
  ``response_schema_conformance``, ``response_headers_conformance``).

What generated data could reach beyond loopback is pinned to loopback before each call:
an ONVIF camera's host (probed when a camera is added), a webhook's host (the delivery
worker posts to it) and how long a WS-Discovery listens. The app runs with
``role="api"``, so no camera worker opens the generated RTSP URLs.

No operation is left out. The event stream never ends: each call keeps its first event, or
what came in a quarter of a second. The live view reads the codecs of the generated SDP
offer, then answers 503 (no camera runs here) before negotiating: aiortc's negotiation is
covered with a real camera by tests/integration/test_webrtc.py.
Clips are served from a seeded 64-byte object, with generated ``Range`` headers.

Bounded for CI: ``MAX_EXAMPLES`` generated cases per operation and role, on top of
schemathesis' coverage cases (boundary values, missing and wrong-typed fields, no token);
derandomized, no deadline, no example database.

The schema is read at import from an app that is never started, and each case is sent to
the caller's app with ``app=``: one pytest item per operation and caller. (schemathesis'
``from_fixture`` fails on pytest 9.2, and ``from_asgi`` would start an app at collection.)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckContext
from schemathesis.config import SchemathesisConfig
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.schemas.cameras import AnalyticsIn, RecordingIn
from config.settings import Settings
from ingest.onvif import OnvifDevice, Profile
from runtime.services import Services
from storage.incidents import ArchivedClip, NewIncident, create_incident, mark_archived
from storage.models import Camera, utcnow
from storage.tokens import ROLES, create_token
from tests.api.conftest import Api
from tests.conftest import free_port, pg_schema

#: Generated cases per operation and caller; raise it for a deeper run on a workstation.
MAX_EXAMPLES = int(os.environ.get("XL_FUZZ_EXAMPLES", "10"))
#: Nothing listens here: what the app is told to reach there fails at once.
CLOSED_PORT = free_port()
EVIDENCE = (
    "GET /api/v1/incidents/{incident_id}/clip",
    "GET /api/v1/incidents/{incident_id}/snapshot",
)
SEEDED_PARAMS = ("camera_id", "code", "incident_id", "case_id", "subscription_id")
BOOTSTRAP = "xl_fuzz_bootstrap_token_0123456789"

#: 503 is the right answer here when this process has no frame of the camera: the app
#: runs as ``role="api"`` (no camera worker), as an API-only process does in production.
LIVE_CAMERA_503 = frozenset(
    {
        "GET /api/v1/cameras/{camera_id}/snapshot.jpg",
        "POST /api/v1/cameras/{camera_id}/webrtc",
    }
)


@dataclass
class Seeded:
    """Ids of the rows generated path parameters sometimes name."""

    ids: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        self.ids.setdefault(name, []).append(value)

    def resolve(self, name: str, value: Any) -> Any:
        """A generated placeholder ``@seeded/<name>/<i>`` (URL-encoded by the time the test
        sees it) as the id of a seeded row."""
        if not (isinstance(value, str) and unquote(value).startswith(SEEDED)):
            return value
        ids = self.ids[name]
        return ids[int(unquote(value).rsplit("/", 1)[1]) % len(ids)]


@dataclass
class Target:
    app: Any
    services: Services
    headers: dict[str, str]
    seeded: Seeded


def no_server_error(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    status = response.status_code
    if status < 500:
        return None
    label = f"{case.method.upper()} {case.path}"
    if status == 503 and label in LIVE_CAMERA_503:
        return None
    raise AssertionError(f"{label} answered {status}: {response.text[:500]}")


def error_has_detail(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    if not 400 <= response.status_code < 500:
        return None
    label = f"{case.method.upper()} {case.path} → {response.status_code}"
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{label}: the body is not JSON: {response.text[:200]!r}") from None
    if not isinstance(body, dict) or not body.get("detail"):
        raise AssertionError(f"{label}: no message in `detail`: {body!r}")
    return None


CHECKS = [
    no_server_error,
    error_has_detail,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "request-timeout": 20,
            "operations": [
                {
                    # An event stream never ends: keep its first event, or what came in
                    # a quarter of a second.
                    "include-path": "/api/v1/events/stream",
                    "max-stream-events": 1,
                    "request-timeout": 0.25,
                }
            ],
        }
    )


def _seed(client: requests.Session, services: Services, seeded: Seeded, closed_port: int) -> None:
    """Rows through the API where it can make them; an incident and an ONVIF camera directly."""
    h = {"Authorization": f"Bearer {BOOTSTRAP}"}
    square = {
        "type": "Polygon",
        "coordinates": [
            [[120.0, 30.0], [120.2, 30.0], [120.2, 30.2], [120.0, 30.2], [120.0, 30.0]]
        ],
    }
    grids: dict[str, dict[str, Any]] = {
        "G1": {"name": "City", "level": "city", "boundary": square},
        "G1.A": {"name": "Community A", "level": "community", "parent_code": "G1"},
    }
    for code, body in grids.items():
        r = client.put(f"/api/v1/grids/{code}", json=body, headers=h)
        assert r.status_code == 201, r.text
        seeded.add("code", code)
    r = client.post(
        "/api/v1/cameras",
        json={
            "name": "gate",
            "rtsp_url": f"rtsp://admin:secret@127.0.0.1:{closed_port}/main",
            "location": {"lat": 30.1, "lon": 120.1},
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    camera = r.json()["id"]
    seeded.add("camera_id", camera)
    seeded.add("camera_id", _onvif_camera(services, closed_port))
    incidents = []
    with services.tx() as session:
        for kind in ("motion", "crowd"):
            started = utcnow() - timedelta(minutes=5)
            row = create_incident(session, NewIncident(camera, "G1", kind, started))
            incidents.append(row.id)
    clip = services.objects.put_bytes(f"clips/{incidents[0]}.mp4", b"\x00" * 64, "video/mp4")
    jpeg = services.objects.put_bytes(
        f"snapshots/{incidents[0]}.jpg", b"\xff\xd8\xff", "image/jpeg"
    )
    with services.tx() as session:
        archived = ArchivedClip(clip.key, clip.sha256, clip.size, 2.0, jpeg.key, jpeg.sha256)
        mark_archived(session, incidents[0], archived)
    for i in incidents:
        seeded.add("incident_id", i)
    r = client.post(
        "/api/v1/cases",
        json={"external_ref": "GP-1", "title": "Noise", "kind": "dispute", "grid_code": "G1"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    case = r.json()["id"]
    seeded.add("case_id", case)
    r = client.post(
        f"/api/v1/cases/{case}/incidents", json={"incident_id": incidents[0]}, headers=h
    )
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/subscriptions",
        json={"url": f"http://127.0.0.1:{closed_port}/hook", "secret": "s3cret-s3cret"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    seeded.add("subscription_id", r.json()["id"])


def _onvif_camera(services: Services, closed_port: int) -> str:
    """A camera as an ONVIF probe leaves it, for a device that no longer answers."""
    where = f"127.0.0.1:{closed_port}"
    profile = Profile(
        "main", "Main", "H264", 1920, 1080, 25.0, f"rtsp://{where}/main", f"http://{where}/snap"
    )
    device = OnvifDevice("Acme", "X1", "1.0", "SN1", (profile,), ptz=True)
    onvif = {
        "host": "127.0.0.1",
        "port": closed_port,
        "username": "admin",
        "password_enc": services.secrets.encrypt("secret"),
        "profile_token": None,
        "sub_profile_token": None,
        "device": device.to_dict(),
        "main_profile": "main",
        "sub_profile": None,
        "probed_at": utcnow().isoformat(),
    }
    now = utcnow()
    row = Camera(
        id="cam_onvif_fuzz",
        name="onvif",
        grid_code="G1",
        zones=[],
        analytics=AnalyticsIn().model_dump(),
        recording=RecordingIn().model_dump(),
        enabled=True,
        onvif=onvif,
        created_at=now,
        updated_at=now,
    )
    url = f"rtsp://admin:secret@{where}/main"
    row.main_url_enc, row.main_url_shown = (
        services.secrets.encrypt(url),
        f"rtsp://admin:***@{where}/main",
    )
    with services.tx() as session:
        session.add(row)
    return row.id


@dataclass(frozen=True)
class Caller:
    """Who calls (a role, maybe limited to a grid) and on which database the app runs.

    No caller without a token is needed: schemathesis' coverage phase sends every
    operation without its ``Authorization`` header too. A wrong token is never sent (the
    caller's replaces any generated one): it would spend the client's allowance of failed
    authentications (api.ratelimit, in the database) and turn the rest of a run into 429s.
    """

    role: str
    scope: str | None = None
    database: str = "sqlite"

    @property
    def id(self) -> str:
        who = self.role + (f"@{self.scope}" if self.scope else "")
        return who if self.database == "sqlite" else f"{who}-{self.database}"


ALL_CALLERS = [
    *(Caller(role) for role in ROLES),
    Caller("grid_platform", scope="G1.A"),  # sees one community of the seeded city
    Caller("admin", database="postgres"),  # admin reaches every operation's inner code
]
# `make check` fuzzes as admin on SQLite only (XL_FUZZ_CALLERS=admin): admin reaches every
# operation's inner code; `make test` fuzzes as every caller.
_ONLY = os.environ.get("XL_FUZZ_CALLERS")
CALLERS = [c for c in ALL_CALLERS if _ONLY is None or c.id in _ONLY.split(",")]


@pytest.fixture(scope="module", params=CALLERS, ids=lambda c: c.id)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    caller: Caller = request.param
    with _database(request, caller.database) as url:
        data_dir = tmp_path_factory.mktemp(f"fuzz-{caller.id}") / "data"
        settings_ = Settings(
            data_dir=data_dir,
            database={"url": url},
            auth={"bootstrap_token": BOOTSTRAP},
            egress={"allow": ["127.0.0.0/8"]},  # webhooks to a closed port here
        )
        app = create_app(settings_, role="api")
        services: Services = app.state.services
        seeded = Seeded()
        try:
            # Starts the lifespan, as schemathesis does. (Its ASGI types say dict where
            # starlette's say MutableMapping: the same objects at runtime.)
            with asgi.get_client(app) as client:  # type: ignore[arg-type]
                _seed(client, services, seeded, CLOSED_PORT)
            with services.db.session() as session:
                token, _ = create_token(session, caller.role, f"fuzz-{caller.id}", caller.scope)
            yield Target(app, services, {"Authorization": f"Bearer {token}"}, seeded)
        finally:
            asgi.shutdown_lifespans()


@contextmanager
def _database(request: pytest.FixtureRequest, kind: str) -> Iterator[str | None]:
    """None (SQLite in the data dir), or a fresh schema of the test session's PostgreSQL
    database (as tests/conftest.py's ``db_url`` makes one, for a whole module here)."""
    if kind == "sqlite":
        yield None
        return
    with pg_schema(request.getfixturevalue("pg_database"), "fuzz") as url:
        yield url


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app that is never started."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)))
        document: dict[str, Any] = app.openapi()
        app.state.services.close()
    return document


SCHEMA = schemathesis.openapi.from_dict(_document(), config=_config())
# An SDP offer is text; schemathesis sends a text body as it is.
schemathesis.serializer.alias("application/sdp", "text/plain")
SEEDED = "@seeded/"


@SCHEMA.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Sometimes name a seeded row (resolved by the test, which knows the app's rows)."""
    if not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {
            k: st.sampled_from([v, *(f"{SEEDED}{k}/{i}" for i in range(2))])
            if k in SEEDED_PARAMS
            else st.just(v)
            for k, v in path_parameters.items()
        }
    )


@SCHEMA.hook
def flatmap_headers(ctx: Any, headers: dict[str, Any] | None) -> Any:
    """Sometimes a ``Range`` a player would send, so that evidence answers 206 and 416 too."""
    if ctx.operation.label not in EVIDENCE:
        return st.just(headers)
    ranges = st.from_regex(r"\Abytes=[0-9]{0,3}-[0-9]{0,3}\Z")
    return st.one_of(st.just(headers), ranges.map(lambda r: {**(headers or {}), "range": r}))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _to_loopback(label: str, body: Any, port: int) -> None:
    """Keep what the app reaches out to on loopback (done in the test, so that the cases
    of every phase pass here, not only those generated through hooks)."""
    if not isinstance(body, dict):
        return
    if label == "POST /api/v1/cameras" and isinstance(body.get("onvif"), dict):
        onvif = body["onvif"]
        if isinstance(onvif.get("host"), str):
            onvif["host"] = "127.0.0.1"
        if isinstance(onvif.get("port"), int):
            onvif["port"] = port
    elif label == "POST /api/v1/subscriptions" and isinstance(body.get("url"), str):
        parts = urlsplit(body["url"])
        try:
            if parts.hostname:
                body["url"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        except ValueError:
            pass
    elif label == "POST /api/v1/onvif/discover" and _is_number(body.get("timeout_s", 2.0)):
        body["timeout_s"] = 0.2  # as long as WS-Discovery listens: the shortest allowed


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_answers_as_documented(case: Case[Any], target: Target) -> None:
    case.path_parameters = {
        k: target.seeded.resolve(k, v) for k, v in (case.path_parameters or {}).items()
    }
    _to_loopback(f"{case.method.upper()} {case.path}", case.body, CLOSED_PORT)
    case.call_and_validate(app=target.app, headers=target.headers, checks=CHECKS)


# --- what the fuzzing found, pinned on both databases ------------------------------------


def test_a_sequence_number_beyond_64_bits_is_refused_not_a_crash(api: Api) -> None:
    h = api.as_role("operator")
    for path in ("/api/v1/events", "/api/v1/events/stream"):
        r = api.client.get(path, params={"after": 2**63}, headers=h)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"][0]["loc"] == ["query", "after"]


def test_a_grid_scoped_token_can_filter_by_grid(api: Api) -> None:
    """Two subtrees in one query (the filter's and the token's scope) used to clash."""
    admin = api.as_role("admin")
    for code, body in {
        "C1": {"name": "City", "level": "city"},
        "C1.T": {"name": "Town", "level": "town", "parent_code": "C1"},
    }.items():
        assert api.client.put(f"/api/v1/grids/{code}", json=body, headers=admin).status_code == 201
    with api.services.tx() as session:
        token, _ = create_token(session, "grid_platform", "scoped", grid_scope="C1")
        create_incident(session, NewIncident("cam_a", "C1.T", "motion", utcnow()))
    scoped = {"Authorization": f"Bearer {token}"}
    incidents = api.client.get("/api/v1/incidents", params={"grid_code": "C1.T"}, headers=scoped)
    assert incidents.status_code == 200, incidents.text
    assert [i["grid_code"] for i in incidents.json()["items"]] == ["C1.T"]
    cases = api.client.get("/api/v1/cases", params={"grid_code": "C1.T"}, headers=scoped)
    assert cases.status_code == 200, cases.text


def test_a_nul_character_is_refused_naming_the_field(api: Api) -> None:
    """PostgreSQL cannot store or compare text with NUL; SQLite could: both refuse it."""
    integrator, operator = api.as_role("integrator"), api.as_role("operator")
    r = api.client.get("/api/v1/events", params={"type": "a\x00"}, headers=operator)
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["query", "type"])
    r = api.client.get("/api/v1/cameras/cam%00", headers=integrator)
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["path", "camera_id"])
    body = {"name": "gate", "rtsp_url": "rtsp://127.0.0.1/x", "zones": [{"name": "a\x00"}]}
    r = api.client.post("/api/v1/cameras", json=body, headers=integrator)
    assert (r.status_code, r.json()["detail"][0]["loc"]) == (422, ["body", "zones", 0, "name"])
    # Escaped backslashes are not a NUL.
    body = {"name": "a\\u0000b", "rtsp_url": "rtsp://127.0.0.1/x"}
    r = api.client.post("/api/v1/cameras", json=body, headers=integrator)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "a\\u0000b"


def test_a_range_outside_the_clip_is_a_416_that_says_why(api: Api) -> None:
    with api.services.tx() as session:
        incident = create_incident(session, NewIncident("cam_a", None, "motion", utcnow())).id
    clip = api.services.objects.put_bytes(f"clips/{incident}.mp4", b"\x00" * 100, "video/mp4")
    with api.services.tx() as session:
        mark_archived(session, incident, ArchivedClip(clip.key, clip.sha256, 100, 1.0, None, None))
    h = {**api.as_role("operator"), "Range": "bytes=100-"}
    r = api.client.get(f"/api/v1/incidents/{incident}/clip", headers=h)
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */100"
    assert "100 bytes" in r.json()["detail"]


def test_a_body_that_is_not_text_is_a_documented_400(api: Api) -> None:
    h = {**api.as_role("integrator"), "Content-Type": "application/json"}
    r = api.client.post("/api/v1/cameras", content=b'{"name": "\xff\xfe"}', headers=h)
    assert r.status_code == 400 and r.json()["detail"]
    app = api.client.app
    assert isinstance(app, FastAPI)
    documented = app.openapi()["paths"]["/api/v1/cameras"]["post"]["responses"]
    assert "400" in documented


def test_every_error_answer_is_documented_with_its_body() -> None:
    """Each 4xx/5xx of the document carries ErrorOut; operations that take a token name
    401, 403, 429 and 503; those reading a body 400 and 413; those naming a thing 404."""
    paths = SCHEMA.raw_schema["paths"]
    checked = 0
    for path, methods in paths.items():
        for method, op in methods.items():
            codes = set(op["responses"])
            if path.startswith("/api/"):
                assert {"401", "403", "429", "503"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"400", "413", "422"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
            for code, answer in op["responses"].items():
                if code[0] in "45":
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)
                    checked += 1
    assert checked > 200
