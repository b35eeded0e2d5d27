"""One JSON error body for every error: `{"error": {"code", "message", "field"}}`.

Handlers cover the fleet's own refusals (`FleetError`: 401/403/404/409/422), invalid
status transitions (409, with the allowed next states), role checks (403), FastAPI's
request validation (422; malformed JSON is 400), Starlette's HTTP errors (unknown route
404, wrong method 405, oversize body 413) and, last, anything unexpected (500, logged,
with no internals in the body).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tinyops.fleet.rollout import InvalidTransition
from tinyops.fleet.store.errors import FleetError
from tinyops.security.roles import PermissionDenied

log = logging.getLogger("tinyops.fleet.server")

# Slugs for the HTTP errors Starlette raises itself.
STATUS_CODES: Final[dict[int, str]] = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    411: "length-required",
    413: "body-too-large",
    415: "unsupported-media-type",
    416: "range-not-satisfiable",
    422: "invalid",
    500: "internal",
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable slug, e.g. 'invalid', 'not-found', 'body-too-large'.")
    message: str = Field(description="What was wrong and what was expected.")
    field: str | None = Field(description="JSON path of the offending field, when there is one.")


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": ErrorResponse, "description": code}
    for status, code in STATUS_CODES.items()
    if status in (400, 401, 403, 404, 409, 413, 422)
}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


def field_path(loc: Sequence[Any]) -> str | None:
    """`("body", "phases", 2, "percent")` → `phases[2].percent`; None for the whole body."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or None


def validation_message(error: dict[str, Any]) -> str:
    where = field_path(error.get("loc", ())) or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


async def _fleet_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FleetError)
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.status, exc.code, exc.message, exc.field, headers or None)


async def _invalid_transition(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidTransition)
    return error_response(409, "invalid-transition", str(exc), "status", allowed=list(exc.allowed))


async def _permission_denied(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PermissionDenied)
    return error_response(403, "forbidden", str(exc))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (detail.get("ctx") or {}).get("error", "JSON decode error")
        return error_response(
            400,
            "malformed-json",
            f"the request body is not valid JSON ({reason} at byte {detail['loc'][-1]})",
        )
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return error_response(
        422, "invalid", validation_message(first) + more, field_path(first.get("loc", ()))
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route: see /docs or /openapi.json for the API"
    return error_response(exc.status_code, code, message, None, dict(exc.headers or {}) or None)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error: the server log has details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FleetError, _fleet_error)
    app.add_exception_handler(InvalidTransition, _invalid_transition)
    app.add_exception_handler(PermissionDenied, _permission_denied)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
