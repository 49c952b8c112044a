from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from config.settings import Settings
from runtime.services import Services
from storage.tokens import ROLES, create_token

BOOTSTRAP = "xl_bootstrap_test_token_0123456789"
#: What tests with webhook receivers on this machine let through the egress policy.
LOOPBACK = "127.0.0.0/8"


@dataclass
class Api:
    client: TestClient
    services: Services
    tokens: dict[str, str]

    def as_role(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def api_settings(make_settings: Callable[..., Settings], db_url: str) -> Settings:
    # Webhook receivers and cameras of these tests run on this machine: loopback webhooks
    # are refused by the egress policy unless allowed.
    return make_settings(
        database={"url": db_url},
        auth={"bootstrap_token": BOOTSTRAP},
        egress={"allow": [LOOPBACK]},
    )


@pytest.fixture
def api(api_settings: Settings) -> Iterator[Api]:
    """The app on SQLite and on PostgreSQL, with one token per role."""
    app = create_app(api_settings)
    with TestClient(app) as client:
        services: Services = app.state.services
        tokens = {}
        with services.db.session() as session:
            for role in ROLES:
                tokens[role], _ = create_token(session, role, f"test-{role}")
        yield Api(client=client, services=services, tokens=tokens)
