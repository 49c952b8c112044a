"""Delivering the event log to the grid platform: the outbox worker, webhooks signed with
HMAC-SHA256 (at least once, in ``seq`` order per subscription) and MQTT.

Takes the process's adapters through a small protocol (``DeliveryServices``), so it does
not depend on the runtime that builds it. May import: ``config``, ``storage``, ``ingest``
(the backoff policy).
"""
