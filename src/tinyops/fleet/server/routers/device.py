"""The device API (`/api/v1/device/...`): enroll, check in, download, report, telemetry,
remote-debug commands. Every endpoint but enroll authenticates a device token and acts
for that device only.

Check-ins and telemetry batches, the requests that carry the load, also have a fast path
(`fast_paths`), which `FleetMiddleware` tries before FastAPI's routing: it authenticates
from the in-memory directory, validates with `device_service.fast_checkin` /
`fast_telemetry` (exact subsets of the request models) and answers from precomputed or
directly serialized JSON, with no dependency injection, model instances or thread hop.
Whenever a request is not the plain valid case (no or unknown token, another content
type, a body the subset does not cover) it declines before doing anything, and the
request goes through the routes below, which give the documented answers and errors.
The routes also define what OpenAPI publishes for both.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path as FilePath
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Scope, Send

from tinyops.fleet.server.auth import Device, Runtime
from tinyops.fleet.server.device_service import DeviceService, fast_checkin, fast_telemetry
from tinyops.fleet.server.errors import ERROR_RESPONSES, error_response
from tinyops.fleet.server.metrics import FleetMetrics
from tinyops.fleet.server.models import (
    MAX_ID,
    CheckinRequest,
    CheckinResponse,
    CommandList,
    CommandResultRequest,
    EnrollRequest,
    EnrollResponse,
    StatusReport,
    TelemetryAck,
    TelemetryRequest,
)
from tinyops.fleet.server.runtime import FleetRuntime, utcnow
from tinyops.fleet.store import DeviceCredential, FleetError, Forbidden
from tinyops.fleet.store.errors import RangeNotSatisfiable
from tinyops.security.tokens import hash_token

router = APIRouter(prefix="/api/v1/device", tags=["device"], responses=ERROR_RESPONSES)

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
# Read size when streaming an artifact, in bytes.
CHUNK_BYTES: Final = 64 * 1024


@router.post("/enroll", status_code=201, response_model=EnrollResponse)
async def enroll(body: EnrollRequest, rt: Runtime) -> EnrollResponse:
    """Enroll a device with a fleet enrollment token; re-enrolling rotates its token."""
    return await DeviceService(rt).enroll(body)


@router.post("/checkin", response_model=CheckinResponse)
async def checkin(body: CheckinRequest, device: Device, rt: Runtime) -> CheckinResponse:
    """The poll: answers 'none', or 'update' with the release (and a rollback order)."""
    return await DeviceService(rt).checkin(device, body)


@router.post("/deployments/{deployment_id}/status", status_code=204, response_class=Response)
async def report_status(
    deployment_id: Id, body: StatusReport, device: Device, rt: Runtime
) -> Response:
    """Report this device's status in a deployment (409 for an invalid transition)."""
    await DeviceService(rt).report_status(device, deployment_id, body)
    return Response(status_code=204)


@router.post("/telemetry", status_code=202, response_model=TelemetryAck)
async def telemetry(body: TelemetryRequest, device: Device, rt: Runtime) -> TelemetryAck:
    """Store a batch of metric points and log lines."""
    return await DeviceService(rt).telemetry(device, body)


@router.get("/commands", response_model=CommandList)
async def commands(device: Device, rt: Runtime) -> CommandList:
    """Pending remote-debug commands; each is handed out once."""
    return await DeviceService(rt).commands(device)


@router.post("/commands/{command_id}/result", status_code=204, response_class=Response)
async def command_result(
    command_id: Id, body: CommandResultRequest, device: Device, rt: Runtime
) -> Response:
    """The result of a command this device was sent."""
    await DeviceService(rt).command_result(device, command_id, body)
    return Response(status_code=204)


def parse_range(header: str, size: int) -> tuple[int, int]:
    """The inclusive byte range (first, last) of a `Range: bytes=...` header.

    One range only: `N-`, `N-M` (M clipped to the end) or the suffix `-S`.
    RangeNotSatisfiable (416) for anything else or a range past the end.
    """
    unsatisfiable = {"Content-Range": f"bytes */{size}"}
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        raise RangeNotSatisfiable(
            f"Range {header!r}: only byte ranges are supported (bytes=N-, bytes=N-M, bytes=-S)",
            headers=unsatisfiable,
        )
    if "," in spec:
        raise RangeNotSatisfiable(
            f"Range {header!r}: one range per request, e.g. bytes=1024-", headers=unsatisfiable
        )
    first_text, dash, last_text = spec.strip().partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    numbers = [t for t in (first_text, last_text) if t]
    # 18 digits: beyond any file size (and within int()'s digit limit).
    if (
        not dash
        or not numbers
        or not all(t.isdigit() and t.isascii() and len(t) <= 18 for t in numbers)
    ):
        raise RangeNotSatisfiable(
            f"Range {header!r} is malformed: expected bytes=N-, bytes=N-M or bytes=-S",
            headers=unsatisfiable,
        )
    if not first_text:
        suffix = int(last_text)
        if suffix == 0:
            raise RangeNotSatisfiable(
                f"Range {header!r}: an empty suffix range selects no byte", headers=unsatisfiable
            )
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = size - 1 if not last_text else min(int(last_text), size - 1)
    if first >= size or (last_text and int(last_text) < first):
        raise RangeNotSatisfiable(
            f"Range {header!r} is not satisfiable: the artifact has {size} bytes "
            f"(valid first byte positions 0..{size - 1})",
            headers=unsatisfiable,
        )
    return first, last


def _chunks(path: FilePath, first: int, length: int, metrics: FleetMetrics) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(first)
        left = length
        while left > 0:
            block = f.read(min(CHUNK_BYTES, left))
            if not block:
                return
            left -= len(block)
            metrics.download_bytes.inc(len(block))
            yield block


@router.get(
    "/artifacts/{release_id}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The .tinybundle."},
        206: {"content": {"application/octet-stream": {}}, "description": "A byte range."},
        304: {"description": "If-None-Match matched the ETag."},
        416: ERROR_RESPONSES[422] | {"description": "Range not satisfiable."},
    },
)
async def download(release_id: Id, request: Request, device: Device, rt: Runtime) -> Response:
    """The release file, for a device a deployment assigned it to; Range, ETag, Repr-Digest."""
    allowed = await run_in_threadpool(rt.store.may_download, device.device_id, release_id)
    if not allowed:
        raise Forbidden(
            f"release {release_id} is not assigned to device {device.device_id!r}: a device "
            "downloads only what a deployment offered it"
        )
    release = await run_in_threadpool(rt.store.get_release, release_id)
    path = rt.store.artifact_path(release.sha256)
    size = release.size
    etag = f'"{release.sha256}"'
    digest = base64.b64encode(bytes.fromhex(release.sha256)).decode()
    headers = {"ETag": etag, "Repr-Digest": f"sha-256=:{digest}:", "Accept-Ranges": "bytes"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and (
        if_none_match.strip() == "*" or etag in (t.strip() for t in if_none_match.split(","))
    ):
        return Response(status_code=304, headers=headers)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if range_header is not None and if_range is not None and if_range.strip() != etag:
        # The client's partial copy is of another file: send the whole new one.
        range_header = None
    if range_header is None:
        first, last, status = 0, size - 1, 200
    else:
        first, last = parse_range(range_header, size)
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    length = last - first + 1
    headers["Content-Length"] = str(length)
    rt.metrics.downloads.inc()
    return StreamingResponse(
        _chunks(path, first, length, rt.metrics),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


# --- the fast path of check-ins and telemetry ---------------------------------------------

FastPath = Callable[[Scope, bytes, Send], Awaitable[bool]]
"""Answer a request whose whole body is given, or decline (False) before doing anything."""
CHECKIN_PATH: Final = "/api/v1/device/checkin"
TELEMETRY_PATH: Final = "/api/v1/device/telemetry"
_JSON_HEADERS: Final = ((b"content-type", b"application/json"),)


def fast_paths(rt: FleetRuntime) -> dict[str, FastPath]:
    """The fast path of `POST` check-ins and telemetry, by path (for FleetMiddleware)."""
    service = DeviceService(rt)
    # An idle device's answer never changes: serialized once, as the route would.
    idle_answer = (
        CheckinResponse(action="none", poll_interval_s=rt.settings.poll_interval_s)
        .model_dump_json()
        .encode()
    )

    async def checkin_fast(scope: Scope, body: bytes, send: Send) -> bool:
        device = _device(rt, scope)
        parts = None if device is None else fast_checkin(_json_body(scope, body))
        if device is None or parts is None:
            return False
        installed, health, slot = parts
        now = utcnow()
        try:
            action = await service.record_checkin(device, installed, health, slot, now)
        except FleetError as exc:
            await _send_error(scope, send, exc)
            return True
        if action is None:
            await _send_json(send, 200, idle_answer)
        else:
            answer = service.checkin_answer(device, action, now)
            await _send_json(send, 200, answer.model_dump_json().encode())
        return True

    async def telemetry_fast(scope: Scope, body: bytes, send: Send) -> bool:
        device = _device(rt, scope)
        rows = None if device is None else fast_telemetry(device.device_id, _json_body(scope, body))
        if rows is None:
            return False
        points, logs = rows
        await rt.telemetry.write(points, logs)
        await _send_json(send, 202, b'{"accepted":%d,"logs":%d}' % (len(points), len(logs)))
        return True

    return {CHECKIN_PATH: checkin_fast, TELEMETRY_PATH: telemetry_fast}


def _device(rt: FleetRuntime, scope: Scope) -> DeviceCredential | None:
    """The device of a well-formed `Authorization: Bearer` header, if the directory has it."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            if not value.startswith(b"Bearer "):
                return None
            # Latin-1, as Starlette decodes headers for the route's own authentication.
            return rt.directory.lookup(hash_token(value[7:].decode("latin-1")))
    return None


def _json_body(scope: Scope, body: bytes) -> Any:
    """The decoded JSON body of an application/json request; None otherwise (declines)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.lower()
            if kind != b"application/json" and not kind.startswith(b"application/json;"):
                return None
            try:
                # What Starlette's Request.json() does, so the route would see the same.
                return json.loads(body)
            except (ValueError, RecursionError):
                return None
    return None


async def _send_json(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"%d" % len(payload)), *_JSON_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _send_error(scope: Scope, send: Send, exc: FleetError) -> None:
    """The JSON error body the error handlers give a FleetError."""
    headers = dict(exc.headers or {})
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    response = error_response(exc.status, exc.code, exc.message, exc.field, headers or None)

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)
