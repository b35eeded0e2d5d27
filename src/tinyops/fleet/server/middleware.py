"""ASGI middleware: request body limits (413), the request latency histogram, and the
fast path of the requests that carry the load.

The limit is checked twice: against Content-Length before the application reads a byte,
and while the body streams in (a chunked upload has no Content-Length, and a client may
lie about it). Streaming past the limit raises `BodyTooLarge`, an HTTPException, inside
whatever is reading the body; the error handlers turn it into the JSON 413.

Latency is labelled with the route template (`/api/v1/deployments/{deployment_id}`), not
the raw path, so that the label set stays bounded; unknown paths share 'unmatched' and
unusual methods share 'other'. The histogram's children are looked up once per label set.

Fast paths (`POST` to a path of `fast_paths`, i.e. check-ins and telemetry, see
`routers/device.py`) read the whole body here, within the same limits, and let the fast
path answer; when it declines, the request continues into FastAPI with the body replayed,
as if nothing had happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from fastapi import HTTPException
from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyops.fleet.server.metrics import FleetMetrics

FastPath = Callable[[Scope, bytes, Send], Awaitable[bool]]
"""Answer a request whose whole body is given, or decline (False) before doing anything."""

RELEASE_UPLOAD_PATH: Final = "/api/v1/releases"
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body is larger than the {limit} bytes this endpoint accepts",
        )


def _error_body(status: int, code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()


class FleetMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: FleetMetrics,
        max_body_bytes: int,
        max_release_bytes: int,
        fast_paths: Mapping[str, FastPath] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_release_bytes = max_release_bytes
        self.fast_paths = dict(fast_paths or {})
        self._latency: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in METHODS else "other"
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        fast = self.fast_paths.get(scope["path"]) if method == "POST" else None
        template: str | None = None
        try:
            if fast is None:
                await self._limited(scope, receive, send_and_watch)
            elif await self._fast(scope, receive, send_and_watch, fast):
                template = scope["path"]
        finally:
            if template is None:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
            key = (method, template, status)
            child = self._latency.get(key)
            if child is None:
                child = self.metrics.request_seconds.labels(method, template, str(status))
                self._latency[key] = child
            child.observe(time.perf_counter() - started)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """A 400/413 for the declared Content-Length (status, code, message), if due."""
        upload = scope["method"] == "POST" and scope["path"] == RELEASE_UPLOAD_PATH
        limit = self.max_release_bytes if upload else self.max_body_bytes
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is None:
            return None
        try:
            length = int(declared)
            if length < 0:
                raise ValueError(length)
        except ValueError:
            return 400, "bad-request", "Content-Length is not a byte count"
        if length > limit:
            return (
                413,
                "body-too-large",
                f"request body of {length} bytes is larger than the {limit} bytes this "
                "endpoint accepts",
            )
        return None

    async def _fast(self, scope: Scope, receive: Receive, send: Send, fast: FastPath) -> bool:
        """Read the body and try the fast path: True when it answered (or refused the body,
        or the client left); False when it declined and the app took the request, with the
        body replayed."""
        refusal = self._refusal(scope)
        if refusal is not None:
            await _respond(send, *refusal)
            return True
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return True  # the client went away: nobody to answer
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                message_text = (
                    f"request body is larger than the {limit} bytes this endpoint accepts"
                )
                await _respond(send, 413, "body-too-large", message_text)
                return True
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if await fast(scope, body, send):
            return True
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
        return False

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope)
        if refusal is not None:
            await _respond(send, *refusal)
            return
        upload = scope["method"] == "POST" and scope["path"] == RELEASE_UPLOAD_PATH
        limit = self.max_release_bytes if upload else self.max_body_bytes
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, receive_limited, send)


async def _respond(send: Send, status: int, code: str, message: str) -> None:
    body = _error_body(status, code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
