"""The operator console: static HTML/CSS/JS shipped in the package, served by the service.

``/console/`` is the single page; ``/console/<file>`` its assets; ``/`` redirects there.
No build step and no CDN: the files under ``api/static/console`` are what the browser
runs. Every answer carries a strict Content-Security-Policy (scripts and styles from this
origin only, no inline code, no framing; set for the whole app by
``api.middleware.SecurityHeaders``, which knows the object store's origin), and caching fits
each kind of file: the page is revalidated on every load (so a deploy is seen at once),
assets are revalidated by their ETag (cheap 304s on a modest PC). ``/console/config.json``
is what the page needs of the settings (the map's base tiles): public, no secrets in it.
"""

from __future__ import annotations

import hashlib
import mimetypes
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse, RedirectResponse

from api.deps import ServicesDep

STATIC = Path(__file__).resolve().parent.parent / "static" / "console"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    """The service's front door is the console."""
    return RedirectResponse("/console/", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/console")
def console_no_slash() -> RedirectResponse:
    """Relative asset URLs in the page need the trailing slash."""
    return RedirectResponse("/console/", status_code=status.HTTP_308_PERMANENT_REDIRECT)


@router.get("/console/")
def console_page(request: Request) -> Response:
    """The single page of the console (the app routes by ``location.hash``)."""
    return _serve("index.html", request, cache="no-cache")


@router.get("/console/config.json")
def console_config(services: ServicesDep) -> JSONResponse:
    """The console's settings, read by the page (no token needed: nothing secret in it)."""
    c = services.settings.console
    tiles = {"url": c.map_tiles_url, "subdomains": c.map_subdomains} if c.map_tiles_url else None
    body = {"map": {"tiles": tiles, "attribution": c.map_attribution}}
    return JSONResponse(body, headers={"Cache-Control": "no-cache"})


@router.get("/console/{name:path}")
def console_asset(name: str, request: Request) -> Response:
    """A script, style sheet or image of the console."""
    return _serve(name, request, cache="public, max-age=300, must-revalidate")


@lru_cache(maxsize=64)
def _load(path: Path, mtime_ns: int) -> tuple[bytes, str]:
    """File bytes and their ETag, cached per modification time (edits are seen at once)."""
    data = path.read_bytes()
    return data, '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


def _resolve(name: str) -> Path:
    """The file under :data:`STATIC` for ``name``; 404 for anything outside it."""
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such console file")
    return path


def _serve(name: str, request: Request, cache: str) -> Response:
    path = _resolve(name)
    data, etag = _load(path, path.stat().st_mtime_ns)
    headers = {"ETag": etag, "Cache-Control": cache}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return Response(data, media_type=media_type or "application/octet-stream", headers=headers)
