"""Running the service: checks first (one clear line on failure), then uvicorn."""

from __future__ import annotations

import logging
from datetime import timedelta

import uvicorn

from api.app import create_app
from config.settings import Settings
from runtime.services import Services

log = logging.getLogger(__name__)


def run_server(settings: Settings, role: str = "all", banner: str | None = None) -> int:
    services = Services.from_settings(settings)
    services.start()  # fails here, before binding, with a message that says what to fix
    app = create_app(settings, services, role)
    host, port = settings.server.host, settings.server.port
    log.info("Xueliang (%s) on http://%s:%d — API docs at /docs", role, host, port)
    if banner:
        print(banner, flush=True)
    proxies = settings.server.trusted_proxies
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        # X-Forwarded-For/-Proto only from the configured proxies (uvicorn would otherwise
        # believe any local process): the client address is what rate limits count by.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=list(proxies) or None,
    )
    return 0


def run_demo(settings: Settings) -> int:
    from cli.demo import demo_video, ensure_demo_camera

    ingest = settings.ingest.model_copy(update={"allow_file_sources": True})
    incidents = settings.incidents.model_copy(update={"quiet_s": 3.0})
    settings = settings.model_copy(update={"ingest": ingest, "incidents": incidents})
    services = Services.from_settings(settings)
    services.start()
    print("preparing the demo camera…", flush=True)
    camera_id = ensure_demo_camera(services, demo_video(settings.data_dir))
    token = _demo_admin_token(services, settings)
    base = f"http://{settings.server.host}:{settings.server.port}"
    banner = (
        "\n=== Xueliang demo ===\n"
        f"  admin token : {token}\n"
        f"  console     : {base}/console/  (log in with the token)\n"
        f"  API docs    : {base}/docs\n"
        f"  health      : {base}/healthz\n"
        f"  demo camera : {camera_id} (a figure crosses every 20 s: incidents within a minute)\n"
        f"  incidents   : curl -H 'Authorization: Bearer {token}' {base}/api/v1/incidents\n"
        f"  events      : curl -H 'Authorization: Bearer {token}' {base}/api/v1/events\n"
    )
    services.close()
    return run_server(settings, banner=banner)


def _demo_admin_token(services: Services, settings: Settings) -> str:
    if settings.auth.bootstrap_token is not None:
        return settings.auth.bootstrap_token.get_secret_value()
    from storage.models import utcnow
    from storage.tokens import create_token

    expires_at = utcnow() + timedelta(seconds=settings.auth.lifetime_s("admin"))
    with services.db.session() as session:
        token, _ = create_token(session, "admin", "demo-admin", expires_at=expires_at)
    return token
