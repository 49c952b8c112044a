"""Webhook delivery checks the egress policy before every request, not only when the
subscription was created: a webhook to ``localhost`` created while loopback was allowed is
refused once the allow list no longer says so (DNS, or the settings, changed), recorded as
a failed attempt with the reason, and nothing reaches the receiver. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from config.settings import Settings
from delivery.worker import DeliveryConfig, DeliveryWorker
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
