"""Webhook delivery checks the egress policy before every request, not only when the
subscription was created: a webhook to ``localhost`` created while loopback was allowed is
refused once the allow list no longer says so (DNS, or the settings, changed), recorded as
a failed attempt with the reason, and nothing reaches the receiver; and the connection
goes to the address the check judged, so DNS rebinding cannot reach this host. SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable

import pytest

from config.settings import Settings
from delivery.worker import DeliveryConfig, DeliveryWorker
from ingest import egress
from runtime.services import Services
from storage import delivery as repo
from storage.grid_models import DeliveryAttempt
from tests.integration.test_delivery import Receiver, append, async_wait_for, subscribe

FAST = DeliveryConfig(
    timeout_s=2.0, connect_timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=1.0, poll_s=0.2
)


def _attempts(services: Services, consumer: str) -> list[DeliveryAttempt]:
    with services.db.session() as session:
        return repo.list_deliveries(session, consumer)


async def _run(worker: DeliveryWorker, until: Callable[[], bool], what: str) -> None:
    task = asyncio.create_task(worker.run())
    try:
        await async_wait_for(until, 15, what)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_webhook_refused_at_delivery_is_a_failed_attempt_with_the_reason(
    make_settings: Callable[..., Settings], db_url: str
) -> None:
    allowed = make_settings(database={"url": db_url}, egress={"allow": ["127.0.0.0/8"]})
    strict = make_settings(database={"url": db_url})  # the default policy
    receiver = Receiver()
    receiver.start()
    services = Services.from_settings(strict)
    services.start()
    try:
        services.hub.bind(asyncio.get_running_loop())
        # Created while loopback was allowed (POST /subscriptions would refuse it now).
        hook = subscribe(services, f"http://localhost:{receiver.port}/hook")
        seq = await asyncio.to_thread(append, services, "camera.online", {"n": 1}, None)

        worker = DeliveryWorker(services, FAST, worker_id="w-strict")
        await _run(worker, lambda: len(_attempts(services, hook)) >= 2, "refused attempts")
        refused = _attempts(services, hook)
        assert {a.seq for a in refused} == {seq}
        assert all(a.status_code is None for a in refused)
        assert refused[0].error == (
            "refused by the egress policy: host localhost resolves to 127.0.0.1, a loopback "
            "address (this host); allow it with XUELIANG_EGRESS__ALLOW=127.0.0.1/32"
        )
        assert [a.attempt for a in reversed(refused)][:2] == [1, 2]  # backing off, retried
        assert receiver.delivered == [] and receiver.refused == 0  # nothing left this host

        # A process with loopback allowed delivers it: the refusal was the policy's.
        opened = Services.from_settings(allowed)
        try:
            opened.hub.bind(asyncio.get_running_loop())
            worker = DeliveryWorker(opened, FAST, worker_id="w-allowed")
            await _run(worker, lambda: receiver.seqs() == [seq], "delivery once allowed")
        finally:
            opened.close()
    finally:
        receiver.stop()
        services.close()


def _resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> None:
    """The policy's DNS answers ``answers`` for those names (what a hostile DNS server with
    a zero TTL answers the check); the system resolver, which httpx would use, does not."""
    real = egress._getaddrinfo

    def lookup(host: str) -> list[egress.IPAddress]:
        if host in answers:
            return [ipaddress.ip_address(answers[host])]
        return real(host)

    monkeypatch.setattr(egress, "_getaddrinfo", lookup)


async def test_a_webhook_connects_where_the_policy_looked(
    make_settings: Callable[..., Settings], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name only the policy's lookup knows is delivered to the address it judged: the
    connection is pinned to the check's answer, not resolved again."""
    _resolving(monkeypatch, {"hooks.rebind.test": "127.0.0.1"})
    receiver = Receiver()
    receiver.start()
    services = Services.from_settings(
        make_settings(database={"url": db_url}, egress={"allow": ["127.0.0.0/8"]})
    )
    services.start()
    try:
        services.hub.bind(asyncio.get_running_loop())
        subscribe(services, f"http://hooks.rebind.test:{receiver.port}/hook")
        seq = await asyncio.to_thread(append, services, "camera.online", {"n": 1}, None)
        worker = DeliveryWorker(services, FAST, worker_id="w-pinned")
        await _run(worker, lambda: receiver.seqs() == [seq], "delivery to the judged address")
    finally:
        receiver.stop()
        services.close()


async def test_dns_rebinding_cannot_reach_this_host(
    make_settings: Callable[..., Settings], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is told ``localhost`` is 192.0.2.10 (allowed, and unreachable), the system
    resolver says 127.0.0.1 (refused): unpinned, httpx connected to this host's receiver."""
    _resolving(monkeypatch, {"localhost": "192.0.2.10"})
    receiver = Receiver()
    receiver.start()
    services = Services.from_settings(make_settings(database={"url": db_url}))
    services.start()
    try:
        services.hub.bind(asyncio.get_running_loop())
        hook = subscribe(services, f"http://localhost:{receiver.port}/hook")
        await asyncio.to_thread(append, services, "camera.online", {"n": 1}, None)
        worker = DeliveryWorker(services, FAST, worker_id="w-rebind")
        await _run(worker, lambda: len(_attempts(services, hook)) >= 2, "failed attempts")
        errors = {a.error for a in _attempts(services, hook)}
        # 192.0.2.10 (TEST-NET) does not answer: the connect timed out, or was refused.
        assert all(e == "timed out" or str(e).startswith("Connect") for e in errors), errors
        assert receiver.delivered == [] and receiver.refused == 0  # nothing reached this host
    finally:
        receiver.stop()
        services.close()
