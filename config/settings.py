"""Typed settings: a YAML file plus ``XUELIANG_*`` environment variables.

Environment variables win over the file and nest with ``__``
(``XUELIANG_STORAGE__S3__ENDPOINT``). Unknown keys are an error naming the key. Settings are
loaded once at start-up and never mutated; every knob has a description and bounds.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from config.errors import ConfigError

ENV_PREFIX = "XUELIANG_"
#: A person-chosen bootstrap token must be at least this long (issued ones carry 256 bits).
MIN_BOOTSTRAP_CHARS = 24


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; SQLite file `xueliang.db` in the data dir when unset. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )
    pool_size: int = Field(default=10, ge=1, le=200, description="Connections per process.")


class LocalStorageSettings(_Section):
    path: Path | None = Field(
        default=None, description="Object root of the local store; `objects/` in the data dir."
    )


class S3Settings(_Section):
    endpoint: str | None = Field(default=None, description="host:port of MinIO or any S3.")
    access_key: SecretStr | None = Field(default=None, description="S3 access key.")
    secret_key: SecretStr | None = Field(default=None, description="S3 secret key.")
    bucket: str = Field(default="xueliang", min_length=3, max_length=63)
    secure: bool = Field(default=False, description="Use TLS.")
    region: str | None = Field(
        default=None, description="Bucket region, when the server needs one."
    )


class StorageSettings(_Section):
    backend: Literal["local", "s3"] = Field(default="local", description="Object store backend.")
    local: LocalStorageSettings = LocalStorageSettings()
    s3: S3Settings = S3Settings()
    presign_s: int = Field(
        default=300, ge=10, le=86400, description="Lifetime of presigned clip URLs (seconds)."
    )


class AuthSettings(_Section):
    bootstrap_token: SecretStr | None = Field(
        default=None,
        description="An admin token accepted when set (for the first login); at least "
        f"{MIN_BOOTSTRAP_CHARS} characters, since unlike issued tokens a person chooses it.",
    )
    admin_lifetime_s: int = Field(
        default=30 * 86400,
        ge=60,
        le=10 * 365 * 86400,
        description="Default lifetime of an admin token (seconds; 30 days): held by people, "
        "it can do everything, so a forgotten copy should stop working within a month.",
    )
    operator_lifetime_s: int = Field(
        default=30 * 86400,
        ge=60,
        le=10 * 365 * 86400,
        description="Default lifetime of an operator token (seconds; 30 days): a person's "
        "console login, issued by an admin (there is no password login to renew it daily).",
    )
    integrator_lifetime_s: int = Field(
        default=365 * 86400,
        ge=60,
        le=10 * 365 * 86400,
        description="Default lifetime of an integrator token (seconds; a year): a machine's, "
        "configured once and renewed with POST /api/v1/tokens/{id}/rotate.",
    )
    grid_platform_lifetime_s: int = Field(
        default=365 * 86400,
        ge=60,
        le=10 * 365 * 86400,
        description="Default lifetime of a grid platform token (seconds; a year): a "
        "machine's, renewed with POST /api/v1/tokens/{id}/rotate.",
    )
    rotation_grace_s: int = Field(
        default=3600,
        ge=0,
        le=7 * 86400,
        description="How long a rotated token keeps working beside its successor (seconds), "
        "so every copy of a client can switch without downtime.",
    )

    @field_validator("bootstrap_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_BOOTSTRAP_CHARS:
            raise ValueError(
                f"must be at least {MIN_BOOTSTRAP_CHARS} characters (make one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return token

    def lifetime_s(self, role: str) -> int:
        """The default lifetime of a new token of ``role``."""
        lifetime: int = getattr(self, f"{role}_lifetime_s")
        return lifetime


def _comma_list(value: Any) -> Any:
    """A list setting given as one string (an environment variable): split at commas."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class SecretsSettings(_Section):
    camera_key: SecretStr | None = Field(
        default=None,
        description="Fernet key encrypting camera passwords at rest. When unset, one is generated "
        "once into `secret.key` in the data dir; set it explicitly when several processes share "
        "one database.",
    )
    previous_keys: tuple[SecretStr, ...] = Field(
        default=(),
        max_length=16,
        description="Older Fernet keys, used only to decrypt during a key rotation "
        "(comma-separated in the environment); `xueliang secrets rotate` re-encrypts with "
        "camera_key, after which they can be removed.",
    )

    _split_keys = field_validator("previous_keys", mode="before")(_comma_list)


class EvidenceSettings(_Section):
    installation_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The installation's name in the manifest of every evidence package, e.g. "
        "the operating agency and platform (packages are signed by the installation's key "
        "whether it is set or not).",
    )


class SecuritySettings(_Section):
    auth_failures: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="Requests with a wrong, revoked or expired bearer token allowed per client "
        "address at once, counted across every process of the installation (in the database); "
        "beyond them the address gets 429 with Retry-After on the API.",
    )
    auth_failures_window_s: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="Time in which a spent allowance of failed authentications comes back.",
    )
    token_creations: int = Field(
        default=30,
        ge=1,
        le=1_000_000,
        description="Tokens created (POST /api/v1/tokens, rotations) per client address at "
        "once, counted across every process of the installation.",
    )
    token_creations_window_s: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="Time in which a spent allowance of token creations comes back.",
    )
    tracked_clients: int = Field(
        default=10000,
        ge=100,
        le=10_000_000,
        description="Client addresses remembered by each rate limit (bounds its table; the "
        "least recently counted are forgotten first).",
    )
    cors_origins: tuple[str, ...] = Field(
        default=(),
        max_length=100,
        description="Origins (scheme://host[:port]) whose pages may call the API from a "
        "browser (comma-separated in the environment); none by default: only the console, "
        "served from the same origin.",
    )

    _split_origins = field_validator("cors_origins", mode="before")(_comma_list)

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or origin.count("/") != 2:
                raise ValueError(f"{origin!r} is not an origin like https://grid.example:8443")
        return origins


class EgressSettings(_Section):
    """Where the service may connect on API users' behalf (cameras, ONVIF, webhooks).

    Link-local and cloud metadata addresses are refused for all of them, loopback and
    unspecified addresses for webhooks too (``ingest/egress.py``, docs/security.md).
    """

    allow: tuple[str, ...] = Field(
        default=(),
        max_length=100,
        description="CIDRs let through the egress policy although it refuses them by "
        "default (comma-separated in the environment), e.g. `127.0.0.0/8` for a webhook "
        "receiver on this machine.",
    )
    resolve_timeout_s: float = Field(
        default=2.0, gt=0, le=30, description="Longest wait for one host name's DNS answer."
    )

    _split_allow = field_validator("allow", mode="before")(_comma_list)

    @field_validator("allow")
    @classmethod
    def _cidrs(cls, allow: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR like 10.0.0.0/8 or fd00::/8") from None
        return allow


class MqttSettings(_Section):
    url: str | None = Field(
        default=None, description="mqtt://host:port; events published when set."
    )


class IngestSettings(_Section):
    open_timeout_s: float = Field(default=5.0, gt=0, le=60, description="RTSP open timeout.")
    read_timeout_s: float = Field(default=5.0, gt=0, le=60, description="RTSP read timeout.")
    stall_timeout_s: float = Field(
        default=20.0, gt=0, le=600, description="No packet for this long: reconnect."
    )
    backoff_initial_s: float = Field(default=1.0, gt=0, le=60)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    auth_retry_s: float = Field(
        default=60.0, gt=0, le=86400, description="Retry interval after an authentication failure."
    )
    stable_after_s: float = Field(
        default=300.0, gt=0, le=86400, description="Uptime after which the backoff resets."
    )
    analysis_fps: float = Field(default=5.0, gt=0, le=60, description="Frames analysed per second.")
    allow_file_sources: bool = Field(
        default=False,
        description="Accept file:// camera URLs (looped video files; the demo and tests).",
    )


class RecordingSettings(_Section):
    pre_s: float = Field(default=5.0, ge=0, le=60, description="Seconds kept before an incident.")
    post_s: float = Field(default=5.0, ge=0, le=300, description="Seconds kept after an incident.")
    max_clip_s: float = Field(default=300.0, gt=0, le=3600, description="Longest clip.")
    retention_days: int = Field(default=30, ge=1, le=3650, description="Clips kept this long.")


class IncidentSettings(_Section):
    start_frames: int = Field(
        default=3, ge=1, le=100, description="Consecutive analysed frames with motion to start."
    )
    quiet_s: float = Field(default=10.0, gt=0, le=600, description="Quiet seconds that end one.")
    max_len_s: float = Field(default=300.0, gt=0, le=3600, description="Longest incident.")


class CrowdSettings(_Section):
    # 2/s: the person tracker needs two looks a second to bridge a missed detection
    # (count error 0.47 at 2/s vs 0.67 at 1/s on vtest.avi, docs/analytics.md).
    fps: float = Field(
        default=2.0, gt=0, le=10, description="Person detections per second per camera, at most."
    )
    quiet_s: float = Field(
        default=10.0, gt=0, le=600, description="Seconds below the threshold that end a gathering."
    )
    model_path: Path | None = Field(
        default=None,
        description="A YOLOv8-layout ONNX person model to use instead of the shipped SSDLite.",
    )


class QualitySettings(_Section):
    """Video quality diagnostics (视频质量诊断, ``analytics/quality.py``) on analysed frames."""

    enabled: bool = Field(default=True, description="Diagnose every camera's picture.")
    every_s: float = Field(
        default=1.0, ge=0.2, le=60, description="Seconds between two checks of one camera."
    )
    hold_s: float = Field(
        default=4.0, ge=0, le=600, description="Seconds a problem must last before it is raised."
    )
    clear_s: float = Field(
        default=4.0, ge=0, le=600, description="Seconds a problem must be gone before it clears."
    )
    learn_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds of healthy, steady picture before the reference view is taken.",
    )
    tamper_incidents: bool = Field(
        default=True,
        description="Open a 'tamper' incident (clip and snapshot) when a problem looks deliberate.",
    )


class ArchiveSettings(_Section):
    retry_initial_s: float = Field(
        default=1.0, gt=0, le=60, description="First retry delay after a failed upload."
    )
    retry_max_s: float = Field(default=60.0, gt=0, le=3600, description="Longest retry delay.")
    retention_interval_s: float = Field(
        default=3600.0, gt=0, le=86400, description="How often retention runs."
    )


#: China's Cybersecurity Law (art. 21) asks network operators to keep logs at least six months.
MIN_AUDIT_DAYS = 180


class RetentionSettings(_Section):
    """How long the control-plane tables keep their rows (docs/deployment.md, "Retention").

    Swept every ``archive.retention_interval_s`` with the clips.
    """

    transitions_days: int = Field(
        default=35,
        ge=2,
        le=3650,
        description="Raw camera state transitions kept (each camera keeps the one before the "
        "cut, its state then); older days are read from the daily availability rows.",
    )
    events_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Events kept; never deleted before every subscription has delivered them.",
    )
    audit_days: int = Field(
        default=MIN_AUDIT_DAYS,
        ge=MIN_AUDIT_DAYS,
        le=36500,
        description="Audit log kept; at least 180 days (six months, Cybersecurity Law art. 21).",
    )
    availability_days: int = Field(
        default=1095, ge=1, le=36500, description="Daily availability rows kept (3 years)."
    )
    batch: int = Field(
        default=5000,
        ge=100,
        le=1_000_000,
        description="Rows deleted per transaction: short transactions, short locks.",
    )


class AuditSettings(_Section):
    """The audit log's hash chain (docs/security.md, "The audit log is hash-chained")."""

    anchor_interval_s: float = Field(
        default=600.0,
        ge=10,
        le=86400,
        description="How often the chain's head is published as an `audit.anchor` event "
        "(only when it moved), so the grid platform holds copies outside the database.",
    )


class WorkerSettings(_Section):
    lease_s: float = Field(
        default=15.0,
        ge=3,
        le=600,
        description="Camera lease time: a dead worker's cameras are taken over within it.",
    )
    simulated_cameras: bool = Field(
        default=False,
        description=(
            "Only for the city simulator (tests/scale): lets simulated camera sessions run "
            "against this database. A service refuses to start with it set."
        ),
    )


class DeliverySettings(_Section):
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="One webhook or MQTT send.")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    backoff_initial_s: float = Field(default=1.0, gt=0, le=600, description="First retry delay.")
    backoff_max_s: float = Field(default=300.0, gt=0, le=86400, description="Longest retry delay.")
    jitter: float = Field(default=0.25, ge=0, le=1, description="Random share of each delay.")
    poll_s: float = Field(default=1.0, gt=0, le=60, description="Check for new events this often.")
    lease_s: float = Field(
        default=30.0, gt=0, le=3600, description="A worker's hold on one subscription's queue."
    )
    batch: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="Events read per round (at least a subscription's batch).",
    )
    max_parallel: int = Field(
        default=16, ge=1, le=1000, description="Subscriptions served at once."
    )
    log_retention_days: int = Field(default=30, ge=1, le=3650, description="Delivery log kept.")


class ServerSettings(_Section):
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(
        default=8 << 20, ge=1024, le=1 << 30, description="Largest request body (bytes)."
    )
    max_import_bytes: int = Field(
        default=256 << 20,
        ge=1024,
        le=4 << 30,
        description="Largest body of POST /grids/import (a city's GeoJSON boundaries).",
    )
    advertise_url: str | None = Field(
        default=None,
        max_length=500,
        pattern=r"^https?://[^\s/?#]+/?$",
        description="This process's HTTP base URL as the installation's other processes "
        "reach it (e.g. a camera worker asking the GB/T 28181 endpoint to INVITE); "
        "`http://HOST:PORT` when unset (this machine's name when HOST is 0.0.0.0 or ::).",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        max_length=100,
        description="Addresses or networks of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (comma-separated in the environment); none by default: "
        "the client address (what rate limits count by) is the TCP peer's.",
    )

    _split_proxies = field_validator("trusted_proxies", mode="before")(_comma_list)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network") from None
        return proxies


class GB28181Settings(_Section):
    """The GB/T 28181 SIP endpoint devices, NVRs and district platforms register to."""

    enabled: bool = Field(default=False, description="Run the SIP endpoint.")
    sip_id: str = Field(
        default="34020000002000000001",
        pattern=r"^\d{20}$",
        description="The platform's 20-digit SIP ID (what devices are told to register to).",
    )
    domain: str = Field(
        default="3402000000",
        pattern=r"^\d{10}$",
        description="The SIP domain / digest realm: the first 10 digits of the platform ID.",
    )
    host: str = Field(default="127.0.0.1", description="Address the SIP endpoint binds (UDP+TCP).")
    port: int = Field(default=5060, ge=1, le=65535, description="SIP port (UDP and TCP).")
    password: SecretStr | None = Field(
        default=None,
        description="Default device password; a device with its own (PUT /gb28181/devices/…) "
        "uses that. Unset: devices register without digest.",
    )
    media_host: str | None = Field(
        default=None,
        description="Address written into INVITE SDPs (where devices send RTP); the bind host "
        "when unset.",
    )
    media_ports: str = Field(
        default="30000-30999",
        pattern=r"^\d{1,5}-\d{1,5}$",
        description="RTP port range for GB/T 28181 media, `LOW-HIGH`.",
    )
    media_transport: Literal["udp", "tcp"] = Field(
        default="udp",
        description="How devices are asked to send media: RTP over UDP, or over TCP to our "
        "passive port (RFC 4571; through firewalls and NAT).",
    )
    keepalive_s: float = Field(
        default=60.0, gt=0, le=3600, description="Keepalive interval devices are expected to use."
    )
    keepalive_misses: int = Field(
        default=3, ge=1, le=100, description="Missed keepalives before a device is offline."
    )
    allow_unknown: bool = Field(
        default=True, description="Accept devices that were not created through the API first."
    )
    auto_cameras: bool = Field(
        default=False, description="Create a camera for every new video channel of a catalog."
    )
    invite_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="INVITE without a final answer fails after this."
    )

    @field_validator("media_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        low, high = (int(part) for part in value.split("-"))
        if not 1024 <= low <= high <= 65535:
            raise ValueError("media_ports must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
        return value

    @property
    def media_port_range(self) -> tuple[int, int]:
        """``media_ports`` as ``(low, high)``, both inclusive."""
        low, high = (int(part) for part in self.media_ports.split("-"))
        return low, high


#: A host name or IPv4 address (what may go into the console's CSP as a tile origin).
_HOST = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


def tiles_origin(template: str) -> str | None:
    """The origin serving a tile URL template, as a CSP source; None for this origin.

    A ``{s}`` (Leaflet's subdomain) in the host's first label becomes a wildcard
    (``https://t{s}.tianditu.gov.cn/…`` → ``https://*.tianditu.gov.cn``). Raises
    ValueError for anything that is not a plain http(s) origin (it goes into a header).
    """
    if template.startswith("/") and not template.startswith("//"):
        return None
    parts = urlsplit(template)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise ValueError("must be an http(s) URL or a path on this server (/tiles/{z}/{x}/{y}.png)")
    first, _, rest = host.partition(".")
    if "{s}" in first and "." in rest and _HOST.match(first.replace("{s}", "a")):
        host = "*." + rest
    if not _HOST.match(host.removeprefix("*.")):
        raise ValueError(f"host {host!r}: a name or IPv4 address, `{{s}}` only in its first label")
    port = f":{parts.port}" if parts.port else ""  # .port raises ValueError when not a number
    return f"{parts.scheme}://{host}{port}"


class ConsoleSettings(_Section):
    """The operator console's map view: optional base tiles (the city's own GIS, 天地图)."""

    map_tiles_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Tile URL template of the map's base layer, Leaflet style, Web Mercator "
        "(EPSG:3857): `{z}`, `{x}`, `{y}` (or `{-y}`), `{s}` for a subdomain, e.g. "
        "`https://t{s}.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0"
        "&LAYER=vec&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}"
        "&TILECOL={x}&tk=KEY` or `/tiles/{z}/{x}/{y}.png`. Every browser gets it (a key in it "
        "is public) and the console's CSP allows its origin for images. Unset: grids and "
        "cameras on a plain background.",
    )
    map_subdomains: str = Field(
        default="abc",
        pattern=r"^[A-Za-z0-9]{1,16}$",
        description="The values `{s}` takes, one character each (天地图: `01234567`).",
    )
    map_attribution: str | None = Field(
        default=None,
        max_length=300,
        description="Credit for the tiles, shown as plain text in the map's corner "
        "(e.g. `审图号 GS(2024)0568号 · 天地图`).",
    )

    @field_validator("map_tiles_url")
    @classmethod
    def _tile_template(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if any(c.isspace() or not c.isprintable() for c in url):
            raise ValueError("must not contain spaces or control characters")
        if "{z}" not in url or "{x}" not in url or ("{y}" not in url and "{-y}" not in url):
            raise ValueError("must contain {z}, {x} and {y} (or {-y}, rows counted from the south)")
        tiles_origin(url)
        return url

    @property
    def map_tiles_origin(self) -> str | None:
        """Where tiles come from (a CSP source), when they come from another origin."""
        return tiles_origin(self.map_tiles_url) if self.map_tiles_url else None


#: The states of a case, in the order of GB/T 30428 / CJ/T 315's handling of an event
#: (上报 → 核实 → 立案 → 派遣 → 处置 → 反馈 → 核查 → 结案).
CaseState = Literal[
    "reported",
    "accepted",
    "rejected",
    "filed",
    "dispatched",
    "handling",
    "handled",
    "verified",
    "closed",
]


class EventClass(_Section):
    """An event class of the grid platform (大类/小类, GB/T 30428.2-style codes)."""

    code: str = Field(pattern=r"^[0-9A-Za-z]{2,16}$", description="The class code, e.g. `0101`.")
    name: str = Field(min_length=1, max_length=100)
    category: str = Field(min_length=1, max_length=100, description="Its 大类 (major class).")
    #: Seconds allowed in each state before the case is overdue (absent: no deadline).
    deadlines_s: dict[CaseState, float] = Field(default_factory=dict)


_HOUR = 3600.0
_DEFAULT_CLASSES = (
    EventClass(
        code="0101", name="人员聚集 crowd gathering", category="社会治安 public order",
        deadlines_s={"reported": 0.5 * _HOUR, "dispatched": _HOUR, "handling": 4 * _HOUR},
    ),
    EventClass(
        code="0102", name="异常闯入 intrusion", category="社会治安 public order",
        deadlines_s={"reported": 0.5 * _HOUR, "dispatched": _HOUR, "handling": 2 * _HOUR},
    ),
    EventClass(
        code="0201", name="设施遮挡/损坏 facility blocked or damaged",
        category="市政设施 public facilities",
        deadlines_s={"reported": 2 * _HOUR, "dispatched": 8 * _HOUR, "handling": 48 * _HOUR},
    ),
    EventClass(
        code="0301", name="设备报警 device alarm", category="视频监控 video network",
        deadlines_s={"reported": _HOUR, "dispatched": 4 * _HOUR, "handling": 24 * _HOUR},
    ),
    EventClass(code="9999", name="其他 other", category="其他 other"),
)  # fmt: skip


class CaseSettings(_Section):
    """The case loop with the grid platform (event classes, deadlines, inbound webhooks)."""

    classes: tuple[EventClass, ...] = Field(
        default=_DEFAULT_CLASSES,
        description="Event classes and their deadlines per state (JSON list in "
        "`XUELIANG_CASES__CLASSES`); replaces the defaults.",
    )
    default_class: dict[str, str] = Field(
        default_factory=lambda: {"motion": "0102", "crowd": "0101", "device_alarm": "0301"},
        description="The class of a case reported from an incident of each type, when the "
        "report names none (else `9999` other).",
    )
    inbound_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of the grid platform's webhooks to `POST /cases/inbound` "
        "(HMAC-SHA256); inbound transitions are refused while unset.",
    )
    inbound_max_skew_s: float = Field(
        default=300.0, gt=0, le=3600, description="Oldest inbound message accepted (seconds)."
    )
    overdue_check_s: float = Field(
        default=10.0, gt=0, le=3600, description="How often deadlines are checked."
    )

    @field_validator("classes")
    @classmethod
    def _unique_codes(cls, classes: tuple[EventClass, ...]) -> tuple[EventClass, ...]:
        codes = [c.code for c in classes]
        if len(set(codes)) != len(codes):
            raise ValueError("event class codes must be unique")
        return classes

    def event_class(self, code: str | None) -> EventClass | None:
        return next((c for c in self.classes if c.code == code), None)


class Settings(BaseSettings):
    """All of Xueliang's configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default=Path("data"), description="Where the embedded defaults live.")
    database: DatabaseSettings = DatabaseSettings()
    storage: StorageSettings = StorageSettings()
    auth: AuthSettings = AuthSettings()
    secrets: SecretsSettings = SecretsSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    security: SecuritySettings = SecuritySettings()
    egress: EgressSettings = EgressSettings()
    mqtt: MqttSettings = MqttSettings()
    ingest: IngestSettings = IngestSettings()
    recording: RecordingSettings = RecordingSettings()
    incidents: IncidentSettings = IncidentSettings()
    crowd: CrowdSettings = CrowdSettings()
    quality: QualitySettings = QualitySettings()
    archive: ArchiveSettings = ArchiveSettings()
    retention: RetentionSettings = RetentionSettings()
    audit: AuditSettings = AuditSettings()
    workers: WorkerSettings = WorkerSettings()
    delivery: DeliverySettings = DeliverySettings()
    server: ServerSettings = ServerSettings()
    gb28181: GB28181Settings = GB28181Settings()
    console: ConsoleSettings = ConsoleSettings()
    cases: CaseSettings = CaseSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges the file and the environment itself (so that it can name
        # unknown variables and be tested with an explicit environment).
        return (init_settings,)

    # Derived locations -------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'xueliang.db').resolve()}"

    @property
    def objects_path(self) -> Path:
        return self.storage.local.path or self.data_dir / "objects"

    @property
    def spool_path(self) -> Path:
        return self.data_dir / "spool"

    @property
    def camera_key_file(self) -> Path:
        """Where the generated camera credential key lives when ``secrets.camera_key`` is unset."""
        return self.data_dir / "secret.key"


def _env_tree(environ: dict[str, str]) -> dict[str, Any]:
    """``XUELIANG_A__B=v`` variables as a nested mapping; unknown names are a ConfigError."""
    tree: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        _check_env_path(name, path)
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _check_env_path(name: str, path: list[str]) -> None:
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif field is None or i != len(path) - 1:
            raise ConfigError(
                f"unknown environment variable {name}: no such setting "
                "(see the README's configuration table)"
            )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_validation_error(err: ValidationError, origin: str) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown setting '{key}'")
        else:
            # Never echo the input value: it may be a secret.
            problems.append(f"setting '{key}': {e['msg']}")
    return f"invalid configuration ({origin}): " + "; ".join(problems)


def load_settings(
    config_file: Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Load settings from an optional YAML file and the environment.

    Raises :class:`ConfigError` with one line naming the offending key.
    """
    import os

    env = _env_tree(dict(os.environ if environ is None else environ))
    data: dict[str, Any] = {}
    origin = "environment"
    if config_file is not None:
        origin = f"{config_file} and environment"
        data = _read_yaml(config_file)
    data = _merge(data, env)
    try:
        return Settings(**data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings")
    return loaded
