"""Event delivery to the grid platform: signed webhooks and MQTT, at least once, in order.

The events table is the outbox. Each consumer — a webhook subscription, or MQTT when
``mqtt.url`` is set — has a durable cursor (``storage.delivery``), so a restart or a crash
loses nothing and resumes at the oldest undelivered event. A consumer is *blocked* on that
event (head-of-line) until it is delivered: retries back off exponentially, capped, with
jitter. Several processes may run this worker: a consumer is leased to one of them at a time.

Each request carries one event, or — for a subscription created with ``batch`` N > 1 — up to
N consecutive wanted events as ``{"events": [...]}``. Successes are recorded in one
transaction for several requests (every ``record_every`` events or ``record_every_s``
seconds, at the end of a batch and before a failure), not one per event: the database write,
not the POST, was what bounded a subscription to ~20 events/s. The cursor then trails what
was sent; a crash between a POST and its write re-sends those events (at least once).

The worker wakes when events are appended (``services.hub``: by this process, or on
PostgreSQL by any process, through ``storage.event_notify``), when a retry is due, and
polls every ``poll_s`` as the fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import random
import socket
import ssl
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import aiomqtt
import httpx
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.orm import Session

from config.settings import Settings
from delivery.pinned import pinned_client
from ingest.backoff import BackoffPolicy
from ingest.egress import EgressPolicy, EgressRefused, Purpose
from storage import delivery as repo
from storage.db import Database
from storage.events import EventRecord, list_events
from storage.grids import subtree_codes
from storage.models import utcnow
from storage.secrets import SecretBox

log = logging.getLogger(__name__)

T = TypeVar("T")
MQTT_TOPIC = "xueliang/events/{type}"
MAX_REDIRECTS = 3
ANSWER_READ_BYTES = 64 * 1024  # a receiver's answer body read to keep its connection open
PRUNE_EVERY_S = 3600.0


@dataclass(frozen=True)
class DeliveryConfig:
    """Knobs of the delivery worker (``delivery.*`` settings when they exist)."""

    timeout_s: float = 10.0  # one webhook request or one MQTT publish, in all
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0  # the longest wait between two attempts at one event
    jitter: float = 0.25
    poll_s: float = 1.0  # how soon events of other processes are seen
    lease_s: float = 30.0  # > timeout_s: a lease always outlives the attempt it covers
    batch: int = 500  # events read per round (at least a subscription's own ``batch``)
    max_parallel: int = 16  # consumers drained at once by this process
    # Successes are written together after this many events or seconds (at most that many
    # events are sent again after a crash).
    record_every: int = 50
    record_every_s: float = 0.25
    log_retention_days: float = 30.0
    mqtt_url: str | None = None

    def __post_init__(self) -> None:
        if self.lease_s <= self.timeout_s + self.connect_timeout_s:
            raise ValueError("delivery lease_s must exceed timeout_s + connect_timeout_s")
        if self.batch < 1 or self.max_parallel < 1 or self.poll_s <= 0:
            raise ValueError("delivery batch, max_parallel and poll_s must be positive")
        if self.record_every < 1 or self.record_every_s < 0:
            raise ValueError("delivery record_every must be positive, record_every_s >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        """Defaults, overridden by a ``delivery`` settings section where it has the field."""
        section = getattr(settings, "delivery", None)
        values: dict[str, Any] = {
            f.name: getattr(section, f.name)
            for f in fields(cls)
            if section is not None and hasattr(section, f.name)
        }
        values["mqtt_url"] = settings.mqtt.url
        return cls(**values)

    def policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            initial_s=self.backoff_initial_s, max_s=self.backoff_max_s, jitter=self.jitter
        )


def default_worker_id(settings: Settings) -> str:
    """Stable across restarts of one process (host and listening address), distinct between
    processes: a restarted process takes its own leases back at once instead of waiting
    for them to expire."""
    return f"{socket.gethostname()}:{settings.server.host}:{settings.server.port}"


def encode(event: EventRecord) -> bytes:
    """The exact bytes delivered (and signed) for one event."""
    return json.dumps(event.as_json(), separators=(",", ":"), ensure_ascii=False).encode()


def encode_batch(events: Sequence[EventRecord]) -> bytes:
    """The exact bytes delivered (and signed) for a batch: ``{"events": [event, ...]}``,
    each event as :func:`encode` writes it alone."""
    body = {"events": [e.as_json() for e in events]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, body: bytes) -> str:
    """The ``X-Xueliang-Signature`` header value: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# Sinks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """The outcome of one send: ``ok``, else an HTTP status and/or an error."""

    ok: bool
    status_code: int | None = None
    error: str | None = None


class Sink(Protocol):
    async def send(self, event: EventRecord, body: bytes) -> Sent: ...


class BatchSink(Protocol):
    async def send_batch(self, events: Sequence[EventRecord], body: bytes) -> Sent: ...


@dataclass(frozen=True)
class WebhookSink:
    """POSTs one event, or a batch of events, to a subscription's URL, signed with its
    secret. With ``egress``, every URL (the redirects' too) is checked against the policy
    right before its request: DNS may have changed since the subscription was created."""

    client: httpx.AsyncClient
    subscription_id: str
    url: str
    secret: str = field(repr=False)
    egress: EgressPolicy | None = None

    async def send(self, event: EventRecord, body: bytes) -> Sent:
        return await self._post(
            body, {"X-Xueliang-Seq": str(event.seq), "X-Xueliang-Event": event.type}
        )

    async def send_batch(self, events: Sequence[EventRecord], body: bytes) -> Sent:
        """One request for several events: ``X-Xueliang-Seq`` is the last seq in the body
        (what the single-event form says too: everything up to it is here)."""
        seqs = {"X-Xueliang-Seq": str(events[-1].seq), "X-Xueliang-Seq-First": str(events[0].seq)}
        return await self._post(body, seqs)

    async def _post(self, body: bytes, extra: dict[str, str]) -> Sent:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "xueliang-webhook/1",
            "X-Xueliang-Signature": signature(self.secret, body),
            **extra,
            "X-Xueliang-Subscription": self.subscription_id,
        }
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            refused = await self._refused(url)
            if refused is not None:
                return Sent(False, error=refused)
            try:
                async with self.client.stream("POST", url, content=body, headers=headers) as r:
                    status, location = r.status_code, r.headers.get("location")
                    await _read_small_answer(r)
            except httpx.TimeoutException:
                return Sent(False, error="timed out")
            except httpx.HTTPError as err:
                return Sent(False, error=f"{type(err).__name__}: {err}"[:500])
            if 200 <= status < 300:
                return Sent(True, status)
            if status not in (307, 308) or not location:
                return Sent(False, status, _status_error(status, location))
            target = urljoin(url, location)
            if not _same_origin(url, target):
                return Sent(False, status, "redirect to another host refused")
            url = target
        return Sent(False, status, f"more than {MAX_REDIRECTS} redirects")

    async def _refused(self, url: str) -> str | None:
        """Why the egress policy refuses ``url`` now, or None."""
        if self.egress is None:
            return None
        try:
            await self.egress.check_url_async("url", url, Purpose.WEBHOOK)
        except EgressRefused as err:
            return f"refused by the egress policy: {err.reason}"
        return None


async def _read_small_answer(response: httpx.Response, limit: int = ANSWER_READ_BYTES) -> None:
    """Read an answer's body to its end, so its connection goes back to the pool: one left
    unread is closed, and the next event pays a new TCP (and TLS) handshake — that halved
    the events per second on loopback. A body larger than ``limit`` is not worth it."""
    if response.is_stream_consumed:  # already read (e.g. a test's MockTransport)
        return
    seen = 0
    # The status is the answer; the body is not.
    with contextlib.suppress(httpx.HTTPError, httpx.StreamError):
        async for chunk in response.aiter_raw():
            seen += len(chunk)
            if seen > limit:
                return


def _status_error(status: int, location: str | None) -> str:
    if 300 <= status < 400:
        return "redirect not followed (only 307/308 to the same host are)"
    return f"HTTP {status}"


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


class MqttSink:
    """Publishes events with QoS 1 on one broker connection, reconnecting after errors."""

    def __init__(self, url: str, client_id: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("mqtt.url must be mqtt://host[:port] or mqtts://host[:port]")
        self._host = parts.hostname
        self._port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self._tls = ssl.create_default_context() if parts.scheme == "mqtts" else None
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._client: aiomqtt.Client | None = None

    def describe(self) -> str:
        return f"{self._host}:{self._port}"

    async def send(self, event: EventRecord, body: bytes) -> Sent:
        topic = MQTT_TOPIC.format(type=event.type)
        try:
            client = await self._connected()
            await client.publish(topic, body, qos=1, timeout=self._timeout_s)
        except (aiomqtt.MqttError, OSError) as err:
            await self.close()
            return Sent(False, error=f"MQTT {self.describe()}: {err}"[:500])
        return Sent(True)

    async def _connected(self) -> aiomqtt.Client:
        if self._client is None:
            client = aiomqtt.Client(
                self._host,
                self._port,
                username=self._username,
                password=self._password,
                identifier=self._client_id,
                timeout=self._timeout_s,
                tls_context=self._tls,
            )
            await client.__aenter__()
            self._client = client
            log.info("connected to MQTT broker %s", self.describe())
        return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)


# The worker ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where one consumer's events go, which ones it wants, and how many per request."""

    sink: Sink
    types: frozenset[str] | None = None
    grids: frozenset[str] | None = None
    batch_sink: BatchSink | None = None  # set for a subscription that takes batches
    batch: int = 1  # events per request (> 1 only with ``batch_sink``)

    def wants(self, event: EventRecord) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        return self.grids is None or event.grid_code in self.grids


@dataclass(frozen=True)
class Plan:
    """What one consumer gets next: its cursor state, target and pending events."""

    failures: int
    events: list[EventRecord]
    target: Target
    full: bool  # as many events as were asked for: more may follow at once

    def requests(self) -> list[list[EventRecord]]:
        """The wanted events in order, cut into the requests that carry them. A failed
        request is planned again from the same cursor, so it is retried whole."""
        wanted = [e for e in self.events if self.target.wants(e)]
        n = self.target.batch
        return [wanted[i : i + n] for i in range(0, len(wanted), n)]


class _Unrecorded:
    """Successes sent but not yet written: recorded together every ``every`` events or
    ``every_s`` seconds (the caller also writes them at the end of a batch and before a
    failure). At least once still holds: a crash before the write re-sends them."""

    def __init__(self, every: int, every_s: float) -> None:
        self._every = every
        self._every_s = every_s
        self._attempts: list[repo.Attempt] = []
        self._events = 0
        self._since = 0.0

    def add(self, attempt: repo.Attempt, events: int) -> None:
        if not self._attempts:
            self._since = time.monotonic()
        self._attempts.append(attempt)
        self._events += events

    def due(self) -> bool:
        if not self._attempts:
            return False
        return self._events >= self._every or time.monotonic() - self._since >= self._every_s

    def take(self) -> list[repo.Attempt]:
        taken, self._attempts, self._events = self._attempts, [], 0
        return taken


class LeaseLost(Exception):
    """Another worker took this consumer over (this one stalled past its lease)."""


class _Lease:
    """This worker's view of its lease on one consumer (the database holds the truth)."""

    def __init__(self, consumer: str, lease_s: float) -> None:
        self.consumer = consumer
        self.lease_s = lease_s
        self._until = 0.0

    def extend(self) -> tuple[datetime, float]:
        """(now, lease_s) for a write that extends the lease; assumes the write succeeds
        (a fenced write that fails raises :class:`LeaseLost` instead)."""
        self._until = time.monotonic() + self.lease_s
        return utcnow(), self.lease_s

    def extended_until(self) -> datetime:
        """The new expiry for a write that extends the lease (same assumption)."""
        now, lease_s = self.extend()
        return now + timedelta(seconds=lease_s)

    def remaining(self) -> float:
        return self._until - time.monotonic()


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def _attempts_counter(registry: CollectorRegistry) -> Counter:
    """One counter per registry (several workers may share one in tests)."""
    key = registry
    if key not in _metrics:
        _metrics[key] = Counter(
            "xueliang_delivery_attempts",
            "Event delivery attempts by sink and outcome.",
            ["sink", "outcome"],
            registry=registry,
        )
    return _metrics[key]


class EventDoorbell(Protocol):
    """Rings when this process appends events (the runtime's ``EventHub``)."""

    async def wait(self, timeout: float) -> None: ...


class DeliveryServices(Protocol):
    """What delivery needs of the process's adapters (``runtime.services.Services``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def db(self) -> Database: ...
    @property
    def secrets(self) -> SecretBox: ...
    @property
    def hub(self) -> EventDoorbell: ...
    @property
    def registry(self) -> CollectorRegistry: ...


class DeliveryWorker:
    """Delivers appended events to subscriptions and MQTT; started by the app's lifespan."""

    def __init__(
        self,
        services: DeliveryServices,
        config: DeliveryConfig | None = None,
        *,
        worker_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.services = services
        self.config = config or DeliveryConfig.from_settings(services.settings)
        self.worker_id = worker_id or default_worker_id(services.settings)
        self._policy = self.config.policy()
        self._rng = rng or random.Random()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._kick = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._mqtt: MqttSink | None = None
        self._next_prune = 0.0
        self._attempts = _attempts_counter(services.registry)
        self._round_failures = 0
        self._egress = EgressPolicy.from_settings(services.settings)

    async def run(self) -> None:
        """Deliver until cancelled."""
        # Synchronous on purpose: this runs in the task's first step, before the server
        # accepts requests, so the MQTT cursor exists before the first event it must carry.
        self._prepare()
        timeout = httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s)
        async with pinned_client(self._egress, timeout) as client:
            self._client = client
            try:
                while True:
                    next_retry = await self._round()
                    await self._sleep(next_retry)
            finally:
                await self._stop()

    def _prepare(self) -> None:
        url = self.config.mqtt_url
        if url is None:
            return
        try:
            sink = MqttSink(url, f"xueliang-{self.worker_id}"[:64], self.config.timeout_s)
            with self.services.db.session() as session:
                repo.ensure_cursor(session, repo.MQTT_CONSUMER)
        except Exception as err:  # webhooks must go on without MQTT
            log.error("events are NOT published to MQTT: %s", err)
            return
        self._mqtt = sink
        log.info("publishing events to MQTT broker %s", sink.describe())

    async def _round(self) -> datetime | None:
        """Start draining every due consumer; returns the next retry time, if any."""
        try:
            due, next_retry = await asyncio.to_thread(self._due)
            await self._maybe_prune()
        except Exception as err:  # the database may be down: keep the loop alive and retry
            self._round_failures += 1
            if self._round_failures == 1:
                log.exception(
                    "event delivery paused: %s; retrying every %.1fs", err, self.config.poll_s
                )
            return None
        if self._round_failures:
            log.info("event delivery resumed after %d failed rounds", self._round_failures)
            self._round_failures = 0
        for consumer in due:
            if consumer in self._running or len(self._running) >= self.config.max_parallel:
                continue
            task = asyncio.create_task(self._drain(consumer), name=f"deliver:{consumer}")
            self._running[consumer] = task
            task.add_done_callback(functools.partial(self._finished, consumer))
        return next_retry

    def _due(self) -> tuple[list[str], datetime | None]:
        now = utcnow()
        with self.services.db.session() as session:
            due = repo.due_consumers(
                session, now, self.worker_id, include_mqtt=self._mqtt is not None
            )
            return due, repo.next_retry_at(session, now)

    async def _maybe_prune(self) -> None:
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
        cutoff = utcnow() - timedelta(days=self.config.log_retention_days)
        pruned = await self._db(lambda s: repo.prune_log(s, cutoff))
        if pruned:
            log.info("pruned %d delivery-log rows older than %s", pruned, cutoff)

    def _finished(self, consumer: str, task: asyncio.Task[None]) -> None:
        self._running.pop(consumer, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery to %s failed", consumer, exc_info=task.exception())
        self._kick.set()

    async def _sleep(self, next_retry: datetime | None) -> None:
        timeout = self.config.poll_s
        if next_retry is not None:
            timeout = min(timeout, max((next_retry - utcnow()).total_seconds(), 0.01))
        kicked = asyncio.create_task(self._kick.wait())
        rung = asyncio.create_task(self.services.hub.wait(timeout))
        try:
            await asyncio.wait({kicked, rung}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            kicked.cancel()
            rung.cancel()
            self._kick.clear()

    async def _stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._mqtt is not None:
            await self._mqtt.close()

    async def _db(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a transaction on a thread (the database API is blocking)."""

        def call() -> T:
            with self.services.db.session() as session:
                return fn(session)

        return await asyncio.to_thread(call)

    # One consumer ---------------------------------------------------------------------------

    async def _drain(self, consumer: str) -> None:
        """Deliver a consumer's pending events in order until done, failed or lease lost."""
        owner = self.worker_id
        lease = _Lease(consumer, self.config.lease_s)
        if not await self._db(lambda s: repo.claim(s, consumer, owner, *lease.extend())):
            return
        try:
            while await self._drain_batch(lease):
                pass
        except LeaseLost:
            log.warning("lost the delivery lease of %s to another worker", consumer)
        except Exception as err:  # not the receiver's fault: wait, don't spin on it
            defer_s = self.config.backoff_max_s
            log.exception("cannot deliver to %s; retrying in %.0fs", consumer, defer_s)
            retry_at = utcnow() + timedelta(seconds=defer_s)
            error = f"internal error: {type(err).__name__}: {err}"
            with contextlib.suppress(Exception):
                await self._db(lambda s: repo.defer(s, consumer, owner, retry_at, error))
        finally:
            with contextlib.suppress(Exception):
                await self._db(lambda s: repo.release(s, consumer, owner))

    async def _drain_batch(self, lease: _Lease) -> bool:
        """One batch; True when there may be more to deliver right away."""
        consumer = lease.consumer
        plan = await self._db(lambda s: self._plan(s, consumer))
        if plan is None or not plan.events:
            return False
        unrecorded = _Unrecorded(self.config.record_every, self.config.record_every_s)
        attempt = plan.failures + 1
        for events in plan.requests():
            sent, record = await self._send(lease, plan.target, events, attempt)
            if not sent.ok:
                await self._record(lease, unrecorded.take())  # the cursor, then the failure
                await self._failed(lease, record, len(events))
                return False
            unrecorded.add(record, len(events))
            attempt = 1
            if unrecorded.due():
                await self._record(lease, unrecorded.take())
        last = plan.events[-1]
        # One write for the rest, past trailing events nobody here wants.
        skip = None if plan.target.wants(last) else last.seq
        await self._record(lease, unrecorded.take(), skip_to=skip)
        return plan.full

    def _plan(self, session: Session, consumer: str) -> Plan | None:
        cursor = repo.get_cursor(session, consumer)
        if cursor is None or (cursor.next_attempt_at and cursor.next_attempt_at > utcnow()):
            return None  # deleted, or backing off
        target = self._target(session, consumer)
        if target is None:
            return None
        limit = max(self.config.batch, target.batch)
        events = list_events(session, after=cursor.last_delivered_seq, limit=limit)
        return Plan(cursor.failures, events, target, full=len(events) == limit)

    def _target(self, session: Session, consumer: str) -> Target | None:
        if consumer == repo.MQTT_CONSUMER:
            return None if self._mqtt is None else Target(self._mqtt)
        sub = repo.get_subscription(session, consumer)
        if sub is None or self._client is None:
            return None
        grids = None
        if sub.grid_codes is not None:
            grids = frozenset(c for g in sub.grid_codes for c in subtree_codes(session, g))
        secret = self.services.secrets.decrypt(sub.secret_enc)
        sink = WebhookSink(self._client, sub.id, sub.url, secret, self._egress)
        types = frozenset(sub.types) if sub.types is not None else None
        if sub.batch > 1:
            return Target(sink, types, grids, batch_sink=sink, batch=sub.batch)
        return Target(sink, types, grids)

    async def _send(
        self, lease: _Lease, target: Target, events: list[EventRecord], attempt: int
    ) -> tuple[Sent, repo.Attempt]:
        """One request, once: its outcome and the attempt to record (under the last seq)."""
        if lease.remaining() < self.config.timeout_s + self.config.connect_timeout_s + 1:
            # The lease must outlive the attempt; writes extend it, so this is rare. Writes
            # come every record_every_s at most while requests succeed, and a failure is
            # written at once, so the lease also outlives every unwritten success.
            consumer, owner = lease.consumer, self.worker_id
            await self._fenced(lambda s: repo.renew(s, consumer, owner, *lease.extend()))
        at, started = utcnow(), time.perf_counter()
        if target.batch_sink is None:
            sent = await target.sink.send(events[0], encode(events[0]))
        else:
            sent = await target.batch_sink.send_batch(events, encode_batch(events))
        duration_ms = (time.perf_counter() - started) * 1000
        kind = "mqtt" if lease.consumer == repo.MQTT_CONSUMER else "webhook"
        self._attempts.labels(kind, "ok" if sent.ok else "failed").inc()
        seq = events[-1].seq
        return sent, repo.Attempt(seq, attempt, at, duration_ms, sent.status_code, sent.error)

    async def _record(
        self, lease: _Lease, successes: list[repo.Attempt], skip_to: int | None = None
    ) -> None:
        """Write delivered attempts (cursor to the last) and, past them, events not wanted."""
        if not successes and skip_to is None:
            return
        consumer, owner = lease.consumer, self.worker_id
        until = lease.extended_until()

        def write(s: Session) -> bool:
            if successes and not repo.record_successes(s, consumer, owner, successes, until):
                return False
            return skip_to is None or repo.skip_to(s, consumer, owner, skip_to, until)

        await self._fenced(write)

    async def _failed(self, lease: _Lease, record: repo.Attempt, events: int) -> None:
        """Record a failed request and schedule the retry of the same events."""
        consumer, owner = lease.consumer, self.worker_id
        policy = self._policy
        delay = policy.base_delay(record.attempt) * (1 - policy.jitter * self._rng.random())
        retry_at = utcnow() + timedelta(seconds=delay)
        await self._fenced(lambda s: repo.record_failure(s, consumer, owner, record, retry_at))
        log.warning(
            "delivery of event %d%s to %s failed (attempt %d): %s; retrying in %.1fs",
            record.seq,
            f" (the last of {events})" if events > 1 else "",
            consumer,
            record.attempt,
            record.error or f"HTTP {record.status_code}",
            delay,
        )

    async def _fenced(self, fn: Callable[[Session], bool]) -> None:
        """A cursor write that only applies while this worker holds the lease."""
        if not await self._db(fn):
            raise LeaseLost
