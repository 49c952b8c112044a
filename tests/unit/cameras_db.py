"""A migrated database holding ``n`` enabled cameras ``cam_00000``…, for tests of the
tables that hang off cameras (leases, status)."""

from __future__ import annotations

from storage.db import Database
from storage.models import Camera, utcnow


def database_with_cameras(url: str, cameras: int, pool_size: int = 10) -> Database:
    db = Database(url, pool_size=pool_size)
    db.migrate()
    now = utcnow()
    with db.session() as session:
        session.add_all(
            Camera(
                id=f"cam_{i:05d}",
                name=f"c{i}",
                zones=[],
                analytics={},
                recording={},
                enabled=True,
                created_at=now,
                updated_at=now,
            )
            for i in range(cameras)
        )
    return db
