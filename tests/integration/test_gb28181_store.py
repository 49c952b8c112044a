"""GB/T 28181 device store (storage/gb28181.py) on SQLite and PostgreSQL.

Each state change is checked together with the events it appended in the same transaction;
the races (two expirers, keepalive against expiry, two REGISTERs of one unknown device)
run in threads with their own sessions.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import event, inspect, text
from sqlalchemy.orm import Session

import storage.grid_models  # noqa: F401  (all tables in the metadata, as migrations see it)
from storage import gb28181 as gb
from storage.db import MIGRATIONS, Database
from storage.events import EventRecord, list_events
from storage.models import Base
from storage.secrets import SecretBox

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DEV = "34020000001320000001"
NVR = "34020000001110000001"
ADDR = "192.0.2.10:5060"
DEADLINE_S = 180.0
T = TypeVar("T")


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(Fernet.generate_key())


def dev(n: int) -> str:
    return f"3402000000132{n:07d}"


def events(db: Database, type_: str | None = None) -> list[EventRecord]:
    types = [type_] if type_ else [gb.ONLINE_EVENT, gb.OFFLINE_EVENT, gb.CATALOG_EVENT]
    with db.session() as session:
        return list_events(session, limit=10_000, types=types)


def run(db: Database, work: Callable[[Session], T]) -> T:
    with db.session() as session:
        return work(session)


def _replace(
    session: Session, *, device_id: str, items: list[gb.CatalogItem]
) -> gb.CatalogChange | None:
    return gb.replace_catalog(session, device_id, items, T0)


def registered(
    db: Database,
    device_id: str = DEV,
    at: datetime = T0,
    expires_s: float = 3600,
    *,
    transport: str = "udp",
    address: str = ADDR,
    contact: str | None = None,
    accept_unknown: bool = True,
) -> gb.DeviceChange:
    with db.session() as session:
        return gb.register(
            session,
            device_id,
            transport=transport,
            address=address,
            contact=contact or f"sip:{device_id}@{ADDR}",
            expires_at=at + timedelta(seconds=expires_s),
            now=at,
            accept_unknown=accept_unknown,
        )


def device(db: Database, device_id: str = DEV) -> gb.DeviceView:
    view = run(db, lambda s: gb.get_device(s, device_id))
    assert view is not None
    return view


# --- validation (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "3402000000132000000",
        "340200000013200000011",
        "3402000000132000000x",
        "３４０２００００００１３２００００００１",
        None,
        34020000001320000001,
    ],
)
def test_a_code_that_is_not_20_ascii_digits_is_refused_naming_the_field(value: Any) -> None:
    with pytest.raises(gb.InvalidCode, match="channel_id") as raised:
        gb.check_code(value, "channel_id")
    assert raised.value.field == "channel_id"
    assert isinstance(raised.value, ValueError)


def test_a_code_may_come_with_surrounding_white_space() -> None:
    assert gb.check_code(f" {DEV}\r\n", "device_id") == DEV


@pytest.mark.parametrize(
    ("raw", "size", "clean"),
    [
        (None, 10, None),
        ("   ", 10, None),
        ("Camera\x00 1", 20, "Camera 1"),
        ("  front\t\tdoor \r\n", 20, "front door"),
        ("gate\u202e\u200bA", 20, "gateA"),
        ("bad \udcff byte", 20, "bad byte"),
        ("x" * 500, 200, "x" * 200),
        ("abc def", 4, "abc"),  # cut, then no trailing space
        ("东门 摄像机\u3000二", 20, "东门 摄像机 二"),
    ],
)
def test_text_from_devices_is_cleaned_and_cut_to_the_column(
    raw: str | None, size: int, clean: str | None
) -> None:
    assert gb.clean_text(raw, size) == clean


@pytest.mark.parametrize(
    ("value", "limit", "kept"),
    [
        (116.397, 180.0, 116.397),
        (-180.0, 180.0, -180.0),
        (180.0001, 180.0, None),
        (91.0, 90.0, None),
        (-90.0, 90.0, -90.0),
        (float("nan"), 90.0, None),
        (float("inf"), 180.0, None),
        (None, 90.0, None),
        (True, 90.0, None),
    ],
)
def test_coordinates_outside_their_range_become_none(
    value: Any, limit: float, kept: float | None
) -> None:
    assert gb.coordinate(value, limit) == kept


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("ON", "ON"),
        ("online", "ON"),
        (" ok ", "ON"),
        ("1", "ON"),
        ("OFF", "OFF"),
        ("OFFLINE", "OFF"),
        ("", "OFF"),
        (None, "OFF"),
        ("garbage", "OFF"),
    ],
)
def test_channel_status_is_on_or_off(raw: str | None, status: str) -> None:
    assert gb.channel_status(raw) == status


# --- register / unregister --------------------------------------------------------------------


def test_an_unknown_device_is_refused_unless_the_caller_accepts_it(db: Database) -> None:
    refused = registered(db, accept_unknown=False)
    assert refused == gb.DeviceChange(DEV, "unknown", online=False)
    assert not refused.accepted
    assert run(db, lambda s: gb.get_device(s, DEV)) is None
    assert events(db) == []

    accepted = registered(db, transport=" tcp ")
    assert accepted == gb.DeviceChange(DEV, "ok", online=True, changed=True, created=True)
    view = device(db)
    assert (view.origin, view.online, view.enabled, view.has_password) == (
        "device",
        True,
        True,
        False,
    )
    assert (view.transport, view.address, view.contact) == ("TCP", ADDR, f"sip:{DEV}@{ADDR}")
    assert view.registered_at == T0
    assert view.expires_at == T0 + timedelta(hours=1)
    assert view.last_keepalive_at is None
    [online] = events(db)
    assert online.type == "gb28181.device.online"
    assert online.data == {
        "device_id": DEV,
        "online": True,
        "at": T0.isoformat(),
        "reason": "register",
        "address": ADDR,
    }


def test_a_refresh_of_an_online_device_updates_it_and_appends_nothing(db: Database) -> None:
    registered(db)
    later = T0 + timedelta(minutes=30)
    change = registered(db, at=later, address="198.51.100.7:40000")
    assert change == gb.DeviceChange(DEV, "ok", online=True, changed=False)
    view = device(db)
    assert view.address == "198.51.100.7:40000"
    assert view.registered_at == later
    assert view.expires_at == later + timedelta(hours=1)
    assert len(events(db)) == 1


def test_a_disabled_device_is_refused(db: Database, box: SecretBox) -> None:
    run(db, lambda s: gb.create_device(s, DEV, box=box, enabled=False))
    assert registered(db) == gb.DeviceChange(DEV, "disabled", online=False)
    assert not device(db).online
    assert events(db) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("transport", "SCTP"), ("address", ""), ("address", "a b:5060"), ("contact", "x" * 501)],
)
def test_bad_signalling_values_are_refused_before_anything_is_written(
    db: Database, field: str, value: str
) -> None:
    signalling = {"transport": "udp", "address": ADDR, "contact": None} | {field: value}
    with pytest.raises(gb.InvalidValue, match=field):
        registered(
            db,
            transport=str(signalling["transport"]),
            address=str(signalling["address"]),
            contact=signalling["contact"],
        )
    assert run(db, lambda s: gb.get_device(s, DEV)) is None


def test_naive_datetimes_are_refused(db: Database) -> None:
    naive = datetime(2026, 3, 1, 8, 0)
    with pytest.raises(ValueError, match="naive"), db.session() as session:
        gb.keepalive(session, DEV, naive)


def test_unregister_takes_the_device_offline_and_ends_its_registration(db: Database) -> None:
    registered(db)
    later = T0 + timedelta(minutes=5)
    change = run(db, lambda s: gb.unregister(s, DEV, later))
    assert change == gb.DeviceChange(DEV, "ok", online=False, changed=True)
    view = device(db)
    assert (view.online, view.expires_at) == (False, None)
    assert [e.data for e in events(db, gb.OFFLINE_EVENT)] == [
        {"device_id": DEV, "online": False, "at": later.isoformat(), "reason": "unregister"}
    ]
    again = run(db, lambda s: gb.unregister(s, DEV, later))
    assert not again.changed
    assert run(db, lambda s: gb.keepalive(s, DEV, later)) is False
    assert run(db, lambda s: gb.unregister(s, NVR, later)).outcome == "unknown"
    assert len(events(db)) == 2


def test_expires_zero_is_an_unregistration(db: Database) -> None:
    registered(db)
    change = registered(db, at=T0 + timedelta(seconds=10), expires_s=0)
    assert change == gb.DeviceChange(DEV, "ok", online=False, changed=True)
    assert registered(db, device_id=NVR, expires_s=0).outcome == "unknown"  # not created
    assert run(db, lambda s: gb.get_device(s, NVR)) is None


# --- keepalive and expiry ---------------------------------------------------------------------


def test_keepalive_needs_a_known_enabled_registered_device(db: Database, box: SecretBox) -> None:
    assert run(db, lambda s: gb.keepalive(s, DEV, T0)) is False  # unknown
    run(db, lambda s: gb.create_device(s, DEV, box=box))
    assert run(db, lambda s: gb.keepalive(s, DEV, T0)) is False  # never registered
    registered(db, expires_s=600)
    at = T0 + timedelta(seconds=60)
    assert run(db, lambda s: gb.keepalive(s, DEV, at, "203.0.113.5:5061")) is True
    view = device(db)
    assert (view.last_keepalive_at, view.address) == (at, "203.0.113.5:5061")
    assert len(events(db)) == 1  # online at REGISTER; a keepalive of an online device: none
    assert run(db, lambda s: gb.keepalive(s, DEV, T0 + timedelta(seconds=600))) is False
    with pytest.raises(gb.InvalidCode), db.session() as session:
        gb.keepalive(session, "garbage", T0)


def test_expire_takes_offline_the_expired_and_the_silent_devices_once(db: Database) -> None:
    now = T0 + timedelta(seconds=1000)
    registered(db, dev(1), expires_s=900)  # registration ran out
    registered(db, dev(2))  # keepalives stopped
    run(db, lambda s: gb.keepalive(s, dev(2), T0 + timedelta(seconds=700)))
    registered(db, dev(3))  # keeps alive
    run(db, lambda s: gb.keepalive(s, dev(3), now - timedelta(seconds=30)))
    registered(db, dev(4), at=now - timedelta(seconds=60))  # registered lately, no keepalive yet
    registered(db, dev(5))  # registered long ago, no keepalive
    registered(db, dev(6), at=T0 + timedelta(seconds=950))  # a refresh counts as being heard
    run(db, lambda s: gb.keepalive(s, dev(6), T0 + timedelta(seconds=100)))
    before = len(events(db))

    gone = run(db, lambda s: gb.expire(s, now, DEADLINE_S))
    assert gone == [dev(1), dev(2), dev(5)]
    offline = events(db, gb.OFFLINE_EVENT)
    assert [(e.data["device_id"], e.data["reason"]) for e in offline] == [
        (dev(1), "registration_expired"),
        (dev(2), "keepalive_timeout"),
        (dev(5), "keepalive_timeout"),
    ]
    assert offline[0].data == {
        "device_id": dev(1),
        "online": False,
        "at": now.isoformat(),
        "reason": "registration_expired",
    }
    assert len(events(db)) == before + 3
    assert run(db, lambda s: gb.expire(s, now, DEADLINE_S)) == []
    assert [d.device_id for d in run(db, gb.online_devices)] == [dev(3), dev(4), dev(6)]


def test_a_keepalive_after_a_timeout_brings_the_device_back_but_not_after_expiry(
    db: Database,
) -> None:
    registered(db, expires_s=3600)
    now = T0 + timedelta(seconds=400)
    assert run(db, lambda s: gb.expire(s, now, DEADLINE_S)) == [DEV]
    assert run(db, lambda s: gb.keepalive(s, DEV, now + timedelta(seconds=5))) is True
    assert device(db).online
    back = events(db)[-1]
    assert (back.type, back.data["reason"]) == (gb.ONLINE_EVENT, "keepalive")
    late = T0 + timedelta(seconds=3600)
    assert run(db, lambda s: gb.expire(s, late, DEADLINE_S)) == [DEV]
    assert run(db, lambda s: gb.keepalive(s, DEV, late)) is False
    assert [e.type for e in events(db)] == [
        gb.ONLINE_EVENT,
        gb.OFFLINE_EVENT,
        gb.ONLINE_EVENT,
        gb.OFFLINE_EVENT,
    ]


def test_concurrent_expirers_take_each_device_offline_exactly_once(db: Database) -> None:
    devices, rounds = 40, 3
    now = T0 + timedelta(seconds=1000)
    for r in range(rounds):
        ids = [dev(100 * r + n) for n in range(devices)]
        for n, device_id in enumerate(ids):  # half expired, half silent
            registered(db, device_id, expires_s=600 if n % 2 else 3600)
        barrier = threading.Barrier(2)

        def expirer(barrier: threading.Barrier = barrier) -> list[str]:
            with db.session() as session:
                barrier.wait(timeout=10)
                return gb.expire(session, now, DEADLINE_S)

        with ThreadPoolExecutor(2) as pool:
            first, second = [f.result(timeout=60) for f in [pool.submit(expirer) for _ in "ab"]]
        assert not set(first) & set(second)
        assert sorted(first + second) == ids
    offline = events(db, gb.OFFLINE_EVENT)
    assert len(offline) == devices * rounds
    assert len({e.data["device_id"] for e in offline}) == devices * rounds
    assert run(db, gb.online_devices) == []


def test_expire_does_not_wait_for_a_keepalive_in_progress(db: Database) -> None:
    """PostgreSQL: the row being kept alive is skipped, the others expire at once. SQLite has
    one writer: the expirer waits for the keepalive's commit, then finds the device alive."""
    registered(db, dev(1))
    registered(db, dev(2))
    now = T0 + timedelta(seconds=400)
    with ThreadPoolExecutor(1) as pool, db.session() as keeping:
        assert gb.keepalive(keeping, dev(1), now) is True  # row locked, not committed
        expiring = pool.submit(run, db, lambda s: gb.expire(s, now, DEADLINE_S))
        if db.dialect == "postgresql":
            assert expiring.result(timeout=10) == [dev(2)]
    assert expiring.result(timeout=60) == [dev(2)]
    assert [d.device_id for d in run(db, gb.online_devices)] == [dev(1)]
    assert [e.data["device_id"] for e in events(db, gb.OFFLINE_EVENT)] == [dev(2)]


def test_a_keepalive_racing_an_expiry_waits_for_it_and_brings_the_device_back(
    db: Database,
) -> None:
    registered(db)
    now = T0 + timedelta(seconds=400)
    with ThreadPoolExecutor(1) as pool:
        with db.session() as expiring:
            assert gb.expire(expiring, now, DEADLINE_S) == [DEV]  # not committed yet
            keeping = pool.submit(run, db, lambda s: gb.keepalive(s, DEV, now))
            with pytest.raises(TimeoutError):
                keeping.result(timeout=0.5)  # waits for the expiry's lock
        assert keeping.result(timeout=60) is True
    assert device(db).online
    assert [(e.type, e.data["reason"]) for e in events(db)] == [
        (gb.ONLINE_EVENT, "register"),
        (gb.OFFLINE_EVENT, "keepalive_timeout"),
        (gb.ONLINE_EVENT, "keepalive"),
    ]


def test_two_registers_of_one_unknown_device_store_it_once(db: Database) -> None:
    barrier = threading.Barrier(2)

    def register() -> gb.DeviceChange:
        barrier.wait(timeout=10)
        return registered(db)

    with ThreadPoolExecutor(2) as pool:
        changes = [f.result(timeout=60) for f in [pool.submit(register) for _ in "ab"]]
    assert sorted(c.created for c in changes) == [False, True]
    assert sorted(c.changed for c in changes) == [False, True]
    assert all(c.accepted and c.online for c in changes)
    assert len(events(db)) == 1


# --- device info and catalog ------------------------------------------------------------------


def test_device_info_fills_the_name_only_when_there_is_none(db: Database, box: SecretBox) -> None:
    assert run(db, lambda s: gb.set_device_info(s, DEV, "x", None, None, None)) is False
    registered(db)
    info = ("IP CAMERA\x00", "Hikvision", "DS-2CD" + "9" * 200, " V5.5.0 ")
    assert run(db, lambda s: gb.set_device_info(s, DEV, *info, now=T0)) is True
    view = device(db)
    assert (view.name, view.manufacturer, view.firmware) == ("IP CAMERA", "Hikvision", "V5.5.0")
    assert view.model is not None and len(view.model) == 100
    run(db, lambda s: gb.create_device(s, NVR, box=box, name="North gate NVR"))
    run(db, lambda s: gb.set_device_info(s, NVR, "Embedded Net DVR", "Dahua", "NVR", "4.0"))
    assert device(db, NVR).name == "North gate NVR"
    assert events(db, gb.CATALOG_EVENT) == []


def ch(n: int) -> str:
    return f"3402000000131{n:07d}"


def test_replace_catalog_upserts_removes_and_reports_the_difference(db: Database) -> None:
    assert run(db, lambda s: gb.replace_catalog(s, DEV, [], T0)) is None  # unknown device
    registered(db)
    first = [
        gb.CatalogItem(ch(1), name="Gate", status="ON", longitude=116.39, latitude=39.9),
        gb.CatalogItem(ch(2), name="Hall", status="OFF"),
        gb.CatalogItem(ch(3), name="Yard", status="online", longitude=200.0, latitude=95.0),
    ]
    change = run(db, lambda s: gb.replace_catalog(s, DEV, first, T0))
    assert change == gb.CatalogChange(DEV, 3, added=(ch(1), ch(2), ch(3)))
    [catalog] = events(db, gb.CATALOG_EVENT)
    assert catalog.data == {
        "device_id": DEV,
        "at": T0.isoformat(),
        "channels": 3,
        "added": [ch(1), ch(2), ch(3)],
        "removed": [],
        "changed": [],
        "truncated": False,
    }
    yard = run(db, lambda s: gb.get_channel(s, DEV, ch(3)))
    assert yard is not None
    assert (yard.status, yard.longitude, yard.latitude) == ("ON", None, None)

    same = run(db, lambda s: gb.replace_catalog(s, DEV, list(first), T0 + timedelta(minutes=1)))
    assert same is not None and not same.has_changes and same.channels == 3
    assert len(events(db, gb.CATALOG_EVENT)) == 1

    later = T0 + timedelta(minutes=2)
    second = [
        gb.CatalogItem(ch(1), name="Gate east", status="ON", longitude=116.39, latitude=39.9),
        gb.CatalogItem(ch(3), name="Yard", status="ON", longitude=200.0, latitude=95.0),
        gb.CatalogItem(ch(4), name="first copy"),
        gb.CatalogItem("not-a-code", name="junk"),
        gb.CatalogItem(f" {ch(4)} ", name="P" * 300, owner="Owner", civil_code="340200"),
    ]
    change = run(db, lambda s: gb.replace_catalog(s, DEV, second, later))
    assert change == gb.CatalogChange(
        DEV, 3, added=(ch(4),), removed=(ch(2),), changed=(ch(1),), skipped=("not-a-code",)
    )
    assert events(db, gb.CATALOG_EVENT)[-1].data["removed"] == [ch(2)]
    view = device(db)
    assert [c.channel_id for c in view.channels] == [ch(1), ch(3), ch(4)]
    gate, yard, new = view.channels
    assert (gate.name, gate.updated_at) == ("Gate east", later)
    assert yard.updated_at == T0  # unchanged
    assert (new.name, new.owner, new.civil_code, new.status) == (
        "P" * 200,
        "Owner",
        "340200",
        "OFF",
    )
    assert run(db, lambda s: gb.get_channel(s, DEV, ch(2))) is None


def test_a_huge_catalog_makes_a_bounded_event(db: Database) -> None:
    registered(db)
    items = [gb.CatalogItem(ch(n), status="ON") for n in range(gb.MAX_LISTED + 1)]
    change = run(db, lambda s: gb.replace_catalog(s, DEV, items, T0))
    assert change is not None and len(change.added) == gb.MAX_LISTED + 1
    [catalog] = events(db, gb.CATALOG_EVENT)
    assert catalog.data["channels"] == gb.MAX_LISTED + 1
    assert len(catalog.data["added"]) == gb.MAX_LISTED
    assert catalog.data["truncated"] is True
    removed = run(db, lambda s: gb.replace_catalog(s, DEV, [], T0))
    assert removed is not None and len(removed.removed) == gb.MAX_LISTED + 1
    assert device(db).channels == ()


# --- reading ----------------------------------------------------------------------------------


def test_list_devices_reads_devices_and_channels_in_two_queries(db: Database) -> None:
    for n in range(5):
        registered(db, dev(n))
        items = [gb.CatalogItem(ch(10 * n + k)) for k in range(3)]
        run(db, functools.partial(_replace, device_id=dev(n), items=items))
    run(db, lambda s: gb.unregister(s, dev(4), T0))
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "gb28181" in statement:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        views = run(db, gb.list_devices)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(statements) == 2
    assert [v.device_id for v in views] == [dev(n) for n in range(5)]
    assert [[c.channel_id for c in v.channels] for v in views] == [
        [ch(10 * n + k) for k in range(3)] for n in range(5)
    ]
    online = run(db, gb.online_devices)
    assert [v.device_id for v in online] == [dev(n) for n in range(4)]
    assert all(len(v.channels) == 3 for v in online)
    offline = run(db, lambda s: gb.list_devices(s, online=False))
    assert [v.device_id for v in offline] == [dev(4)]
    assert run(db, lambda s: gb.get_device(s, "junk")) is None


# --- administration ---------------------------------------------------------------------------

PASSWORD = "Gb28181-s3cret!"


def test_passwords_are_stored_encrypted(db: Database, box: SecretBox) -> None:
    view = run(
        db, lambda s: gb.create_device(s, DEV, box=box, password=PASSWORD, name=" Gate\x00 1 ")
    )
    assert (view.name, view.has_password, view.origin, view.enabled) == (
        "Gate 1",
        True,
        "api",
        True,
    )
    with db.session() as session:
        raw = session.execute(text("SELECT * FROM gb28181_devices")).mappings().one()
    assert PASSWORD not in repr(dict(raw))
    assert box.decrypt(raw["password_enc"]) == PASSWORD
    assert run(db, lambda s: gb.device_password(s, DEV, box)) == PASSWORD
    assert run(db, lambda s: gb.device_password(s, NVR, box)) is None  # unknown
    registered(db, NVR)
    assert run(db, lambda s: gb.device_password(s, NVR, box)) is None  # the default applies


def test_create_refuses_a_stored_device_and_a_bad_id(db: Database, box: SecretBox) -> None:
    run(db, lambda s: gb.create_device(s, DEV, box=box))
    with pytest.raises(gb.DeviceExists), db.session() as session:
        gb.create_device(session, DEV, box=box)
    registered(db, NVR)  # registered on its own first
    with pytest.raises(gb.DeviceExists), db.session() as session:
        gb.create_device(session, NVR, box=box)
    with pytest.raises(gb.InvalidCode, match="device_id"), db.session() as session:
        gb.create_device(session, "3402", box=box)
    with pytest.raises(gb.InvalidValue, match="empty"), db.session() as session:
        gb.create_device(session, dev(9), box=box, password="")
    assert run(db, lambda s: gb.get_device(s, dev(9))) is None


def test_update_changes_only_what_is_given(db: Database, box: SecretBox) -> None:
    assert run(db, lambda s: gb.update_device(s, DEV, box=box, enabled=False)) is None
    run(db, lambda s: gb.create_device(s, DEV, box=box, password=PASSWORD, name="Gate"))
    view = run(db, lambda s: gb.update_device(s, DEV, box=box, name="North gate"))
    assert view is not None
    assert (view.name, view.has_password, view.enabled) == ("North gate", True, True)
    assert run(db, lambda s: gb.device_password(s, DEV, box)) == PASSWORD
    run(db, lambda s: gb.update_device(s, DEV, box=box, password="another-one"))
    assert run(db, lambda s: gb.device_password(s, DEV, box)) == "another-one"
    view = run(db, lambda s: gb.update_device(s, DEV, box=box, password=None))
    assert view is not None and not view.has_password and view.name == "North gate"
    assert run(db, lambda s: gb.device_password(s, DEV, box)) is None


def test_disabling_an_online_device_takes_it_offline(db: Database, box: SecretBox) -> None:
    registered(db)
    view = run(db, lambda s: gb.update_device(s, DEV, box=box, enabled=False, now=T0))
    assert view is not None and (view.enabled, view.online, view.expires_at) == (False, False, None)
    offline = events(db, gb.OFFLINE_EVENT)
    assert [(e.data["device_id"], e.data["reason"]) for e in offline] == [(DEV, "disabled")]
    assert run(db, lambda s: gb.keepalive(s, DEV, T0)) is False
    assert registered(db).outcome == "disabled"
    run(db, lambda s: gb.update_device(s, DEV, box=box, enabled=True))
    assert registered(db) == gb.DeviceChange(DEV, "ok", online=True, changed=True)
    assert len(events(db)) == 3


def test_delete_removes_the_channels_and_reports_an_online_device_offline(db: Database) -> None:
    registered(db)
    items = [gb.CatalogItem(ch(n)) for n in range(3)]
    run(db, lambda s: gb.replace_catalog(s, DEV, items, T0))
    assert run(db, lambda s: gb.delete_device(s, DEV, T0)) is True
    assert run(db, lambda s: gb.get_device(s, DEV)) is None
    with db.session() as session:
        assert session.scalar(text("SELECT count(*) FROM gb28181_channels")) == 0
    [offline] = events(db, gb.OFFLINE_EVENT)
    assert offline.data["reason"] == "deleted"
    assert run(db, lambda s: gb.delete_device(s, DEV)) is False
    assert run(db, lambda s: gb.delete_device(s, "junk")) is False


def test_the_database_cascades_a_device_delete_to_its_channels(db: Database) -> None:
    for device_id in (DEV, NVR):
        registered(db, device_id)
        run(db, functools.partial(_replace, device_id=device_id, items=[gb.CatalogItem(ch(1))]))
    with db.session() as session:
        session.execute(text("DELETE FROM gb28181_devices WHERE device_id = :d"), {"d": DEV})
    with db.session() as session:
        rows = session.execute(text("SELECT device_id FROM gb28181_channels")).all()
    assert [r[0] for r in rows] == [NVR]


def test_password_tokens_can_be_re_encrypted_with_a_new_key(db: Database) -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    old = SecretBox(old_key)
    run(db, lambda s: gb.create_device(s, DEV, box=old, password=PASSWORD))
    run(db, lambda s: gb.create_device(s, NVR, box=old))
    rotating = SecretBox(new_key, [old_key])
    with db.session() as session:
        tokens = gb.password_tokens_for_update(session)
        assert list(tokens) == [DEV]
        gb.store_password_tokens(session, {k: rotating.rotate(v) for k, v in tokens.items()})
    assert run(db, lambda s: gb.device_password(s, DEV, SecretBox(new_key))) == PASSWORD


# --- migration --------------------------------------------------------------------------------


def alembic(db: Database, action: Callable[[AlembicConfig], None]) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        action(cfg)


def test_the_migration_creates_what_the_models_describe(db: Database) -> None:
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "gb28181" in repr(d)] == []
    indexes = {i["name"] for i in inspect(db.engine).get_indexes("gb28181_devices")}
    assert {"ix_gb28181_devices_online", "ix_gb28181_devices_expires_at"} <= indexes


def test_the_migration_downgrades_and_upgrades_again(db: Database) -> None:
    registered(db)
    alembic(db, lambda cfg: command.downgrade(cfg, "0005"))
    tables = inspect(db.engine).get_table_names()
    assert "gb28181_devices" not in tables and "gb28181_channels" not in tables
    db.migrate()
    assert run(db, gb.list_devices) == []
