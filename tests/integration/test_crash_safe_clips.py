"""Crash-safe clips (issue #21): a service SIGKILLed mid-incident keeps the evidence.

The service runs as a real process with clips archived to SeaweedFS, watching the real
campus footage (people walking all the time, so one long motion incident). Ten seconds
into the incident the process is SIGKILLed. Started again on the same data dir, it
rebuilds the clip from the journal the recorder kept in the spool, archives and verifies
it: the incident ends ``process_died`` at its last recorded frame; the object in SeaweedFS
has the SHA-256 the database holds, decodes from its first frame, and covers the pre-roll
and the ten seconds up to the kill, less at most two.
"""

from __future__ import annotations

import hashlib
import io
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from storage.journal import JOURNAL_SUFFIX
from tests.conftest import SHARED_DATA, free_port, wait_for
from tests.integration.test_archive_outage import _env, service
from tests.peers.rtsp import RtspServer, file_mount
from tests.peers.seaweedfs import SeaweedS3, unique_bucket

pytestmark = pytest.mark.slow

TOKEN = "xl_test_admin_token_for_outage_00001"  # what _env bootstraps
PRE_S = 3.0
INTO_INCIDENT_S = 10.0
LOST_AT_MOST_S = 2.0


def test_a_clip_open_at_a_sigkill_is_recovered_archived_and_verified(
    seaweedfs: SeaweedS3, rtsp_server: Any, tmp_path: Path
) -> None:
    camera: RtspServer = rtsp_server({"/campus": file_mount(SHARED_DATA / "vtest.avi", fps=10)})
    bucket = unique_bucket()
    data_dir = tmp_path / "data"
    env = _env(data_dir, seaweedfs, bucket) | {
        "XUELIANG_INCIDENTS__QUIET_S": "20",  # people walk all the time: one long incident
        "XUELIANG_INCIDENTS__MAX_LEN_S": "300",
        "XUELIANG_RECORDING__PRE_S": str(PRE_S),
        "XUELIANG_RECORDING__POST_S": "2",
    }
    port, log = free_port(), tmp_path / "service.log"
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}

    with service(env, port, log) as proc, httpx.Client(base_url=base, headers=auth) as http:
        # Motion on only once the pre-roll ring holds PRE_S seconds (people walk from the
        # first frame: an incident at once would have a short pre-roll).
        created = http.post(
            "/api/v1/cameras",
            json={
                "name": "campus",
                "rtsp_url": camera.url("/campus"),
                "analytics": {"motion": {"enabled": False}},
            },
        )
        assert created.status_code == 201, created.text
        camera_id = created.json()["id"]
        wait_for(lambda: _online_for(http, camera_id, PRE_S + 2), 60, "the camera online")
        enabled = http.patch(
            f"/api/v1/cameras/{camera_id}", json={"analytics": {"motion": {"enabled": True}}}
        )
        assert enabled.status_code == 200, enabled.text
        incident = wait_for(lambda: _open_incident(http), 60, "a motion incident")
        started = datetime.fromisoformat(incident["started_at"]).timestamp()
        time.sleep(max(0.0, started + INTO_INCIDENT_S - time.time()))
        journals = list((data_dir / "spool").glob("*" + JOURNAL_SUFFIX))
        assert [p.name for p in journals] == [f"{incident['id']}.mp4{JOURNAL_SUFFIX}"]
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait(timeout=10)
    _assert_down(base)

    with service(env, port, log), httpx.Client(base_url=base, headers=auth) as http:

        def archived() -> dict[str, Any] | None:
            item: dict[str, Any] = http.get(f"/api/v1/incidents/{incident['id']}").json()
            return item if item["clip"]["state"] == "archived" else None

        item = wait_for(archived, 60, "the recovered clip archived")
        events = http.get("/api/v1/events", params={"limit": 1000}).json()["items"]

    ended = datetime.fromisoformat(item["ended_at"]).timestamp()
    data = _object(seaweedfs, bucket, incident["id"])
    frames, first_key, seconds = _decode(data)
    print(
        f"\nkilled {killed_at - started:.1f} s into the incident; clip {seconds:.1f} s "
        f"({frames} frames, first a keyframe: {first_key}), incident ended "
        f"{killed_at - ended:.2f} s before the kill"
    )
    assert item["end_reason"] == "process_died"
    assert item["snapshot"] is not None, "the snapshot is taken from the recovered clip"
    assert killed_at - LOST_AT_MOST_S <= ended <= killed_at
    assert hashlib.sha256(data).hexdigest() == item["clip"]["sha256"]
    assert first_key and frames >= 10 * (seconds - 1)
    # The pre-roll (from the keyframe at or before start - pre_s) up to the kill, less 2 s.
    assert seconds >= PRE_S + INTO_INCIDENT_S - LOST_AT_MOST_S, seconds
    assert abs(item["clip"]["duration_s"] - seconds) < 0.5
    archived_events = [
        e
        for e in events
        if e["type"] == "incident.clip_archived" and e["data"]["id"] == incident["id"]
    ]
    assert len(archived_events) == 1
    assert not list((data_dir / "spool").glob("*" + JOURNAL_SUFFIX)), "a journal was left"


def _online_for(http: httpx.Client, camera_id: str, seconds: float) -> bool:
    status = http.get(f"/api/v1/cameras/{camera_id}/status").json()
    since = status.get("since")
    online = status["state"] == "online" and since is not None
    return online and time.time() - datetime.fromisoformat(since).timestamp() >= seconds


def _open_incident(http: httpx.Client) -> dict[str, Any] | None:
    items = http.get("/api/v1/incidents", params={"limit": 10}).json()["items"]
    return next((i for i in items if i["ended_at"] is None), None)


def _assert_down(base: str) -> None:
    """Nothing answers: the kill really happened."""
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/healthz", timeout=1)


def _object(s3: SeaweedS3, bucket: str, incident_id: str) -> bytes:
    client = s3.client()
    keys = [o.object_name for o in client.list_objects(bucket, "clips/", recursive=True)]
    key = next(k for k in keys if k is not None and k.endswith(f"/{incident_id}.mp4"))
    obj = client.get_object(bucket, key)
    try:
        return obj.read()
    finally:
        obj.close()
        obj.release_conn()


def _decode(data: bytes) -> tuple[int, bool, float]:
    """Frames decoded (every one, strictly: a broken frame raises), whether the first
    packet is a keyframe, and the clip's duration in seconds."""
    with av.open(io.BytesIO(data), mode="r") as clip:
        stream = clip.streams.video[0]
        stream.codec_context.options = {"err_detect": "explode"}
        first_key: bool | None = None
        frames = 0
        for packet in clip.demux(stream):
            if packet.size and first_key is None:
                first_key = packet.is_keyframe
            frames += len(packet.decode())
        assert stream.duration is not None and stream.time_base is not None
        seconds = float(stream.duration * stream.time_base)
    return frames, bool(first_key), seconds
