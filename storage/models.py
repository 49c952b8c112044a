"""SQLAlchemy 2 table models. Rows are not API schemas: the API maps them to its own."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# BigInteger autoincrement needs INTEGER on SQLite to alias the rowid.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime}


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    grid_scope: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    # NULL: never expires (the tokens made before expiry existed, or an admin's choice).
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # The token that replaced this one (POST /tokens/{id}/rotate): each rotates once.
    rotated_to: Mapped[str | None] = mapped_column(String(32))


class RateLimit(Base):
    """A token bucket per limit and client address, shared by every process (api.ratelimit)."""

    __tablename__ = "rate_limits"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[float] = mapped_column(Float)  # attempts left at ``at``
    at: Mapped[float] = mapped_column(Float, index=True)  # Unix time of the last spend


class Event(Base):
    __tablename__ = "events"

    seq: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    grid_code: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The hash chain (storage/audit_chain.py, migration 0020): 1, 2, 3… with no gap, the
    #: previous entry's hash and this entry's. NULL only in a row written outside the chain.
    position: Mapped[int | None] = mapped_column(BigInteger, index=True, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    entry_hash: Mapped[str | None] = mapped_column(String(64))


class AuditChain(Base):
    """The one row (``id`` 1) that says where the audit chain stands: its head (appends
    lock this row, so positions stay contiguous), what retention removed, and the last
    head published as an ``audit.anchor`` event."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    #: Entries up to ``base_position`` were removed by retention; ``base_hash`` is the hash
    #: of the one at ``base_position`` (the genesis hash when nothing was removed).
    base_position: Mapped[int] = mapped_column(BigInteger)
    base_hash: Mapped[str] = mapped_column(String(64))
    anchored_position: Mapped[int] = mapped_column(BigInteger)
    anchored_at: Mapped[datetime | None]


class Camera(Base):
    __tablename__ = "cameras"
    # The keysets of GET /cameras: newest first, and by name (storage/cameras.py).
    __table_args__ = (
        Index("ix_cameras_created", "created_at", "id"),
        Index("ix_cameras_name", "name", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # Stream URLs are stored encrypted (they carry the password) and redacted for display.
    main_url_enc: Mapped[str | None] = mapped_column(Text)
    main_url_shown: Mapped[str | None] = mapped_column(Text)
    sub_url_enc: Mapped[str | None] = mapped_column(Text)
    sub_url_shown: Mapped[str | None] = mapped_column(Text)
    onvif: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: ``{"device_id", "channel_id"}`` of a camera fed by a GB/T 28181 channel.
    gb28181: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    grid_code: Mapped[str | None] = mapped_column(String(64), index=True)
    #: True when grid_code was assigned from the location (re-assigned when grids change).
    grid_auto: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    #: Its national 20-digit ID (GB/T 28181 coding), for the grid platform's cases.
    national_id: Mapped[str | None] = mapped_column(String(20), default=None)
    zones: Mapped[list[Any]] = mapped_column(JSON, default=list)
    analytics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recording: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CameraStatus(Base):
    __tablename__ = "camera_status"

    camera_id: Mapped[str] = mapped_column(
        ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime]
    fps: Mapped[float | None] = mapped_column(Float)
    last_frame_at: Mapped[datetime | None]
    reconnects: Mapped[int] = mapped_column(Integer, default=0)
    frames_dropped: Mapped[int] = mapped_column(BigInteger, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CameraQuality(Base):
    """A camera's picture quality now (``analytics.quality``): ``ok``, ``degraded`` with
    the problems raised, or ``unknown`` until its reference view is learnt."""

    __tablename__ = "camera_quality"

    camera_id: Mapped[str] = mapped_column(
        ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))
    #: ``[{"kind", "since", "score", "tamper"}]``, times as ISO 8601.
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    since: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: ``POST /cameras/{id}/quality/reference``: the worker running the camera takes its
    #: next checked frame as the reference view, then clears this.
    reference_requested_at: Mapped[datetime | None]
    #: A PTZ move ordered through the API: the view is expected to change until then, so
    #: ``displaced`` and the other reference checks pause and the reference is learnt anew.
    ptz_until: Mapped[datetime | None]


class CameraQualityChange(Base):
    """One row per quality state change: 完好 time in the availability report."""

    __tablename__ = "camera_quality_log"
    __table_args__ = (Index("ix_camera_quality_log_camera_at", "camera_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    camera_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]


class CameraQualityReference(Base):
    """A camera's reference view per picture mode (colour by day, monochrome in IR mode),
    ``analytics.quality.reference_to_bytes``: kept when the camera moves to another worker."""

    __tablename__ = "camera_quality_refs"

    camera_id: Mapped[str] = mapped_column(
        ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True
    )
    monochrome: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    learnt_at: Mapped[datetime]


class CameraStateChange(Base):
    """One row per state transition: the availability report integrates these."""

    __tablename__ = "camera_state_log"
    __table_args__ = (Index("ix_camera_state_log_camera_at", "camera_id", "at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    camera_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]


class Incident(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        Index("ix_incidents_started", "started_at", "id"),
        Index("ix_incidents_camera_started", "camera_id", "started_at"),
        Index("ix_incidents_grid_started", "grid_code", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(32))
    grid_code: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="new")
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    #: Why it ended when not by itself: ``process_died`` (recovered after a crash).
    end_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    peak_persons: Mapped[int | None] = mapped_column(Integer)
    peak_motion: Mapped[float | None] = mapped_column(Float)
    snapshot_key: Mapped[str | None] = mapped_column(String(300))
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64))
    clip_key: Mapped[str | None] = mapped_column(String(300))
    clip_sha256: Mapped[str | None] = mapped_column(String(64))
    clip_size: Mapped[int | None] = mapped_column(BigInteger)
    clip_duration_s: Mapped[float | None] = mapped_column(Float)
    clip_state: Mapped[str | None] = mapped_column(String(16))
    clip_error: Mapped[str | None] = mapped_column(Text)
    #: A ``device_alarm``'s fields as the device sent them (priority, method, type, time…).
    alarm: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: The host whose local spool holds the clip until it is archived.
    spool_host: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentAction(Base):
    """The review history of an incident (who acknowledged, resolved… and why)."""

    __tablename__ = "incident_history"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)


class Worker(Base):
    """A process that runs cameras; alive while ``last_seen`` is recent."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    last_seen: Mapped[datetime] = mapped_column(index=True)
    #: Its HTTP base URL (``server.advertise_url``): where an ``api`` node forwards the live
    #: view of a camera this worker runs. ``None`` for rows written before it was recorded.
    url: Mapped[str | None] = mapped_column(String(500), default=None)


class CameraLease(Base):
    """Which worker analyses a camera, until when. Exactly one live holder per camera."""

    __tablename__ = "camera_leases"

    camera_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(100), index=True)
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]


class Gb28181Device(Base):
    """A GB/T 28181 device (camera, NVR or lower platform) and its registration state.

    Shared by every process of an installation: any of them may answer the API or take the
    device's signalling (see storage/gb28181.py for who writes what).
    """

    __tablename__ = "gb28181_devices"

    device_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    manufacturer: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(100))
    firmware: Mapped[str | None] = mapped_column(String(100))
    #: "UDP" or "TCP": how its signalling arrived; None until it first registers.
    transport: Mapped[str | None] = mapped_column(String(8))
    #: "host:port" its signalling came from (behind NAT: the public side).
    address: Mapped[str | None] = mapped_column(String(100))
    contact: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Its digest password, encrypted (storage.secrets); None: the installation default.
    password_enc: Mapped[str | None] = mapped_column(Text)
    #: "api" (added by an operator) or "device" (unknown, accepted on its first REGISTER).
    origin: Mapped[str] = mapped_column(String(16))
    online: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    registered_at: Mapped[datetime | None]
    #: When its registration runs out; None when it is not registered.
    expires_at: Mapped[datetime | None] = mapped_column(index=True)
    last_keepalive_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Gb28181Channel(Base):
    """One entry of a GB/T 28181 device's catalog (a camera of an NVR, a platform's…)."""

    __tablename__ = "gb28181_channels"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("gb28181_devices.device_id", ondelete="CASCADE"), primary_key=True
    )
    channel_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    manufacturer: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(100))
    owner: Mapped[str | None] = mapped_column(String(100))
    civil_code: Mapped[str | None] = mapped_column(String(32))
    parent_id: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(200))
    #: "ON" or "OFF".
    status: Mapped[str] = mapped_column(String(3))
    longitude: Mapped[float | None] = mapped_column(Float)
    latitude: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ServiceLease(Base):
    """A singleton service of the installation (e.g. the GB/T 28181 SIP endpoint): which
    process runs it, until when, and where the others reach it. One live holder per name."""

    __tablename__ = "service_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    #: The holder's HTTP base URL (``server.advertise_url``): where other processes ask it.
    url: Mapped[str] = mapped_column(String(500))
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]


#: Retention deletes transitions by age, and the availability report reads the partial days
#: at the edges of a period by time, across every camera (storage/availability.py).
Index("ix_camera_state_log_at", CameraStateChange.at)


class CameraAvailabilityDay(Base):
    """One camera's finished UTC day, summed from its transitions (storage/availability.py):
    a report sums these instead of reading the raw log, which retention compacts."""

    __tablename__ = "camera_availability_daily"
    __table_args__ = (Index("ix_camera_availability_daily_day", "day"),)

    camera_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: Seconds of the day the camera was online.
    online_s: Mapped[float] = mapped_column(Float)
    #: Seconds of the day its state was known (after its first transition).
    known_s: Mapped[float] = mapped_column(Float)
    #: Transitions logged during the day (a flapping camera has many).
    changes: Mapped[int] = mapped_column(Integer)
    #: Its state when the day ended.
    end_state: Mapped[str] = mapped_column(String(16))
    #: Seconds of the day online with a usable picture (not ``degraded``): 完好 time; NULL
    #: on days rolled up before pictures were checked (migration 0019), read as ``online_s``.
    good_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Its picture-quality state when the day ended (NULL: none known).
    quality_end_state: Mapped[str | None] = mapped_column(String(16), nullable=True)


class AvailabilityRollup(Base):
    """A UTC day whose :class:`CameraAvailabilityDay` rows are complete."""

    __tablename__ = "availability_rollups"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    #: How many cameras had a row that day.
    cameras: Mapped[int] = mapped_column(Integer)
    rolled_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvidenceKey(Base):
    """An Ed25519 key of the installation that signs evidence packages
    (storage/evidence_keys.py): created once, shared by every process through the database."""

    __tablename__ = "evidence_keys"

    #: The key id: SHA-256 (hex) of the 32-byte raw public key.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: ``"current"`` for the key that signs; NULL for a retired one. Unique: two processes
    #: creating the first key at once end with one.
    slot: Mapped[str | None] = mapped_column(String(16), unique=True)
    #: Base64 of the 32-byte raw public key.
    public_key: Mapped[str] = mapped_column(String(64))
    #: The 32-byte raw private key, base64, encrypted like the camera credentials.
    private_key_enc: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
