"""The archiver during an object-store outage: every clip kept, one log line per pass."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable

import pytest

from config.settings import Settings
from runtime.archiver import Archiver
from runtime.cameras import build_spool
from runtime.services import Services
from storage.spool import SpoolEntry
from tests.peers.seaweedfs import SeaweedS3, unique_bucket

CLIPS = 5


def test_an_outage_keeps_every_clip_and_logs_once_per_pass(
    make_settings: Callable[..., Settings],
    seaweedfs_isolated: SeaweedS3,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s3 = seaweedfs_isolated
    settings = make_settings(
        storage={
            "backend": "s3",
            "s3": {
                "endpoint": s3.endpoint,
                "access_key": s3.credentials.access_key,
                "secret_key": s3.credentials.secret_key,
                "bucket": unique_bucket(),
            },
        }
    )
    services = Services.from_settings(settings)
    services.start()
    archiver = Archiver(services, build_spool(services))
    for n in range(CLIPS):
        path = archiver.spool.file_path(f"clip{n}.mp4")
        data = f"not really an mp4 {n}".encode()
        path.write_bytes(data)
        archiver.spool.add(
            SpoolEntry(
                incident_id=f"inc{n}",
                camera_id="cam",
                clip_path=str(path),
                clip_key=f"clips/cam/inc{n}.mp4",
                clip_sha256=hashlib.sha256(data).hexdigest(),
                clip_size=len(data),
                duration_s=1.0,
            )
        )
    s3.stop()
    with caplog.at_level(logging.WARNING, logger="runtime.archiver"):
        waiting = asyncio.run(archiver.drain())
    assert waiting == CLIPS
    assert len(archiver.spool.entries()) == CLIPS, "a clip left the spool while S3 was down"
    lines = [r.getMessage() for r in caplog.records if r.name == "runtime.archiver"]
    assert len(lines) == 1, lines
    assert "object store unavailable" in lines[0] and f"{CLIPS} clip(s) kept" in lines[0]
    services.db.dispose()
