"""The error answers of every operation, added to the OpenAPI document from its own shape.

Routes document what only they can answer (a 409 on a state conflict, a 400 for a foreign
cursor, a 416 for a range) with :func:`error`. What any operation of a kind can answer is
added here, so a new route is documented without repeating it:

- 401, 403 and 503 where a bearer token is required (the token is looked up in the
  database; an unreachable database or object store is a 503 on every route using them);
- 400 where a request body is read and cannot be decoded;
- 404 where the path names something (or names it outside the token's grid scope);
- 413 where a request body is read (``server.max_body_bytes``);
- 429 where a bearer token is required (rate limits per client address, docs/security.md);
- 422 where anything is read from the request, with the body the app really sends: a list
  of field errors, or one message for a domain error (e.g. what an ONVIF probe answered).

Every error body is ``{"detail": ...}`` (:class:`ErrorOut`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

JSON = "application/json"
ERROR_SCHEMA = "ErrorOut"
_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}


class FieldError(BaseModel):
    """One rejected field: where (``["body", "rtsp_url"]``), why, and the kind of error."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx and 5xx answer: a message, or the fields a 422 rejects."""

    detail: str | list[FieldError] = Field(
        description="What went wrong and what to do; for invalid input, one entry per field."
    )
    allowed: list[str] | None = Field(
        default=None,
        description="A 409 for a step a case cannot take: the states it can go to instead.",
    )


def error(description: str) -> dict[str, Any]:
    """A route's own error answer, for its ``responses=``."""
    return {"model": ErrorOut, "description": description}


BAD_CURSOR = error("`cursor` is not a `next_cursor` this service gave out.")

_UNAUTHORIZED = {
    "description": "Missing, unknown, revoked or expired bearer token.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
}
_COMMON: dict[str, tuple[Callable[[dict[str, Any]], bool], dict[str, Any]]] = {
    "400": (
        lambda op: "requestBody" in op,
        {"description": "The body cannot be read as the content type says (e.g. not UTF-8)."},
    ),
    "401": (lambda op: bool(op.get("security")), _UNAUTHORIZED),
    "403": (
        lambda op: bool(op.get("security")),
        {"description": "The token's role may not do this, or the target lies outside its grid."},
    ),
    "404": (
        lambda op: any(p.get("in") == "path" for p in op.get("parameters", [])),
        {"description": "Nothing of that id (or not within the token's grid scope)."},
    ),
    "413": (
        lambda op: "requestBody" in op,
        {"description": "The request body is larger than the server accepts."},
    ),
    "429": (  # api.ratelimit, counted in the database every process shares
        lambda op: bool(op.get("security")),
        {
            "description": "Too many wrong tokens (or, on POST /tokens and rotations, too many "
            "tokens created) from this address; retry after `Retry-After` seconds.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
    ),
    "422": (
        lambda op: "requestBody" in op or bool(op.get("parameters")),
        {"description": "Invalid input: `detail` lists the fields and why, or says what failed."},
    ),
    "503": (
        lambda op: bool(op.get("security")),
        {"description": "The database or the object store is not reachable; retry later."},
    ),
}


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Add the common error answers and the error body to each operation of ``document``."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schemas[ERROR_SCHEMA].pop("$defs", {}))
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for code, (applies, answer) in _COMMON.items():
                if applies(operation) and code not in responses:
                    responses[code] = dict(answer)
            # FastAPI's own 422 describes only its field errors; the app sends ErrorOut.
            responses.get("422", {}).pop("content", None)
            for code, answer in responses.items():
                if code[0] in "45" and "content" not in answer:
                    answer["content"] = {JSON: {"schema": _REF}}
    if "#/components/schemas/HTTPValidationError" not in json.dumps(document["paths"]):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return document


def install(app: FastAPI) -> None:
    """Serve ``app``'s OpenAPI document with :func:`document_errors` applied (built once)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            # FastAPI caches what it generates in ``app.openapi_schema``: amended in place.
            document_errors(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point
