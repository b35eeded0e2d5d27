"""ASGI middleware: request body limits (413) and the request latency histogram.

The limit is checked twice: against Content-Length before the application reads a byte,
and while the body streams in (a chunked upload has no Content-Length, and a client may
lie about it). Streaming past the limit raises `BodyTooLarge`, an HTTPException, inside
whatever is reading the body; the error handlers turn it into the JSON 413.

Latency is labelled with the route template (`/api/v1/deployments/{deployment_id}`), not
the raw path, so that the label set stays bounded; unknown paths share 'unmatched' and
unusual methods share 'other'.
"""

from __future__ import annotations

import json
import time
from typing import Final

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tinyops.fleet.server.metrics import FleetMetrics

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
        self, app: ASGIApp, metrics: FleetMetrics, max_body_bytes: int, max_release_bytes: int
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_release_bytes = max_release_bytes

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

        try:
            await self._limited(scope, receive, send_and_watch)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.request_seconds.labels(method, template, str(status)).observe(
                time.perf_counter() - started
            )

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        upload = scope["method"] == "POST" and scope["path"] == RELEASE_UPLOAD_PATH
        limit = self.max_release_bytes if upload else self.max_body_bytes
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            try:
                length = int(declared)
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                await _respond(send, 400, "bad-request", "Content-Length is not a byte count")
                return
            if length > limit:
                await _respond(
                    send,
                    413,
                    "body-too-large",
                    f"request body of {length} bytes is larger than the {limit} bytes this "
                    "endpoint accepts",
                )
                return
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
