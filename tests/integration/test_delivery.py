"""Event delivery against real peers: a webhook receiver on loopback and Mosquitto.

- The receiver is down (port closed), then answers 500, then recovers: every event arrives,
  in seq order, correctly signed, and retries back off up to the configured cap.
- The service, run as a real process, is SIGKILLed mid-delivery and restarted: the receiver
  still gets every event in order (at least once: what was sent since the last recorded
  success — at most ``record_every`` events — may come again).
- MQTT subscribers get the same events; two workers never deliver one subscription at once.

The issue's outage is two minutes: ``XL_TEST_OUTAGE_S=120`` runs it for real (CI uses 12 s;
what matters is that the backoff cap, not the outage, bounds the recovery time).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from config.settings import Settings
from delivery.worker import DeliveryConfig, DeliveryWorker, WebhookSink
from runtime.services import Services
from storage import delivery as repo
from storage.db import Database
from storage.events import EventRecord, append_event, last_seq, list_events
from storage.grids import GridSpec, put_grid
from storage.models import utcnow
from tests.conftest import REPO, free_port
from tests.conftest import wait_for as shared_wait_for

SECRET = "whsec-test-0123456789abcdef"
TOKEN = "xl_test_delivery_admin_token_000001"
MQTT_URL = "mqtt://127.0.0.1:1883"
OUTAGE_S = float(os.environ.get("XL_TEST_OUTAGE_S", "12"))
ERRORS_S = 4.0
FAST = DeliveryConfig(
    timeout_s=2.0,
    connect_timeout_s=1.0,
    backoff_initial_s=0.2,
    backoff_max_s=2.0,
    poll_s=0.25,
    lease_s=10.0,
    mqtt_url=MQTT_URL,
)


# Peers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    path: str
    seq_header: int
    body: bytes
    signature: str

    @property
    def complete(self) -> bool:
        try:
            json.loads(self.body)
        except ValueError:
            return False
        return True

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def signed_with(self, secret: str) -> bool:
        mac = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.signature, f"sha256={mac}")


class Receiver:
    """A webhook receiver on a loopback port: closed until started, then 500s or 200s."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.failing = False
        self.delay_s = delay_s
        self.delivered: list[Delivered] = []
        self.refused = 0
        self.inflight: dict[str, int] = {}
        self.max_inflight = 0
        self.first_ok_at: float | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.handle(self.path, self.headers, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def handle(self, path: str, headers: Any, body: bytes) -> int:
        with self._lock:
            self.inflight[path] = self.inflight.get(path, 0) + 1
            self.max_inflight = max(self.max_inflight, self.inflight[path])
        try:
            time.sleep(self.delay_s)
            with self._lock:
                if self.failing:
                    self.refused += 1
                    return 500
                got = Delivered(
                    path, int(headers["X-Xueliang-Seq"]), body, headers["X-Xueliang-Signature"]
                )
                self.delivered.append(got)
                self.first_ok_at = self.first_ok_at or time.monotonic()
                return 200
        finally:
            with self._lock:
                self.inflight[path] -= 1

    def seqs(self, path: str = "/hook") -> list[int]:
        # A request cut short by the sender's SIGKILL arrives with an empty or partial body;
        # it was never a delivery (the sender retries it after its restart).
        with self._lock:
            return [d.event["seq"] for d in self.delivered if d.path == path and d.complete]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class MqttListener:
    """An aiomqtt subscriber on Mosquitto, in a thread, keeping this run's events."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.events: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> MqttListener:
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe on the MQTT broker at 127.0.0.1:1883"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    def seqs(self) -> list[int]:
        return [e["seq"] for e in list(self.events)]

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"test-{self.run}") as client:
                await client.subscribe("xueliang/events/#", qos=1)
                self._ready.set()
                async for message in client.messages:
                    event = json.loads(str(message.payload, "utf-8"))
                    if event["data"].get("run") == self.run:
                        self.topics.append(str(message.topic))
                        self.events.append(event)

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    return shared_wait_for(check, timeout, what, every=0.1)


async def async_wait_for(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def assert_in_order_and_complete(got: list[int], expected: list[int], max_repeats: int) -> None:
    """Every expected seq, first delivered in ascending order; at most ``max_repeats``
    deliveries repeat one already made (at least once: after a crash the sender replays
    what it had not recorded yet, in order)."""
    assert sorted(set(got)) == expected, f"missing: {sorted(set(expected) - set(got))[:20]}"
    firsts = list(dict.fromkeys(got))
    assert firsts == sorted(firsts), f"out of order: {got}"
    assert len(got) - len(firsts) <= max_repeats, f"repeated: {len(got) - len(firsts)}"


# In-process worker ---------------------------------------------------------------------------


@pytest.fixture
def services(make_settings: Callable[..., Settings], db_url: str) -> Iterator[Services]:
    # The receivers listen on loopback, which the egress policy refuses for webhooks.
    settings = make_settings(database={"url": db_url}, egress={"allow": ["127.0.0.0/8"]})
    svc = Services.from_settings(settings)
    svc.start()
    yield svc
    svc.close()


def subscribe(services: Services, url: str, **filters: Any) -> str:
    with services.db.session() as session:
        new = repo.NewSubscription(
            url=url,
            secret_enc=services.secrets.encrypt(SECRET),
            types=filters.get("types"),
            grid_codes=filters.get("grid_codes"),
            created_by="test",
        )
        return repo.create_subscription(session, new).id


def append(services: Services, type_: str, data: dict[str, Any], grid: str | None) -> int:
    """Append one event; its seq, final once committed (PostgreSQL: migration 0016)."""
    with services.tx() as session:
        append_event(session, type_, data, grid)
    with services.db.session() as session:
        return last_seq(session)


@pytest.mark.slow
@pytest.mark.slow
async def test_down_then_failing_then_back_every_event_arrives_in_order_signed(
    services: Services,
) -> None:
    services.hub.bind(asyncio.get_running_loop())
    run = uuid.uuid4().hex
    with services.db.session() as session:
        for spec in (GridSpec("A", "A", "county"), GridSpec("A1", "A1", "grid", "A")):
            put_grid(session, spec)
        put_grid(session, GridSpec("B", "B", "county"))
    receiver = Receiver()  # not started: connections are refused
    everything = subscribe(services, receiver.url + "/hook")
    filtered = subscribe(
        services, receiver.url + "/a", types=["incident.created"], grid_codes=["A"]
    )
    worker = DeliveryWorker(services, FAST, worker_id="w-outage")
    shapes: list[tuple[str, str | None]] = [
        ("incident.created", "A1"),
        ("camera.online", "A"),
        ("incident.created", "B"),
    ]
    shapes += [("incident.created", None), ("incident.created", "A")]
    with MqttListener(run) as mqtt:
        task = asyncio.create_task(worker.run())
        # MQTT starts at the end of the log when first configured (the service creates that
        # cursor before it serves requests); events from here on must all be published.
        await async_wait_for(lambda: _cursor_exists(services, repo.MQTT_CONSUMER), 5, "MQTT")
        expected, wanted = [], []
        for i in range(40):  # appended across the outage
            type_, grid = shapes[i % len(shapes)]
            seq = await asyncio.to_thread(append, services, type_, {"run": run, "i": i}, grid)
            expected.append(seq)
            if type_ == "incident.created" and grid in ("A", "A1"):
                wanted.append(seq)
            await asyncio.sleep(OUTAGE_S / 40)
        receiver.failing = True
        receiver.start()
        await asyncio.sleep(ERRORS_S)
        receiver.failing = False
        recovered_at = time.monotonic()
        try:
            await async_wait_for(
                lambda: len(receiver.seqs()) >= len(expected), 60, "every event after recovery"
            )
            await async_wait_for(lambda: len(receiver.seqs("/a")) >= len(wanted), 10, "/a")
            # The filtered cursor moves past the events it skips at the log's end in a round
            # after its last delivery (a moment later with three test processes).
            await async_wait_for(
                lambda: _cursor_at(services, filtered) == expected[-1], 10, "/a's cursor"
            )
            await async_wait_for(
                lambda: len(mqtt.seqs()) >= len(expected),
                10,
                f"MQTT (got {mqtt.seqs()} of {expected})",
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            receiver.stop()

    recovery_s = (receiver.first_ok_at or 0) - recovered_at
    print(
        f"\nfirst delivery {recovery_s:.2f} s after the receiver recovered "
        f"(cap {FAST.backoff_max_s} s); {receiver.refused} attempts answered 500"
    )
    assert receiver.seqs() == expected  # in order, none repeated (no crash here)
    assert receiver.seqs("/a") == wanted
    assert all(d.signed_with(SECRET) for d in receiver.delivered)
    assert all(d.seq_header == d.event["seq"] for d in receiver.delivered)
    assert receiver.refused >= 1
    assert mqtt.seqs() == expected
    assert mqtt.topics[0] == f"xueliang/events/{shapes[0][0]}"
    _check_log(services, everything, expected[0])
    with services.db.session() as session:
        cursor = repo.get_cursor(session, filtered)
        assert cursor is not None and cursor.last_delivered_seq == expected[-1]


def _cursor_at(services: Services, consumer: str) -> int | None:
    with services.db.session() as session:
        cursor = repo.get_cursor(session, consumer)
        return None if cursor is None else cursor.last_delivered_seq


def _cursor_exists(services: Services, consumer: str) -> bool:
    with services.db.session() as session:
        return repo.get_cursor(session, consumer) is not None


def _check_log(services: Services, subscription: str, head: int) -> None:
    """The head event's attempts: refused connections, then 500s, then one 200 — spaced
    by a backoff that grows but never past the cap."""
    with services.db.session() as session:
        log = list(reversed(repo.list_deliveries(session, subscription, limit=1000)))
    head_log = [a for a in log if a.seq == head]
    assert [a.attempt for a in head_log] == list(range(1, len(head_log) + 1))
    assert head_log[0].status_code is None and head_log[0].error
    assert any(a.status_code == 500 for a in head_log)
    assert head_log[-1].status_code == 200 and head_log[-1].error is None
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(head_log)]
    slack = FAST.timeout_s + 3.0  # an attempt's own duration and a loaded machine's delay
    assert max(gaps) <= FAST.backoff_max_s + slack, gaps
    assert all(a.status_code == 200 for a in log if a.seq != head and a.error is None)


async def test_two_workers_never_deliver_one_subscription_at_once(services: Services) -> None:
    services.hub.bind(asyncio.get_running_loop())
    receiver = Receiver(delay_s=0.005)
    receiver.start()
    subscribe(services, receiver.url + "/hook")
    config = DeliveryConfig(poll_s=0.1, batch=7, timeout_s=2.0, connect_timeout_s=1.0, lease_s=10)
    workers = [DeliveryWorker(services, config, worker_id=f"w{i}") for i in range(2)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        expected = []
        for i in range(120):
            expected.append(
                await asyncio.to_thread(append, services, "camera.online", {"i": i}, None)
            )
        await async_wait_for(lambda: len(receiver.seqs()) >= len(expected), 60, "all events")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        receiver.stop()
    assert receiver.seqs() == expected
    assert receiver.max_inflight == 1


async def test_a_consumer_that_cannot_be_served_waits_instead_of_spinning(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    services.hub.bind(asyncio.get_running_loop())
    with services.db.session() as session:
        new = repo.NewSubscription("http://127.0.0.1:9/", "not-a-fernet-token", None, None, "t")
        sub = repo.create_subscription(session, new).id
    await asyncio.to_thread(append, services, "camera.online", {}, None)
    worker = DeliveryWorker(services, FAST, worker_id="w-defer")
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(1.5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    failures = [r for r in caplog.records if "cannot deliver" in r.getMessage()]
    assert len(failures) == 1
    with services.db.session() as session:
        cursor = repo.get_cursor(session, sub)
        assert cursor is not None and cursor.last_delivered_seq == 0
        assert cursor.last_error is not None and "internal error" in cursor.last_error
        assert cursor.next_attempt_at is not None and cursor.next_attempt_at > utcnow()
        assert cursor.lease_owner is None  # released for whoever retries


def test_a_lease_is_exclusive_until_it_expires_and_fences_a_stale_owner(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()
    now = utcnow()
    with db.session() as session:
        sub = repo.create_subscription(
            session, repo.NewSubscription("http://127.0.0.1:9/", "x", None, None, "t")
        )
        append_event(session, "camera.online", {})
        append_event(session, "camera.online", {})
    with db.session() as session:
        assert repo.due_consumers(session, now, "w1") == [sub.id]
        assert repo.claim(session, sub.id, "w1", now, 30)
        assert not repo.claim(session, sub.id, "w2", now, 30)
        assert repo.due_consumers(session, now, "w2") == []
        assert repo.claim(session, sub.id, "w1", now, 30)  # its own: e.g. after a restart
    later = now + timedelta(seconds=31)
    attempt = repo.Attempt(seq=1, attempt=1, at=later, duration_ms=1.0, status_code=200)
    with db.session() as session:
        assert repo.claim(session, sub.id, "w2", later, 30)  # w1 stalled past its lease
        assert not repo.renew(session, sub.id, "w1", later, 30)
        until = later + timedelta(seconds=30)
        assert not repo.record_success(session, sub.id, "w1", attempt, until)
        assert repo.record_success(session, sub.id, "w2", attempt, until)
        assert not repo.record_success(session, sub.id, "w2", attempt, until)  # no repeat
        assert not repo.skip_to(session, sub.id, "w1", 2, until)
        cursor = repo.get_cursor(session, sub.id)
        assert cursor is not None and cursor.last_delivered_seq == 1
        repo.release(session, sub.id, "w2")
        assert repo.claim(session, sub.id, "w1", later, 30)
    db.dispose()


@pytest.mark.parametrize(
    ("location", "final", "error"),
    [
        ("/moved", 200, None),
        ("http://127.0.0.2:8080/moved", 307, "redirect to another host refused"),
        ("https://127.0.0.1:8080/moved", 307, "redirect to another host refused"),
    ],
)
async def test_webhooks_follow_307_only_to_the_same_host(
    location: str, final: int, error: str | None
) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/hook":
            return httpx.Response(307, headers={"Location": location})
        return httpx.Response(200)

    event = EventRecord(seq=5, type="camera.online", at=utcnow(), data={})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sink = WebhookSink(client, "sub_1", "http://127.0.0.1:8080/hook", SECRET)
        sent = await sink.send(event, b"{}")
        found = await WebhookSink(client, "sub_1", "http://127.0.0.1:8080/found", SECRET).send(
            event, b"{}"
        )
    assert (sent.status_code, sent.error) == (final, error)
    assert sent.ok is (error is None)
    assert found.ok
    assert len(seen) == (3 if error is None else 2)


# The real service, killed and restarted -------------------------------------------------------


class Service:
    """``python -m cli.main serve`` on a fixed port, started and SIGKILLed by the test."""

    def __init__(self, tmp: Path, db_url: str, role: str = "all", name: str = "service") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.role = role
        self.data_dir = tmp / ("data" if name == "service" else f"data-{name}")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("XUELIANG_")} | {
            "XUELIANG_DATA_DIR": str(self.data_dir),
            "XUELIANG_DATABASE__URL": db_url,
            "XUELIANG_AUTH__BOOTSTRAP_TOKEN": TOKEN,
            "XUELIANG_MQTT__URL": MQTT_URL,
            "XUELIANG_EGRESS__ALLOW": "127.0.0.0/8",  # the receiver listens on loopback
        }
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "cli.main", "serve", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*command, "--role", self.role],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, 60, f"the service to answer (log: {self.log})")

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.mark.slow
def test_a_service_killed_mid_delivery_and_restarted_loses_nothing(
    tmp_path: Path, db_url: str
) -> None:
    run = uuid.uuid4().hex
    receiver = Receiver(delay_s=0.02)
    receiver.start()
    service = Service(tmp_path, db_url)
    events = 200
    try:
        service.start()
        r = httpx.post(
            f"{service.url}/api/v1/subscriptions",
            # Only the test's own events: the service publishes others (audit.anchor).
            json={"url": receiver.url + "/hook", "secret": SECRET, "types": ["camera.online"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 201, r.text
        with MqttListener(run) as mqtt:
            expected = _append_elsewhere(db_url, run, events)  # another process's events
            wait_for(lambda: len(receiver.seqs()) >= events // 5, 60, "deliveries to start")
            service.kill()
            at_kill = len(receiver.seqs())
            service.start()
            wait_for(lambda: set(receiver.seqs()) >= set(expected), 120, "every event")
            wait_for(lambda: set(mqtt.seqs()) >= set(expected), 30, "every event over MQTT")
        print(f"\nkilled after {at_kill} of {events} deliveries; {len(receiver.seqs())} received")
        assert at_kill < events, "the kill came after the last delivery: nothing was tested"
        # Successes are recorded every record_every events (or sooner): those, and the one
        # in flight, may be delivered again after the SIGKILL.
        replay = DeliveryConfig().record_every + 1
        assert_in_order_and_complete(receiver.seqs(), expected, max_repeats=replay)
        assert_in_order_and_complete(mqtt.seqs(), expected, max_repeats=replay)
        assert all(d.signed_with(SECRET) for d in receiver.delivered if d.complete)
    finally:
        service.stop()
        receiver.stop()


def _append_elsewhere(db_url: str, run: str, count: int) -> list[int]:
    db = Database(db_url)
    seqs = []
    try:
        seen = 0
        for start in range(0, count, 50):
            with db.session() as session:
                for i in range(start, min(start + 50, count)):
                    append_event(session, "camera.online", {"run": run, "i": i})
            with db.session() as session:  # seqs are final once committed
                mine = [e for e in list_events(session, after=seen, limit=100_000)]
                seqs += [e.seq for e in mine if e.data.get("run") == run]
                seen = max([seen, *(e.seq for e in mine)])
    finally:
        db.dispose()
    return seqs
