"""Event delivery to the grid platform: webhooks and MQTT (placeholder)."""

from __future__ import annotations

from api.services import Services


class DeliveryWorker:
    """Delivers appended events to subscriptions; started by the app's lifespan."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def run(self) -> None:
        return None
