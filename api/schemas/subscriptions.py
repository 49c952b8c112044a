"""Request and response bodies of the subscription routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from api.schemas.cameras import GridCode
from storage.events import EventType


def _check_webhook_url(url: str) -> str:
    if any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials: the signature authenticates us")
    try:
        parts.port  # noqa: B018  # raises on a non-numeric or out-of-range port
    except ValueError as err:
        raise ValueError(f"invalid port: {err}") from None
    return url


WebhookUrl = Annotated[
    str, Field(min_length=8, max_length=2048), AfterValidator(_check_webhook_url)
]


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: WebhookUrl = Field(
        description="Receives one POST per event, or per batch of events with `batch` > 1."
    )
    secret: SecretStr = Field(
        min_length=8,
        max_length=256,
        description="Key of the HMAC-SHA256 in X-Xueliang-Signature; never returned.",
    )
    types: list[EventType] | None = Field(
        default=None, min_length=1, description="Only these event types (default: all)."
    )
    grid_codes: list[GridCode] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Only events of these grids and the grids below them (default: all; "
        "a grid-scoped token's own grid).",
    )
    batch: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Events per POST. 1 (default): the body is one event. N > 1: up to N "
        'consecutive events as `{"events": [...]}`, `X-Xueliang-Seq` the last seq in it and '
        "`X-Xueliang-Seq-First` the first; a failed POST is retried whole.",
    )


class SubscriptionOut(BaseModel):
    id: str
    url: str
    types: list[EventType] | None
    grid_codes: list[str] | None
    created_at: datetime
    batch: int = Field(description="Events per POST (1: one event, the body is the event).")
    last_delivered_seq: int = Field(description="Every event up to this seq was delivered.")
    failures: int = Field(description="Consecutive failed attempts at the next event.")
    next_attempt_at: datetime | None = Field(description="When the next retry is due.")
    last_error: str | None


class SubscriptionList(BaseModel):
    items: list[SubscriptionOut]


class DeliveryOut(BaseModel):
    id: int
    seq: int
    attempt: int = Field(description="1 for the first attempt at this event, 2 for the retry…")
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered.")
    error: str | None = Field(description="Why the attempt failed, when it did.")
    at: datetime
    duration_ms: float


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    next_before: int | None = Field(description="Pass as `before` for older attempts.")
