"""ASGI middleware: request body cap, HTTP metrics, and the security layer.

The security layer (:func:`install_security`) adds, outermost first: security headers on
every answer (Content-Security-Policy per kind of page, nosniff, no referrer, no framing)
and CORS for the configured origins only. See docs/security.md.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings


class BodyLimit:
    """Refuse bodies larger than ``max_bytes`` with 413 before they reach a route."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.default_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    await _send_json_error(send, 413, f"request body larger than {limit} bytes")


async def _send_json_error(
    send: Send, status: int, detail: str, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer straight from ASGI middleware with FastAPI's ``{"detail": ...}`` shape."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HttpMetrics:
    """Count requests and time them by route template (not raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "xueliang_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "xueliang_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            self.requests.labels(scope["method"], name, str(status)).inc()
            self.latency.labels(scope["method"], name).observe(time.perf_counter() - start)


# --- security ---------------------------------------------------------------------------


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the security middleware; call after the others (it must wrap them all).

    The rate limits on failed authentication and token creation are not middleware: they
    are counted where a token is checked or created (``api.deps``, ``api.ratelimit``).
    """
    sec = settings.security
    if sec.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(sec.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Range", "If-Range"],
            expose_headers=["Location", "Retry-After", "Content-Range", "ETag"],
            allow_credentials=False,  # bearer tokens, no cookies
            max_age=600,
        )
    app.add_middleware(
        SecurityHeaders,
        media_origins=s3_origins(settings),
        image_origins=[o for o in [settings.console.map_tiles_origin] if o],
    )


def s3_origins(settings: Settings) -> list[str]:
    """Origins presigned URLs point to (where the console's clips are redirected), if any.

    Path-style URLs go to the endpoint itself; virtual-hosted ones (AWS) to a subdomain.
    """
    s3 = settings.storage.s3
    if settings.storage.backend != "s3" or not s3.endpoint:
        return []
    scheme = "https" if s3.secure else "http"
    origins = [f"{scheme}://{s3.endpoint}"]
    host = urlsplit(f"//{s3.endpoint}").hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        origins.append(f"{scheme}://*.{s3.endpoint}")
    return origins


def console_csp(media_origins: Iterable[str] = (), image_origins: Iterable[str] = ()) -> str:
    """The console's policy: everything from this origin, no inline code, no framing.

    Live video comes from a MediaStream (srcObject: no URL, nothing to allow); clips and
    snapshots come from this origin, or from the object store when it answers with a
    presigned redirect — then its origin is allowed to serve media and fetches (the
    console's service worker fetches clips). The map's base tiles are images from the
    configured tile server's origin (``console.map_tiles_url``), when there is one.
    """
    extra = "".join(f" {o}" for o in media_origins)
    images = extra + "".join(f" {o}" for o in image_origins)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src 'self' blob: data:{images}",
            f"media-src 'self' blob:{extra}",
            f"connect-src 'self'{extra}",
            "font-src 'self'",
            "manifest-src 'self'",
            "worker-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


#: JSON, metrics, redirects: nothing to load, nothing to frame.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: The interactive API documentation (FastAPI's Swagger UI and ReDoc) loads its scripts and
#: styles from jsDelivr; its one inline script is allowed by its hash, computed per answer.
DOCS_SCRIPTS = "'self' https://cdn.jsdelivr.net"
DOCS_POLICY = [
    "default-src 'none'",
    "style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com 'unsafe-inline'",
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
    "font-src https://fonts.gstatic.com",
    "connect-src 'self'",
    "worker-src blob:",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
]
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

COMMON_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}
HSTS = "max-age=31536000"


class SecurityHeaders:
    """Security headers on every HTTP answer (a route's own value of a header wins).

    ``Cache-Control: no-store`` on API answers that set no caching themselves (they carry
    incident data and, once, new tokens); HSTS when the request came over HTTPS (directly,
    or through a proxy uvicorn trusts for X-Forwarded-Proto).
    """

    def __init__(
        self, app: ASGIApp, media_origins: Iterable[str] = (), image_origins: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.console = console_csp(media_origins, image_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in DOCS_PATHS:
            await self._docs(scope, receive, send)
            return
        extra = self._headers_for(scope, path)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _merged(message.get("headers", []), extra)
            await send(message)

        await self.app(scope, receive, with_headers)

    def _headers_for(self, scope: Scope, path: str) -> dict[str, str]:
        headers = dict(COMMON_HEADERS)
        console = path == "/" or path == "/console" or path.startswith("/console/")
        headers["content-security-policy"] = self.console if console else API_CSP
        if path.startswith("/api/"):
            headers["cache-control"] = "no-store"
        if scope.get("scheme") == "https":
            headers["strict-transport-security"] = HSTS
        return headers

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hold back the (small, generated) page to allow exactly its inline scripts."""
        start: Message | None = None
        body = bytearray()

        async def collect(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    headers = self._headers_for(scope, scope["path"])
                    headers["content-security-policy"] = docs_csp(bytes(body))
                    await send({**start, "headers": _merged(start.get("headers", []), headers)})
                    await send({"type": "http.response.body", "body": bytes(body)})
            else:
                await send(message)

        await self.app(scope, receive, collect)


def docs_csp(page: bytes) -> str:
    """The documentation pages' policy, allowing the page's own inline scripts by hash."""
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'"
        for s in _INLINE_SCRIPT.findall(page)
    ]
    return "; ".join([f"script-src {' '.join([DOCS_SCRIPTS, *hashes])}", *DOCS_POLICY])


def _merged(raw: Iterable[tuple[bytes, bytes]], extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    headers = list(raw)
    present = {name.lower() for name, _ in headers}
    for name, value in extra.items():
        if name.encode() not in present:
            headers.append((name.encode(), value.encode()))
    return headers
