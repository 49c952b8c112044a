"""The camera registry API: validation, credentials never shown, changes audited."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api

SECRET = "S3cr3t-pw"


def _camera(**extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "gate",
        "rtsp_url": f"rtsp://admin:{SECRET}@127.0.0.1:1/main",
        "substream_url": f"rtsp://admin:{SECRET}@127.0.0.1:1/sub",
    }
    body.update(extra)
    return body


def test_create_get_patch_delete_and_the_password_never_comes_back(api: Api) -> None:
    h = api.as_role("integrator")
    r = api.client.post("/api/v1/cameras", json=_camera(grid_code="G1"), headers=h)
    assert r.status_code == 201, r.text
    cam = r.json()
    assert cam["rtsp_url"] == "rtsp://admin:***@127.0.0.1:1/main"
    assert cam["substream_url"] == "rtsp://admin:***@127.0.0.1:1/sub"
    responses = [
        r.text,
        api.client.get(f"/api/v1/cameras/{cam['id']}", headers=h).text,
        api.client.get("/api/v1/cameras", headers=h).text,
        api.client.get(f"/api/v1/cameras/{cam['id']}/status", headers=h).text,
    ]
    # Sent back with *** the stored password is kept; the stored URL still works.
    patched = api.client.patch(
        f"/api/v1/cameras/{cam['id']}",
        json={"rtsp_url": "rtsp://admin:***@127.0.0.1:2/main", "name": "north gate"},
        headers=h,
    )
    assert patched.status_code == 200, patched.text
    responses.append(patched.text)
    assert all(SECRET not in text for text in responses)
    with api.services.db.session() as session:
        from storage.cameras import get_camera

        row = get_camera(session, cam["id"])
        assert row is not None and row.main_url_enc is not None
        assert SECRET not in row.main_url_enc  # encrypted at rest
        url = api.services.secrets.decrypt(row.main_url_enc)
    assert url == f"rtsp://admin:{SECRET}@127.0.0.1:2/main"
    assert patched.json()["name"] == "north gate"
    assert api.client.delete(f"/api/v1/cameras/{cam['id']}", headers=h).status_code == 204
    assert api.client.get(f"/api/v1/cameras/{cam['id']}", headers=h).status_code == 404
    actions = [
        a["action"]
        for a in api.client.get(
            "/api/v1/audit", params={"resource": "camera"}, headers=api.as_role("admin")
        ).json()
    ]
    assert actions == ["delete", "update", "create"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (_camera(rtsp_url="http://example.com/stream"), "rtsp_url", "rtsp://"),
        (_camera(rtsp_url="rtsp:///nohost"), "rtsp_url", "host"),
        (_camera(rtsp_url="rtsp://h/x; rm -rf /"), "rtsp_url", "spaces"),
        (_camera(rtsp_url="file:///etc/passwd"), "rtsp_url", "file://"),
        (_camera(colour="red"), "colour", "Extra inputs"),
        (_camera(name=""), "name", "at least 1"),
        (_camera(location={"lat": 91, "lon": 0}), "lat", "less than or equal"),
        (
            _camera(zones=[{"name": "z", "kind": "motion", "polygon": [[0, 0], [1, 1], [2, 0]]}]),
            "zones",
            "zone 'z'",
        ),
        (_camera(recording={"pre_s": -1, "post_s": 5}), "pre_s", "greater than or equal"),
    ],
)
def test_invalid_camera_input_gets_422_naming_the_field(
    api: Api, body: dict[str, object], field: str, says: str
) -> None:
    r = api.client.post("/api/v1/cameras", json=body, headers=api.as_role("integrator"))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(field in [str(p) for p in d["loc"]] and says in d["msg"] for d in detail), detail
    assert SECRET not in r.text


def test_huge_body_is_refused(api: Api) -> None:
    body = b'{"name": "' + b"x" * (10 << 20) + b'"}'
    r = api.client.post(
        "/api/v1/cameras",
        content=body,
        headers={**api.as_role("integrator"), "Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_status_of_a_new_camera_and_unknown_ids(api: Api) -> None:
    h = api.as_role("integrator")
    cam = api.client.post("/api/v1/cameras", json=_camera(enabled=False), headers=h).json()
    assert api.client.get(f"/api/v1/cameras/{cam['id']}/status", headers=h).json()["state"] == (
        "disabled"
    )
    assert api.client.get("/api/v1/cameras/cam_nope/status", headers=h).status_code == 404
    assert api.client.patch("/api/v1/cameras/cam_nope", json={}, headers=h).status_code == 404
    snap = api.client.get(f"/api/v1/cameras/{cam['id']}/snapshot.jpg", headers=h)
    assert snap.status_code == 503 and "status" in snap.json()["detail"]
