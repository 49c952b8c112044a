"""GB/T 28181 devices: registration state, keepalives, catalogs — shared through the database.

Every process of an installation may take a device's signalling or answer the API, so the
state lives in ``gb28181_devices`` / ``gb28181_channels`` and nowhere else. Each function
works in the caller's transaction and, when a device goes online or offline or its catalog
changes, appends the event (:func:`storage.events.append_event`) in that same transaction:
the event log and the state commit together or not at all.

Concurrency (PostgreSQL, READ COMMITTED; SQLite, one writer at a time):

- A function that changes one device first *locks its row* (``SELECT … FOR UPDATE``; on
  SQLite a no-op write takes the database's write lock, because Python's driver would
  otherwise read outside the transaction) and reads it fresh. So a keepalive racing an
  expiry sees the device offline once the expiry committed, and brings it back online
  with an event, instead of leaving it offline with fresh keepalives.
- :func:`expire` takes the event log's lock first, then the due rows with ``SKIP LOCKED``:
  concurrent expirers run one after another and find nothing left to do, each device goes
  offline once with one event, and an expirer never waits for a row lock, so it cannot
  deadlock with a REGISTER or keepalive that holds one and waits for the event log.
- Callers: change **one device per transaction**, and call these functions before, not
  after, appending other events in that transaction (a transaction that holds the event
  log's lock and then waits for a device row can deadlock with one doing the reverse).

A device is *registered* while ``expires_at`` is in the future. ``online`` is set by an
accepted REGISTER or keepalive and cleared by unregistration, :func:`expire` (registration
run out, or nothing heard within the keepalive deadline), disabling and deletion.
Passwords are stored encrypted with :class:`storage.secrets.SecretBox`, never in clear.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from sqlalchemy import ColumnElement, and_, delete, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config.errors import XueliangError
from storage.events import EVENT_APPEND_LOCK, append_event
from storage.models import Gb28181Channel as Channel
from storage.models import Gb28181Device as Device
from storage.models import utcnow

if TYPE_CHECKING:
    from storage.secrets import SecretBox

log = logging.getLogger(__name__)

ONLINE_EVENT: Final = "gb28181.device.online"
OFFLINE_EVENT: Final = "gb28181.device.offline"
CATALOG_EVENT: Final = "gb28181.catalog"
#: How a device came to be stored.
ORIGIN_API: Final = "api"
ORIGIN_DEVICE: Final = "device"
TRANSPORTS: Final = ("UDP", "TCP")
#: Channel ids listed per kind in a catalog event; a platform's first catalog may hold tens
#: of thousands, which must not become one huge event (``truncated`` says when cut).
MAX_LISTED: Final = 500
#: Rows per DELETE … IN (…): below SQLite's and PostgreSQL's bind-parameter limits.
CHUNK: Final = 1000

_CODE = re.compile(r"[0-9]{20}")
# C0/C1 controls (NUL is refused by PostgreSQL) become spaces; invisible format characters
# (zero-width, bidi overrides) and lone surrogates (undecodable GBK bytes) are dropped.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_INVISIBLE = re.compile(
    r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"  # zero-width, bidi
    r"\ud800-\udfff]"  # lone surrogates
)
_ON = frozenset({"ON", "ONLINE", "OK", "1"})


class InvalidValue(XueliangError, ValueError):
    """A value is not acceptable; ``field`` names it, the message says why. Nothing was
    written: these are checked before any change."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field} {reason}")
        self.field = field


class InvalidCode(InvalidValue):
    """A device or channel id is not a 20-digit GB/T 28181 code."""

    def __init__(self, field: str, value: object) -> None:
        super().__init__(field, f"must be a 20-digit GB/T 28181 code, got {str(value)[:40]!r}")


class DeviceExists(XueliangError):
    """:func:`create_device` for a device id that is stored already (HTTP 409)."""


class _Unset(Enum):
    UNSET = "UNSET"


#: "Not given" for :func:`update_device` (None means "clear").
UNSET: Final = _Unset.UNSET

Outcome = Literal["ok", "unknown", "disabled"]


# --- what goes in and out -------------------------------------------------------------------


class ChannelReport(Protocol):
    """What :func:`replace_catalog` reads of a catalog item: :class:`CatalogItem`, or the
    SIP side's parsed item with the same attribute names."""

    @property
    def channel_id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def manufacturer(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def civil_code(self) -> str | None: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def status(self) -> str | None: ...
    @property
    def longitude(self) -> float | None: ...
    @property
    def latitude(self) -> float | None: ...


@dataclass(frozen=True)
class CatalogItem:
    """One channel as a device reports it (Catalog response); cleaned on the way in."""

    channel_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    owner: str | None = None
    civil_code: str | None = None
    parent_id: str | None = None
    address: str | None = None
    #: As sent ("ON", "OFF", "ONLINE", …); stored as "ON" or "OFF" (absent: "OFF").
    status: str | None = None
    longitude: float | None = None
    latitude: float | None = None


@dataclass(frozen=True)
class ChannelView:
    device_id: str
    channel_id: str
    name: str | None
    manufacturer: str | None
    model: str | None
    owner: str | None
    civil_code: str | None
    parent_id: str | None
    address: str | None
    status: str
    longitude: float | None
    latitude: float | None
    updated_at: datetime


@dataclass(frozen=True)
class DeviceView:
    """A device and its channels; never its password (``has_password`` says if it has one)."""

    device_id: str
    name: str | None
    manufacturer: str | None
    model: str | None
    firmware: str | None
    transport: str | None
    address: str | None
    contact: str | None
    enabled: bool
    has_password: bool
    origin: str
    online: bool
    registered_at: datetime | None
    expires_at: datetime | None
    last_keepalive_at: datetime | None
    created_at: datetime
    updated_at: datetime
    channels: tuple[ChannelView, ...] = ()


@dataclass(frozen=True)
class DeviceChange:
    """What :func:`register` / :func:`unregister` did.

    ``outcome``: "ok"; "unknown" (not stored, and not accepted: answer 403/404, nothing was
    written); "disabled" (stored but disabled: answer 403). ``changed``: the device went
    online or offline, and the event was appended.
    """

    device_id: str
    outcome: Outcome
    online: bool
    changed: bool = False
    created: bool = False

    @property
    def accepted(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class CatalogChange:
    """What :func:`replace_catalog` did; ``skipped`` holds items with an invalid channel id."""

    device_id: str
    channels: int
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.removed or self.changed)


# --- validation -----------------------------------------------------------------------------


def check_code(value: str, field: str) -> str:
    """``value`` (surrounding white space removed) if it is 20 ASCII digits, else InvalidCode."""
    code = value.strip() if isinstance(value, str) else ""
    if not _CODE.fullmatch(code):
        raise InvalidCode(field, value)
    return code


def clean_text(value: str | None, size: int) -> str | None:
    """``value`` fit for a column of ``size`` characters; None when nothing is left.

    Control characters become spaces, invisible and undecodable ones go, runs of white
    space become one space, and the result is cut to ``size`` (devices send both).
    """
    if value is None:
        return None
    value = unicodedata.normalize("NFC", _INVISIBLE.sub("", value[: size * 4]))
    return " ".join(_CONTROLS.sub(" ", value).split())[:size].rstrip() or None


def coordinate(value: float | None, limit: float) -> float | None:
    """``value`` if it is a finite number within ±``limit`` degrees, else None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and -limit <= number <= limit else None


def channel_status(raw: str | None) -> str:
    """The stored status: "ON" for ON/ONLINE/OK/1 (any case), else "OFF" (absent too)."""
    return "ON" if raw is not None and raw.strip().upper() in _ON else "OFF"


def _transport(value: str) -> str:
    transport = value.strip().upper()
    if transport not in TRANSPORTS:
        raise InvalidValue("transport", f"must be UDP or TCP, got {value[:20]!r}")
    return transport


def _required(value: str, size: int, field: str) -> str:
    """Signalling values are used as they are: refuse rather than cut what would not fit."""
    cleaned = value.strip()
    if not cleaned or len(cleaned) > size or any(c.isspace() for c in cleaned):
        raise InvalidValue(field, f"must be 1–{size} characters without spaces")
    return cleaned


def _aware(at: datetime, what: str = "now") -> datetime:
    if at.tzinfo is None:
        raise ValueError(f"{what} is a naive datetime: pass an aware UTC datetime")
    return at


def _password(value: str) -> str:
    if not value:
        raise InvalidValue("password", "must not be empty (None: the installation default applies)")
    return value


# --- locking --------------------------------------------------------------------------------


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _sqlite_write_lock(session: Session) -> None:
    # Python's sqlite3 begins a transaction only at the first write, so a read before it
    # would see the database as of before a concurrent commit; a write that changes
    # nothing takes the write lock first (as storage.secrets does for key rotation).
    session.execute(
        update(Device).where(Device.device_id.is_(None)).values(online=Device.online),
        execution_options={"synchronize_session": False},
    )


def _lock_device(session: Session, device_id: str) -> Device | None:
    """The device's row, freshly read and locked until the transaction ends; None if absent."""
    if _is_sqlite(session):
        _sqlite_write_lock(session)
    query = select(Device).where(Device.device_id == device_id).with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def _lock_event_log(session: Session) -> None:
    """The lock :func:`append_event` takes, taken before any device row (see :func:`expire`)."""
    if _is_sqlite(session):
        _sqlite_write_lock(session)
    else:
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENT_APPEND_LOCK})


def _insert(session: Session, row: Device) -> bool:
    """Insert ``row``; False when another transaction stored that device id first."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


# --- signalling: register, keepalive, expiry ------------------------------------------------


def register(
    session: Session,
    device_id: str,
    *,
    transport: str,
    address: str,
    contact: str,
    expires_at: datetime,
    now: datetime,
    accept_unknown: bool = False,
) -> DeviceChange:
    """Record an authenticated REGISTER; the device goes online (one event) unless it was.

    Call it after the digest check. An unknown device is stored (origin "device", no
    password of its own) only with ``accept_unknown``; a disabled one is refused. An
    ``expires_at`` not after ``now`` (``Expires: 0``) is an unregistration. A refresh of an
    online device updates its address, contact and expiry and appends nothing.
    """
    device_id = check_code(device_id, "device_id")
    if _aware(expires_at, "expires_at") <= _aware(now):
        return unregister(session, device_id, now)
    signalling = (_transport(transport), _required(address, 100, "address"))
    contact = _required(contact, 500, "contact")
    row, created = _device_for_register(session, device_id, now, accept_unknown)
    if row is None:
        return DeviceChange(device_id, "unknown", online=False)
    if not row.enabled:
        return DeviceChange(device_id, "disabled", online=row.online)
    row.transport, row.address = signalling
    row.contact = contact
    row.registered_at, row.expires_at, row.updated_at = now, expires_at, now
    changed = _set_online(session, row, True, now, "register")
    return DeviceChange(device_id, "ok", online=True, changed=changed, created=created)


def _device_for_register(
    session: Session, device_id: str, now: datetime, accept_unknown: bool
) -> tuple[Device | None, bool]:
    """The locked row and whether it was created now (unknown device, when accepted)."""
    row = _lock_device(session, device_id)
    if row is not None or not accept_unknown:
        return row, False
    new = Device(
        device_id=device_id,
        origin=ORIGIN_DEVICE,
        enabled=True,
        online=False,
        created_at=now,
        updated_at=now,
    )
    if _insert(session, new):
        return new, True
    return _lock_device(session, device_id), False  # a concurrent REGISTER stored it


def unregister(session: Session, device_id: str, now: datetime) -> DeviceChange:
    """Record a REGISTER with ``Expires: 0``: not registered any more, offline (one event)."""
    device_id = check_code(device_id, "device_id")
    row = _lock_device(session, device_id)
    if row is None:
        return DeviceChange(device_id, "unknown", online=False)
    row.expires_at = None
    row.updated_at = _aware(now)
    changed = _set_online(session, row, False, now, "unregister")
    return DeviceChange(device_id, "ok", online=False, changed=changed)


def keepalive(session: Session, device_id: str, now: datetime, address: str | None = None) -> bool:
    """Record a Keepalive; False if the device is unknown, disabled or not registered.

    On False the endpoint answers with an error so the device registers again. A device
    taken offline for missed keepalives while still registered comes back online (one
    event). ``address``: where this keepalive came from, when it may have changed (NAT).
    """
    device_id = check_code(device_id, "device_id")
    _aware(now)
    address = _required(address, 100, "address") if address is not None else None
    row = _lock_device(session, device_id)
    if row is None or not row.enabled or not _registered(row, now):
        return False
    row.last_keepalive_at = now
    if address is not None:
        row.address = address
    _set_online(session, row, True, now, "keepalive")
    return True


def _registered(row: Device, now: datetime) -> bool:
    return row.expires_at is not None and row.expires_at > now


def _set_online(session: Session, row: Device, online: bool, now: datetime, reason: str) -> bool:
    """Set ``row.online``; when it changes, append the event. Returns whether it changed."""
    if row.online == online:
        return False
    row.online = online
    row.updated_at = now
    data: dict[str, Any] = {
        "device_id": row.device_id,
        "online": online,
        "at": now.isoformat(),
        "reason": reason,
    }
    if online:
        data["address"] = row.address
    append_event(session, ONLINE_EVENT if online else OFFLINE_EVENT, data)
    return True


def _due(now: datetime, cutoff: datetime) -> ColumnElement[bool]:
    """Online, and registration run out or nothing heard since ``cutoff``."""
    silent = and_(
        or_(Device.registered_at.is_(None), Device.registered_at < cutoff),
        or_(Device.last_keepalive_at.is_(None), Device.last_keepalive_at < cutoff),
    )
    expired = or_(Device.expires_at.is_(None), Device.expires_at <= now)
    return and_(Device.online.is_(True), or_(expired, silent))


def expire(session: Session, now: datetime, keepalive_deadline_s: float) -> list[str]:
    """Take offline (one event each) the online devices whose registration ran out or that
    sent neither keepalive nor REGISTER for ``keepalive_deadline_s``; returns their ids.

    Safe when several processes run it at once: each device goes offline once, with one
    event. The common case (nothing due) is one read and takes no lock; otherwise the event
    log's lock is taken first — expirers run one after the other, the later ones find the
    rows offline — and then the due rows ``FOR UPDATE SKIP LOCKED``: a row locked by a
    REGISTER or keepalive in progress is left to the next run, since it is being refreshed.
    """
    cutoff = _aware(now) - timedelta(seconds=keepalive_deadline_s)
    due = _due(now, cutoff)
    if session.scalar(select(Device.device_id).where(due).limit(1)) is None:
        return []
    _lock_event_log(session)
    query = select(Device.device_id, Device.expires_at).where(due).order_by(Device.device_id)
    rows = session.execute(query.with_for_update(skip_locked=True)).all()
    for chunk in _chunks([r.device_id for r in rows]):
        session.execute(
            update(Device).where(Device.device_id.in_(chunk)).values(online=False, updated_at=now)
        )
    for device_id, expires_at in rows:
        reason = "keepalive_timeout" if expires_at and expires_at > now else "registration_expired"
        data = {"device_id": device_id, "online": False, "at": now.isoformat(), "reason": reason}
        append_event(session, OFFLINE_EVENT, data)
    return [r.device_id for r in rows]


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


# --- what the device reports ----------------------------------------------------------------


def set_device_info(
    session: Session,
    device_id: str,
    name: str | None,
    manufacturer: str | None,
    model: str | None,
    firmware: str | None,
    now: datetime | None = None,
) -> bool:
    """Store a DeviceInfo response; False if the device is unknown.

    The device's name fills in only a missing one: a name an operator gave is kept.
    """
    row = _lock_device(session, check_code(device_id, "device_id"))
    if row is None:
        return False
    row.name = row.name or clean_text(name, 200)
    row.manufacturer = clean_text(manufacturer, 100)
    row.model = clean_text(model, 100)
    row.firmware = clean_text(firmware, 100)
    row.updated_at = now or utcnow()
    return True


def replace_catalog(
    session: Session, device_id: str, items: Iterable[ChannelReport], now: datetime
) -> CatalogChange | None:
    """Make the stored channels exactly ``items``; one ``gb28181.catalog`` event if anything
    changed. None if the device is unknown.

    ``items`` must be the *whole* catalog (every part of a multi-message response, SumNum
    items): a channel not listed is removed. Items with an invalid channel id are skipped
    (reported in ``skipped``); of repeated ids the last wins. The device's row is locked,
    so two catalogs of one device processed at once are applied one after the other.
    """
    device_id = check_code(device_id, "device_id")
    if _lock_device(session, device_id) is None:
        return None
    wanted, skipped = _cleaned_catalog(device_id, items)
    query = select(Channel).where(Channel.device_id == device_id)
    stored = {r.channel_id: r for r in session.scalars(query)}
    added, changed = _upsert_channels(session, device_id, wanted, stored, _aware(now))
    removed = sorted(set(stored) - set(wanted))
    for chunk in _chunks(removed):
        session.execute(
            delete(Channel).where(Channel.device_id == device_id, Channel.channel_id.in_(chunk))
        )
    change = CatalogChange(
        device_id,
        channels=len(wanted),
        added=tuple(sorted(added)),
        removed=tuple(removed),
        changed=tuple(sorted(changed)),
        skipped=tuple(skipped),
    )
    if change.has_changes:
        append_event(session, CATALOG_EVENT, _catalog_event(change, now))
    return change


def _cleaned_catalog(
    device_id: str, items: Iterable[ChannelReport]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    wanted: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for item in items:
        try:
            channel_id = check_code(item.channel_id, "channel_id")
        except InvalidCode:
            skipped.append(str(item.channel_id)[:40])
            continue
        wanted[channel_id] = _channel_values(item)
    if skipped:
        log.warning(
            "gb28181 device %s: %d catalog item(s) with an invalid channel id skipped, e.g. %r",
            device_id,
            len(skipped),
            skipped[0],
        )
    return wanted, skipped


def _channel_values(item: ChannelReport) -> dict[str, Any]:
    return {
        "name": clean_text(item.name, 200),
        "manufacturer": clean_text(item.manufacturer, 100),
        "model": clean_text(item.model, 100),
        "owner": clean_text(item.owner, 100),
        "civil_code": clean_text(item.civil_code, 32),
        "parent_id": clean_text(item.parent_id, 200),
        "address": clean_text(item.address, 200),
        "status": channel_status(item.status),
        "longitude": coordinate(item.longitude, 180.0),
        "latitude": coordinate(item.latitude, 90.0),
    }


def _upsert_channels(
    session: Session,
    device_id: str,
    wanted: Mapping[str, dict[str, Any]],
    stored: Mapping[str, Channel],
    now: datetime,
) -> tuple[list[str], list[str]]:
    """Add the new channels, update the changed ones; returns (added, changed) ids."""
    added: list[str] = []
    changed: list[str] = []
    for channel_id, values in wanted.items():
        row = stored.get(channel_id)
        if row is None:
            session.add(
                Channel(device_id=device_id, channel_id=channel_id, updated_at=now, **values)
            )
            added.append(channel_id)
        elif any(getattr(row, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = now
            changed.append(channel_id)
    return added, changed


def _catalog_event(change: CatalogChange, now: datetime) -> dict[str, Any]:
    lists = {"added": change.added, "removed": change.removed, "changed": change.changed}
    return {
        "device_id": change.device_id,
        "at": now.isoformat(),
        "channels": change.channels,
        **{name: list(ids[:MAX_LISTED]) for name, ids in lists.items()},
        "truncated": any(len(ids) > MAX_LISTED for ids in lists.values()),
    }


# --- reading --------------------------------------------------------------------------------


def get_device(session: Session, device_id: str) -> DeviceView | None:
    """The device with its channels (two queries); None if unknown or not a valid id."""
    if not _CODE.fullmatch(device_id):
        return None
    views = _views(session, Device.device_id == device_id)
    return views[0] if views else None


def list_devices(session: Session, *, online: bool | None = None) -> list[DeviceView]:
    """All devices (or only the online / offline ones) by id, each with its channels.

    Two queries whatever the number of devices.
    """
    where = None if online is None else Device.online.is_(online)
    return _views(session, where)


def online_devices(session: Session) -> list[DeviceView]:
    """The devices online now: what a starting SIP endpoint takes over."""
    return list_devices(session, online=True)


def get_channel(session: Session, device_id: str, channel_id: str) -> ChannelView | None:
    row = session.get(Channel, (device_id, channel_id))
    return _channel_view(row) if row is not None else None


def _views(session: Session, where: ColumnElement[bool] | None) -> list[DeviceView]:
    devices = select(Device).order_by(Device.device_id)
    channels = (
        select(Channel)
        .join(Device, Device.device_id == Channel.device_id)
        .order_by(Channel.device_id, Channel.channel_id)
    )
    if where is not None:
        devices, channels = devices.where(where), channels.where(where)
    rows = list(session.scalars(devices.execution_options(populate_existing=True)))
    by_device: dict[str, list[ChannelView]] = {row.device_id: [] for row in rows}
    for channel in session.scalars(channels.execution_options(populate_existing=True)):
        if channel.device_id in by_device:  # not a device that appeared in between
            by_device[channel.device_id].append(_channel_view(channel))
    return [_device_view(row, tuple(by_device[row.device_id])) for row in rows]


def _device_view(row: Device, channels: tuple[ChannelView, ...]) -> DeviceView:
    return DeviceView(
        device_id=row.device_id,
        name=row.name,
        manufacturer=row.manufacturer,
        model=row.model,
        firmware=row.firmware,
        transport=row.transport,
        address=row.address,
        contact=row.contact,
        enabled=row.enabled,
        has_password=row.password_enc is not None,
        origin=row.origin,
        online=row.online,
        registered_at=row.registered_at,
        expires_at=row.expires_at,
        last_keepalive_at=row.last_keepalive_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        channels=channels,
    )


def _channel_view(row: Channel) -> ChannelView:
    return ChannelView(
        device_id=row.device_id,
        channel_id=row.channel_id,
        name=row.name,
        manufacturer=row.manufacturer,
        model=row.model,
        owner=row.owner,
        civil_code=row.civil_code,
        parent_id=row.parent_id,
        address=row.address,
        status=row.status,
        longitude=row.longitude,
        latitude=row.latitude,
        updated_at=row.updated_at,
    )


# --- administration (the API) ---------------------------------------------------------------


def create_device(
    session: Session,
    device_id: str,
    *,
    box: SecretBox,
    password: str | None = None,
    enabled: bool = True,
    name: str | None = None,
    now: datetime | None = None,
) -> DeviceView:
    """Add a device (origin "api"); :class:`DeviceExists` if it is stored already — also
    when it registered on its own before: change that one with :func:`update_device`."""
    device_id = check_code(device_id, "device_id")
    now = now or utcnow()
    row = Device(
        device_id=device_id,
        name=clean_text(name, 200),
        enabled=enabled,
        password_enc=box.encrypt(_password(password)) if password is not None else None,
        origin=ORIGIN_API,
        online=False,
        created_at=now,
        updated_at=now,
    )
    if _lock_device(session, device_id) is not None or not _insert(session, row):
        raise DeviceExists(f"GB/T 28181 device {device_id} exists already")
    return _device_view(row, ())


def update_device(
    session: Session,
    device_id: str,
    *,
    box: SecretBox,
    password: str | _Unset | None = UNSET,
    enabled: bool | _Unset = UNSET,
    name: str | _Unset | None = UNSET,
    now: datetime | None = None,
) -> DeviceView | None:
    """Change what an operator may change; None if the device is unknown.

    ``password=None`` makes the installation default apply again. Disabling an online
    device takes it offline (one event) and ends its registration: its next keepalive is
    refused, and once enabled again it must REGISTER (with the digest check) again.
    """
    row = _lock_device(session, check_code(device_id, "device_id"))
    if row is None:
        return None
    now = now or utcnow()
    if password is not UNSET:
        row.password_enc = box.encrypt(_password(password)) if password is not None else None
    if name is not UNSET:
        row.name = clean_text(name, 200)
    if enabled is not UNSET:
        row.enabled = enabled
        if not enabled:
            row.expires_at = None
            _set_online(session, row, False, now, "disabled")
    row.updated_at = now
    return get_device(session, row.device_id)


def delete_device(session: Session, device_id: str, now: datetime | None = None) -> bool:
    """Delete the device and its channels; False if unknown. Online: one offline event first,
    so that no subscriber believes a deleted device is still online."""
    if not _CODE.fullmatch(device_id):
        return False
    row = _lock_device(session, device_id)
    if row is None:
        return False
    _set_online(session, row, False, now or utcnow(), "deleted")
    session.execute(delete(Channel).where(Channel.device_id == device_id))
    session.delete(row)
    session.flush()
    return True


def device_password(session: Session, device_id: str, box: SecretBox) -> str | None:
    """The device's own password in clear, for the digest check; None when it has none (the
    installation default applies) or is unknown (tell the two apart with get_device)."""
    token = session.scalar(select(Device.password_enc).where(Device.device_id == device_id))
    return box.decrypt(token) if token is not None else None


# --- key rotation (for storage.secrets.rotate_stored_secrets) -------------------------------


def password_tokens_for_update(session: Session) -> dict[str, str]:
    """Every stored password token by device id, the rows locked until the transaction ends."""
    query = (
        select(Device.device_id, Device.password_enc)
        .where(Device.password_enc.is_not(None))
        .order_by(Device.device_id)
        .with_for_update()
    )
    return {device_id: token for device_id, token in session.execute(query) if token}


def store_password_tokens(session: Session, tokens: Mapping[str, str]) -> None:
    """Replace password tokens (re-encrypted with a new key) by device id."""
    for device_id, token in tokens.items():
        session.execute(
            update(Device).where(Device.device_id == device_id).values(password_enc=token)
        )
