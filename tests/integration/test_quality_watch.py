"""A camera's quality checks in the runtime (``runtime/quality.py``) with the database:
state and events written on change, the reference view kept for the next worker, a
reference taken on request, and a PTZ move ordered through the API not called
``displaced`` (issue #17). Real footage, one check per simulated second."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from analytics.quality import QualityConfig, QualityResult
from config.settings import Settings
from ingest.types import Frame
from runtime.quality import QualityWatch
from runtime.services import Services
from storage.events import list_events
from storage.models import utcnow
from storage.quality import QualityOrders, get_quality, quality_orders, request_reference
from tests.conftest import footage
from tests.unit.cameras_db import camera_row

Image = npt.NDArray[np.uint8]
CAMERA = "cam_quality0001"
CONFIG = QualityConfig(learn_s=8.0)


@pytest.fixture(scope="module")
def campus() -> list[Image]:
    return footage("vtest.avi", 400, (640, 480))


@pytest.fixture(scope="module")
def corridor() -> list[Image]:
    return footage("one-by-one-person-detection.mp4", 400, (640, 480))


@pytest.fixture
def services(make_settings: Callable[..., Settings], db_url: str) -> Iterator[Services]:
    s = Services.from_settings(make_settings(database={"url": db_url}))
    s.start()
    with s.tx() as session:
        session.add(camera_row(CAMERA, "gate"))
    yield s
    s.close()


T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC).timestamp()


def _frame(image: Image, ts: float) -> Frame:
    gray = np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    return Frame(CAMERA, int(ts), None, ts, gray, lambda: image)


async def _run(watch: QualityWatch, images: list[Image], start: float) -> list[QualityResult]:
    """One check per second of ``ts`` from ``start``, ten frames a second offered."""
    out = []
    for i, image in enumerate(images):
        result = await watch.maybe_check(_frame(image, start + i / 10))
        if result is not None:
            out.append(result)
    return out


def _watch(services: Services) -> QualityWatch:
    return QualityWatch(CAMERA, "150502", services, CONFIG, every_s=1.0)


async def test_state_and_reference_are_stored_and_follow_the_camera(
    services: Services, campus: list[Image], corridor: list[Image]
) -> None:
    watch = _watch(services)
    results = await _run(watch, campus[:200], T0)  # 20 s of picture
    assert results[0].state == "unknown" and results[-1].state == "ok"
    with services.db.session() as session:
        stored = get_quality(session, CAMERA)
        assert stored is not None and stored["state"] == "ok" and stored["reference_at"]
    # Turned away: degraded, stored, one camera.degraded event with the kind.
    await _run(watch, corridor[:120], T0 + 20)
    with services.db.session() as session:
        stored = get_quality(session, CAMERA)
        assert stored is not None and stored["state"] == "degraded"
        assert [p["kind"] for p in stored["problems"]] == ["displaced"]
        events = [e for e in list_events(session, limit=100) if e.type == "camera.degraded"]
    assert [e.data["raised"] for e in events] == [["displaced"]]
    assert events[0].grid_code == "150502"
    # Another worker takes the camera over: it knows the reference at once, so the view
    # that is still turned away is degraded again without a minute of learning.
    other = _watch(services)
    taken_over = await _run(other, corridor[120:200], T0 + 40)
    assert taken_over[-1].state == "degraded"
    assert "displaced" in {p.kind.value for p in taken_over[-1].problems}


async def test_a_ptz_move_is_not_displaced_and_the_new_view_becomes_the_reference(
    services: Services, campus: list[Image], corridor: list[Image]
) -> None:
    # The control: turned to the corridor without a PTZ order, the camera is displaced.
    control = _watch(services)
    await _run(control, campus[:200], T0)
    raised = [k for r in await _run(control, corridor[:100], T0 + 20) for k in r.raised]
    assert [k.value for k in raised] == ["displaced"]
    # Ordered through the API, the same move is not (the stored campus reference is used).
    watch = _watch(services)
    await _run(watch, campus[:100], T0 + 100)
    moved_until = datetime.fromtimestamp(T0 + 115, UTC)
    watch.apply(QualityOrders(reference_requested_at=None, ptz_until=moved_until))
    results = await _run(watch, corridor[:300], T0 + 110)  # the new view for 30 s
    assert not any(r.raised for r in results), [r.raised for r in results if r.raised]
    assert results[-1].state == "ok"  # learnt anew after the move
    # The control's degraded state was left behind in the database: this worker's healthy
    # picture restored it, with an event, though its own monitor cleared nothing.
    with services.db.session() as session:
        kinds = [e.type for e in list_events(session, limit=100) if e.type.startswith("camera.")]
    assert kinds == ["camera.degraded", "camera.restored"]


async def test_a_reference_request_is_served_once_and_cleared(
    services: Services, campus: list[Image], corridor: list[Image]
) -> None:
    watch = _watch(services)
    await _run(watch, campus[:200], T0)
    asked = utcnow()
    with services.tx() as session:
        request_reference(session, CAMERA, asked)
        orders = quality_orders(session, [CAMERA], asked)
    assert orders[CAMERA].reference_requested_at == asked
    watch.apply(orders[CAMERA])
    # The camera now looks at the corridor for good: after the request that is normal.
    results = await _run(watch, corridor[:100], T0 + 20)
    assert not any(r.raised for r in results)
    with services.db.session() as session:
        stored = get_quality(session, CAMERA)
        assert stored is not None and stored["reference_requested_at"] is None
        assert stored["reference_at"] >= datetime.fromtimestamp(T0 + 20, UTC) - timedelta(seconds=1)
        assert quality_orders(session, [CAMERA], utcnow()) == {}
