"""Camera rows for tests of the tables that hang off cameras (leases, status, quality):
one, or a migrated database holding ``n`` enabled cameras ``cam_00000``…."""

from __future__ import annotations

from storage.db import Database
from storage.models import Camera, utcnow


def camera_row(camera_id: str, name: str) -> Camera:
    """An enabled camera with no source, zones or settings of its own."""
    now = utcnow()
    return Camera(
        id=camera_id,
        name=name,
        zones=[],
        analytics={},
        recording={},
        enabled=True,
        created_at=now,
        updated_at=now,
    )


def database_with_cameras(url: str, cameras: int, pool_size: int = 10) -> Database:
    db = Database(url, pool_size=pool_size)
    db.migrate()
    with db.session() as session:
        session.add_all(camera_row(f"cam_{i:05d}", f"c{i}") for i in range(cameras))
    return db
