"""Request and response bodies of the camera routes (separate from the table rows)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from analytics.motion import MIN_AREA_MIN
from analytics.zones import parse_zones
from api.schemas.onvif import OnvifIn
from ingest.sources import STREAM_SCHEMES

FILE_SCHEME = "file"


def _check_stream_url(url: str) -> str:
    if any(ord(c) < 0x20 or c in " \x7f" for c in url):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in (*STREAM_SCHEMES, FILE_SCHEME):
        raise ValueError("must be an rtsp:// or rtsps:// URL")
    if parts.scheme in STREAM_SCHEMES and not parts.hostname:
        raise ValueError("must name a host: rtsp://[user:password@]host[:port]/path")
    if parts.scheme == FILE_SCHEME and not parts.path:
        raise ValueError("file:// URL without a path")
    try:
        parts.port  # noqa: B018  # raises on a non-numeric or out-of-range port
    except ValueError as err:
        raise ValueError(f"invalid port: {err}") from None
    return url


StreamUrl = Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_check_stream_url)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Location(_In):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ZoneIn(_In):
    name: str = Field(min_length=1, max_length=100)
    polygon: list[tuple[float, float]] = Field(min_length=3, max_length=100)
    kind: Literal["motion", "crowd", "mask"]


class MotionSettings(_In):
    enabled: bool = True
    sensitivity: int | None = Field(default=None, ge=1, le=100)
    min_area: float | None = Field(
        default=None,
        ge=MIN_AREA_MIN,
        le=1,
        description="Smallest moving blob, as a fraction of the frame.",
    )


class CrowdSettings(_In):
    enabled: bool = False
    threshold: int = Field(default=5, ge=1, le=1000)
    dwell_s: float = Field(default=10, ge=0, le=3600)


class ThresholdIn(_In):
    """When one picture diagnosis is raised and cleared (scores: higher is worse; each
    kind's unit and default are in docs/contract.md)."""

    raise_at: float = Field(ge=0, le=1000, description="Raised from this score on.")
    clear_at: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Cleared under this score (at most `raise_at`); default: the default "
        "hysteresis, scaled to `raise_at`.",
    )
    hold_s: float | None = Field(
        default=None, ge=0, le=3600, description="Seconds over `raise_at` before raising."
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> ThresholdIn:
        if self.clear_at is not None and self.clear_at > self.raise_at:
            raise ValueError(f"clear_at ({self.clear_at}) must be <= raise_at ({self.raise_at})")
        return self


class QualityThresholdsIn(_In):
    black: ThresholdIn | None = None
    frozen: ThresholdIn | None = None
    blur: ThresholdIn | None = None
    occlusion: ThresholdIn | None = None
    displaced: ThresholdIn | None = None
    color_cast: ThresholdIn | None = None
    noise: ThresholdIn | None = None
    brightness: ThresholdIn | None = None


class QualitySettingsIn(_In):
    """The camera's picture checks (视频质量诊断); what is not given takes the defaults."""

    enabled: bool = True
    thresholds: QualityThresholdsIn = QualityThresholdsIn()
    tamper_incidents: bool | None = Field(
        default=None, description="Open `tamper` incidents (default: the installation's)."
    )


class AnalyticsIn(_In):
    motion: MotionSettings = MotionSettings()
    crowd: CrowdSettings = CrowdSettings()
    quality: QualitySettingsIn = QualitySettingsIn()


class RecordingIn(_In):
    pre_s: float = Field(default=5, ge=0, le=60)
    post_s: float = Field(default=5, ge=0, le=300)


def _valid_zones(zones: list[ZoneIn]) -> list[ZoneIn]:
    parse_zones(z.model_dump() for z in zones)  # raises ValueError naming the zone
    return zones


Zones = Annotated[list[ZoneIn], Field(max_length=50), AfterValidator(_valid_zones)]
GridCode = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


GbId = Annotated[str, Field(pattern=r"^\d{20}$", description="A 20-digit GB/T 28181 ID.")]


class Gb28181ChannelIn(_In):
    """A channel of a GB/T 28181 device (a camera, or an NVR's channel) as the camera's video."""

    device_id: GbId
    channel_id: GbId


class CameraCreate(_In):
    """A camera: its stream URLs, its ONVIF address and login (streams probed), or a
    GB/T 28181 channel."""

    name: str = Field(min_length=1, max_length=200)
    gb28181: Gb28181ChannelIn | None = Field(
        default=None,
        description="A channel of a registered GB/T 28181 device; its location defaults to "
        "the channel's coordinates. Instead of `rtsp_url` or `onvif`.",
    )
    # Before the URLs: their validators check "either rtsp_url or onvif" against it, so the
    # error names the URL field and does not echo the onvif object (it holds a password).
    onvif: OnvifIn | None = Field(
        default=None,
        description="Register by ONVIF address and login: the service probes the device and "
        "records its highest-resolution H.264 profile, analyses its smallest. "
        "Either this or `rtsp_url`.",
    )
    rtsp_url: StreamUrl | None = Field(
        default=None,
        description="Main stream, recorded. Either this or `onvif`.",
        validate_default=True,
    )
    substream_url: StreamUrl | None = Field(
        default=None, description="Analysed stream; the main stream when absent."
    )
    grid_code: GridCode | None = None
    location: Location | None = None
    national_id: GbId | None = Field(
        default=None,
        description="The camera's national 20-digit ID (GB/T 28181 coding), given to the grid "
        "platform with the cases it reports; a GB/T 28181 camera's is its channel ID.",
    )
    zones: Zones = []
    analytics: AnalyticsIn = AnalyticsIn()
    recording: RecordingIn = RecordingIn()
    enabled: bool = True

    @field_validator("rtsp_url")
    @classmethod
    def _either_url_or_onvif(cls, url: str | None, info: ValidationInfo) -> str | None:
        if "onvif" not in info.data or "gb28181" not in info.data:
            return url  # onvif or gb28181 itself is invalid: that error says enough
        given = [k for k in ("onvif", "gb28181") if info.data[k] is not None]
        if url is not None:
            given.append("rtsp_url")
        if not given:
            raise ValueError("one of rtsp_url, onvif or gb28181 is required")
        if len(given) > 1:
            raise ValueError(f"give one of rtsp_url, onvif or gb28181, not {' and '.join(given)}")
        return url

    @field_validator("substream_url")
    @classmethod
    def _no_url_with_onvif(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is not None and info.data.get("gb28181") is not None:
            raise ValueError("a GB/T 28181 channel is one stream: give no substream_url")
        if url is not None and info.data.get("onvif") is not None:
            raise ValueError(
                "with onvif the streams come from the camera's profiles: "
                "choose them with onvif.profile_token and onvif.sub_profile_token"
            )
        return url


class CameraPatch(_In):
    """Fields to change. A URL whose password is `***` keeps the stored password."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    rtsp_url: StreamUrl | None = None
    substream_url: StreamUrl | None = None
    grid_code: GridCode | None = None
    location: Location | None = None
    national_id: GbId | None = None
    zones: Zones | None = None
    analytics: AnalyticsIn | None = None
    recording: RecordingIn | None = None
    enabled: bool | None = None

    @field_validator("name", "rtsp_url", "enabled")
    @classmethod
    def _not_null(cls, v: object) -> object:
        if v is None:
            raise ValueError("may be changed but not removed")
        return v


class CameraOut(BaseModel):
    id: str
    name: str
    rtsp_url: str | None = Field(description="With the password replaced by ***.")
    gb28181: Gb28181ChannelIn | None = Field(
        default=None, description="The GB/T 28181 channel the camera's video comes from."
    )
    substream_url: str | None
    grid_code: str | None
    location: Location | None
    national_id: str | None = Field(
        default=None, description="Its national ID: as set, else a GB/T 28181 channel's ID."
    )
    zones: list[ZoneIn]
    analytics: AnalyticsIn
    recording: RecordingIn
    enabled: bool
    ptz: bool = Field(
        default=False,
        description="The camera can be steered with `POST /cameras/{id}/ptz`: it was "
        "registered through ONVIF and its probe found a PTZ service.",
    )
    created_at: datetime
    updated_at: datetime


class CameraList(BaseModel):
    """One page of cameras."""

    items: list[CameraOut]
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` (with the same `order` and filters) for the next page; "
        "null on the last.",
    )


CameraOrder = Literal["created", "name"]

#: The columns of a camera import in CSV (header row; any order; only `name` required).
CSV_COLUMNS = (
    "name",
    "rtsp_url",
    "substream_url",
    "gb28181_device_id",
    "gb28181_channel_id",
    "lat",
    "lon",
    "grid_code",
    "national_id",
    "enabled",
)
#: A field of :class:`CameraCreate` as a CSV column names it.
CSV_FIELD = {
    "location.lat": "lat",
    "location.lon": "lon",
    "location": "lat",
    "gb28181.device_id": "gb28181_device_id",
    "gb28181.channel_id": "gb28181_channel_id",
    "gb28181": "gb28181_device_id",
}


class ImportProblem(BaseModel):
    """One refused row of a camera import (a row can have several)."""

    line: int = Field(
        description="CSV: the line the row starts on, the header being line 1. "
        "JSON: the camera's position in the array, from 1."
    )
    field: str = Field(description="The field (CSV: the column); empty for the whole row.")
    msg: str
    loc: list[str | int] = Field(description='`["body", line, field]`, as other 422s name it.')
    type: str = "value_error"


class ImportOut(BaseModel):
    created: int
    ids: list[str] = Field(description="The new cameras' ids, in the order of the rows.")


@dataclass(frozen=True)
class ImportItem:
    """One camera of an import before validation: its line and its fields."""

    line: int
    fields: Any
    #: From CSV: problems name the row's columns (``lat``), not the fields (``location.lat``).
    csv: bool = False


def csv_items(text: str) -> tuple[list[ImportItem], list[ImportProblem]]:
    """The rows of a CSV camera import as :class:`CameraCreate` fields, and what is wrong
    with its header or with a row's shape (the fields themselves are validated later)."""
    reader = csv.reader(io.StringIO(text))
    header = [c.strip().lower() for c in next(reader, [])]
    problems = [
        problem(1, c, f"unknown column; the columns are {', '.join(CSV_COLUMNS)}")
        for c in header
        if c not in CSV_COLUMNS
    ]
    if "name" not in header:
        problems.append(problem(1, "name", "the header must name a name column"))
    if problems:
        return [], problems
    items: list[ImportItem] = []
    start = reader.line_num + 1
    for cells in reader:
        line, start = start, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if len(cells) != len(header):
            problems.append(problem(line, "", f"{len(cells)} cells; the header has {len(header)}"))
            continue
        row = {k: v.strip() for k, v in zip(header, cells, strict=True) if v.strip()}
        items.append(ImportItem(line, _csv_fields(row), csv=True))
    return items, problems


def _csv_fields(row: dict[str, str]) -> dict[str, Any]:
    plain = ("name", "rtsp_url", "substream_url", "grid_code", "national_id", "enabled")
    fields: dict[str, Any] = {k: row[k] for k in plain if k in row}
    if "lat" in row or "lon" in row:
        fields["location"] = {"lat": row.get("lat"), "lon": row.get("lon")}
    if "gb28181_device_id" in row or "gb28181_channel_id" in row:
        fields["gb28181"] = {
            "device_id": row.get("gb28181_device_id"),
            "channel_id": row.get("gb28181_channel_id"),
        }
    return fields


def problem(line: int, field: str, msg: str) -> ImportProblem:
    return ImportProblem(line=line, field=field, msg=msg, loc=["body", line, field])


State = Literal["connecting", "online", "offline", "disabled"]
QualityKind = Literal[
    "black", "frozen", "blur", "occlusion", "displaced", "color_cast", "noise", "brightness"
]


class QualityProblemOut(BaseModel):
    kind: QualityKind
    since: datetime
    score: float = Field(description="Higher is worse; the kind's threshold raised it.")
    tamper: bool = Field(description="It looks deliberate: a `tamper` incident was opened.")


class QualityOut(BaseModel):
    """Whether the picture is usable (视频质量诊断): ``unknown`` until the camera's reference
    view is learnt (about 10 s of healthy picture) and while the camera is not online."""

    state: Literal["ok", "degraded", "unknown"] = "unknown"
    since: datetime | None = None
    problems: list[QualityProblemOut] = []
    reference_at: datetime | None = Field(
        default=None, description="When the reference view the checks compare with was taken."
    )
    reference_requested_at: datetime | None = Field(
        default=None, description="A `POST .../quality/reference` not served yet."
    )


class ReferenceRequestOut(BaseModel):
    requested_at: datetime


class CameraStatusOut(BaseModel):
    state: State
    since: datetime | None = None
    fps: float | None = None
    last_frame_at: datetime | None = None
    reconnects: int = 0
    frames_dropped: int = 0
    last_error: str | None = None
    worker_id: str | None = None
    quality: QualityOut = QualityOut()
