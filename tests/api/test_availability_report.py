"""GET /cameras/availability: a grid's subtree, totals only, the caller's scope, rolled-up
days giving the same answer as the raw transitions; 完好 time beside online time, per camera
and per grid (``/availability/grids``); the cameras not 完好 now (``/cameras/health``)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from storage import availability
from storage.grid_models import Grid
from storage.models import Camera, CameraQualityChange, CameraStateChange
from storage.tokens import create_token
from tests.api.conftest import Api
from tests.conftest import wait_for

URL = "/api/v1/cameras/availability"
#: Recent days: retention (run at start-up) compacts transitions older than 35 days.
SINCE = datetime.combine(datetime.now(UTC).date(), time(12), UTC) - timedelta(days=4)
UNTIL = SINCE + timedelta(days=3)
#: city C → counties K1, K2 → grids G1 (in K1), G2 (in K2)
GRIDS = [
    ("C", "city", None),
    ("K1", "county", "C"),
    ("K2", "county", "C"),
    ("G1", "grid", "K1"),
    ("G2", "grid", "K2"),
]
#: camera → (grid, hours online from SINCE on, then offline)
CAMERAS = {"cam_k1": ("K1", 36), "cam_g1": ("G1", 72), "cam_g2": ("G2", 12), "cam_c": ("C", 0)}


@pytest.fixture
def city(api: Api) -> Api:
    with api.services.tx() as session:
        for code, level, parent in GRIDS:
            session.add(Grid(code=code, name=code, level=level, parent_code=parent))
        for i, (camera_id, (grid, hours)) in enumerate(CAMERAS.items()):
            created = SINCE - timedelta(days=10, seconds=-i)
            session.add(  # disabled: the camera runtime leaves them alone
                Camera(
                    id=camera_id, name=camera_id, grid_code=grid, created_at=created, enabled=False
                )
            )
            if hours:
                session.add(CameraStateChange(camera_id=camera_id, state="online", at=SINCE))
                off = SINCE + timedelta(hours=hours)
                session.add(CameraStateChange(camera_id=camera_id, state="offline", at=off))
    return api


def _get(api: Api, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    query = {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), **params}
    response = api.client.get(URL, params=query, headers=headers or api.as_role("operator"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _online(body: dict[str, Any]) -> dict[str, float]:
    return {c["camera_id"]: c["online_s"] for c in body["cameras"]}


def test_the_whole_city_per_camera_and_in_total(city: Api) -> None:
    body = _get(city)
    assert _online(body) == {c: h * 3600.0 for c, (_, h) in CAMERAS.items()}
    assert body["camera_count"] == 4
    assert body["total_ratio"] == pytest.approx((36 + 72 + 12) / (4 * 72))
    assert body["cameras_at_or_above_98"] == 1  # cam_g1, online all along


def test_a_grid_code_reports_its_subtree(city: Api) -> None:
    assert _online(_get(city, grid_code="K1")) == {"cam_k1": 36 * 3600.0, "cam_g1": 72 * 3600.0}
    assert _online(_get(city, grid_code="G2")) == {"cam_g2": 12 * 3600.0}
    assert _get(city, grid_code="nowhere")["camera_count"] == 0


def test_cameras_false_gives_the_totals_only(city: Api) -> None:
    full, totals = _get(city, grid_code="K1"), _get(city, grid_code="K1", cameras="false")
    assert totals["cameras"] == []
    for key in ("camera_count", "total_ratio", "cameras_at_or_above_98"):
        assert totals[key] == pytest.approx(full[key]), key


def test_a_scoped_token_measures_its_own_grids_only(city: Api) -> None:
    with city.services.tx() as session:
        token, _ = create_token(session, "operator", "county 1", grid_scope="K1")
    headers = {"Authorization": f"Bearer {token}"}
    assert set(_online(_get(city, headers))) == {"cam_k1", "cam_g1"}
    assert _get(city, headers, grid_code="G1")["camera_count"] == 1
    outside = _get(city, headers, grid_code="K2", cameras="false")
    assert outside["camera_count"] == 0 and outside["total_ratio"] == 0.0


def test_rolled_up_days_answer_the_same(city: Api) -> None:
    before = _get(city)
    with city.services.tx() as session:
        for day in range(1, 3):  # the whole days inside the period
            availability.rollup(session, (SINCE + timedelta(days=day)).date())
    assert _get(city) == before


def test_since_after_until_is_refused(city: Api) -> None:
    params = {"since": UNTIL.isoformat(), "until": SINCE.isoformat()}
    response = city.client.get(URL, params=params, headers=city.as_role("operator"))
    assert response.status_code == 422


def test_the_default_period_is_the_last_day(city: Api) -> None:
    response = city.client.get(URL, headers=city.as_role("grid_platform"))
    assert response.status_code == 200  # not taken for a camera called "availability"
    body = response.json()
    since, until = (datetime.fromisoformat(body[k]) for k in ("since", "until"))
    assert until - since == timedelta(days=1)
    assert body["camera_count"] == 4


def _degrade(api: Api, camera_id: str, start_h: float, hours: float) -> None:
    with api.services.tx() as session:
        for at_h, state in ((start_h, "degraded"), (start_h + hours, "ok")):
            at = SINCE + timedelta(hours=at_h)
            session.add(CameraQualityChange(camera_id=camera_id, state=state, at=at))


@pytest.mark.parametrize("rolled_up", [False, True])
@pytest.mark.parametrize("named", [True, False], ids=["by-id", "read-all"])
def test_a_day_with_a_one_hour_degradation(
    city: Api, rolled_up: bool, named: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Online time and 完好 time differ by the hour the picture was degraded, per camera and
    per grid; a degradation while the camera is offline costs nothing more. A grid's
    cameras read by their ids (a few) or with the whole city's (thousands) alike."""
    if not named:
        monkeypatch.setattr(availability, "NAMED_CAMERAS", 0)
    _degrade(city, "cam_g1", 30, 1)  # online all along: loses the hour
    _degrade(city, "cam_k1", 35, 3)  # offline from 36 h on: loses one hour, not three
    if rolled_up:
        with city.services.tx() as session:
            for day in range(-1, 4):
                availability.rollup(session, (SINCE + timedelta(days=day)).date())
    body = _get(city)
    per_camera = {c["camera_id"]: c for c in body["cameras"]}
    hour = 3600.0
    assert per_camera["cam_g1"]["online_s"] == 72 * hour
    assert per_camera["cam_g1"]["good_s"] == pytest.approx(71 * hour)
    assert per_camera["cam_g1"]["good_ratio"] == pytest.approx(71 / 72)
    assert per_camera["cam_k1"]["good_s"] == pytest.approx(35 * hour)
    assert per_camera["cam_g2"]["good_s"] == per_camera["cam_g2"]["online_s"] == 12 * hour
    assert body["total_ratio"] == pytest.approx((36 + 72 + 12) / (4 * 72))
    assert body["good_ratio"] == pytest.approx((35 + 71 + 12) / (4 * 72))
    assert body["cameras_at_or_above_98"] == 1 and body["cameras_good_at_or_above_98"] == 1
    grids = _grids(city, grid_code="C")
    assert [g["grid_code"] for g in grids] == ["K1", "K2"]
    k1, k2 = grids
    assert k1["camera_count"] == 2 and k2["camera_count"] == 1
    assert k1["total_ratio"] == pytest.approx((36 + 72) / (2 * 72))
    assert k1["good_ratio"] == pytest.approx((35 + 71) / (2 * 72))
    assert k2["good_ratio"] == k2["total_ratio"] == pytest.approx(12 / 72)
    assert _get(city, grid_code="K1", cameras="false")["good_ratio"] == k1["good_ratio"]


def _grids(api: Api, headers: dict[str, str] | None = None, **params: Any) -> list[Any]:
    query = {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), **params}
    response = api.client.get(
        URL + "/grids", params=query, headers=headers or api.as_role("operator")
    )
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


def test_the_grid_report_lists_the_top_grids_and_keeps_to_the_scope(city: Api) -> None:
    top = _grids(city)
    assert [(g["grid_code"], g["camera_count"]) for g in top] == [("C", 4)]
    assert [g["grid_code"] for g in _grids(city, grid_code="G1")] == []  # a leaf
    with city.services.tx() as session:
        token, _ = create_token(session, "operator", "county 1", grid_scope="K1")
    scoped = _grids(city, {"Authorization": f"Bearer {token}"}, grid_code="C")
    assert [g["grid_code"] for g in scoped] == ["K1"]


def test_the_health_list_names_cameras_not_online_and_why(city: Api) -> None:
    body = {"name": "unreachable", "rtsp_url": "rtsp://127.0.0.1:9/none", "grid_code": "G2"}
    created = city.client.post("/api/v1/cameras", json=body, headers=city.as_role("integrator"))
    assert created.status_code == 201, created.text
    camera_id = created.json()["id"]
    headers = city.as_role("operator")

    def listed() -> dict[str, Any] | None:
        response = city.client.get("/api/v1/cameras/health", headers=headers)
        assert response.status_code == 200, response.text
        items = {c["camera_id"]: c for c in response.json()["items"]}
        assert not set(CAMERAS) & set(items)  # disabled cameras are not a problem
        found = items.get(camera_id)
        return found if found and found["last_error"] else None

    found = wait_for(listed, 20, "the unreachable camera listed with its error")
    assert found["state"] in ("offline", "connecting") and found["grid_code"] == "G2"
    assert "9" in found["last_error"] or "refused" in found["last_error"].lower()
    k1 = city.client.get("/api/v1/cameras/health", params={"grid_code": "K1"}, headers=headers)
    assert k1.json()["items"] == []
    none = city.client.get(f"/api/v1/cameras/{camera_id}/quality/reference.jpg", headers=headers)
    assert none.status_code == 404 and "reference" in none.json()["detail"]
