"""The device API (`/api/v1/device/...`): enroll, check in, download, report, telemetry,
remote-debug commands. Every endpoint but enroll authenticates a device token and acts
for that device only."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path as FilePath
from typing import Annotated, Final

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tinyops.fleet.rollout import FINAL
from tinyops.fleet.server.auth import Device, Runtime
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.metrics import FleetMetrics
from tinyops.fleet.server.models import (
    MAX_ID,
    CheckinRequest,
    CheckinResponse,
    CommandList,
    CommandResultRequest,
    DeviceCommand,
    EnrollRequest,
    EnrollResponse,
    SignedOrder,
    StatusReport,
    TelemetryAck,
    TelemetryRequest,
)
from tinyops.fleet.server.runtime import utcnow
from tinyops.fleet.server.views import release_offer
from tinyops.fleet.store import (
    CheckinWrite,
    DeviceCredential,
    Forbidden,
    Installed,
    Invalid,
    Unauthorized,
)
from tinyops.fleet.store.errors import RangeNotSatisfiable
from tinyops.security.tokens import hash_token, is_token, new_token

router = APIRouter(prefix="/api/v1/device", tags=["device"], responses=ERROR_RESPONSES)

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
# Read size when streaming an artifact, in bytes.
CHUNK_BYTES: Final = 64 * 1024


@router.post("/enroll", status_code=201, response_model=EnrollResponse)
async def enroll(body: EnrollRequest, rt: Runtime) -> EnrollResponse:
    """Enroll a device with a fleet enrollment token; re-enrolling rotates its token."""
    from tinyops.targets.catalog import board_ids

    boards = board_ids()
    if body.hardware not in boards:
        raise Invalid(
            f"hardware {body.hardware!r} is not a board of the catalog: expected one of "
            f"{', '.join(boards)}",
            field="hardware",
        )
    if not is_token(body.enrollment_token, "etk_"):
        raise Unauthorized(
            "enrollment_token is not an enrollment token: expected etk_ followed by 43 "
            "base64url characters",
            field="enrollment_token",
        )
    installed = (
        None
        if body.installed is None
        else Installed(body.installed.name, body.installed.version, body.installed.sha256)
    )
    token, digest = new_token("dev_")
    device, _old = await run_in_threadpool(
        lambda: rt.store.enroll_device(
            enrollment_token_hash=hash_token(body.enrollment_token),
            device_id=body.device_id,
            hardware=body.hardware,
            tags=body.tags,
            public_key=body.public_key,
            installed=installed,
            device_token_hash=digest,
            now=utcnow(),
        )
    )
    rt.directory.put(DeviceCredential(device.id, digest, device.hardware, device.installed))
    return EnrollResponse(
        device_id=device.id,
        device_token=token,
        poll_interval_s=rt.settings.poll_interval_s,
        server_key=rt.server_key_b64,
    )


def _differs(stored: Installed | None, reported: Installed | None) -> bool:
    """Whether a check-in reports another release than the stored one (a missing sha256
    in the report is no difference)."""
    if stored is None or reported is None:
        return stored != reported
    if (stored.name, stored.version) != (reported.name, reported.version):
        return True
    return reported.sha256 is not None and reported.sha256 != stored.sha256


@router.post("/checkin", response_model=CheckinResponse)
async def checkin(body: CheckinRequest, device: Device, rt: Runtime) -> CheckinResponse:
    """The poll: answers 'none', or 'update' with the release (and a rollback order)."""
    now = utcnow()
    if "installed" in body.model_fields_set:
        reported = (
            None
            if body.installed is None
            else Installed(body.installed.name, body.installed.version, body.installed.sha256)
        )
        if _differs(device.installed, reported):
            record = await run_in_threadpool(
                rt.store.report_installed, device.device_id, reported, now
            )
            rt.directory.set_installed(device.device_id, record.installed)
    rt.buffer.record(
        CheckinWrite(
            device.device_id,
            now,
            None if body.health is None else body.health.model_dump(),
            None if body.slot is None else body.slot.model_dump(),
        )
    )
    rt.metrics.checkins.inc()
    action = rt.view.get(device.device_id)
    # The target check is the store's selection rule; it is repeated here because it is
    # the one promise a device must never see broken.
    if action is None or action.release.target != device.hardware:
        return CheckinResponse(action="none", poll_interval_s=rt.settings.poll_interval_s)
    rollback = None
    if action.kind == "rollback":
        rollback = SignedOrder.model_validate(rt.rollback_order(action, now))
    return CheckinResponse(
        action="update",
        poll_interval_s=rt.settings.update_poll_interval_s,
        deployment_id=action.deployment_id,
        release=release_offer(action.release),
        rollback=rollback,
        deadline=action.release.expires_at,
    )


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


@router.post("/deployments/{deployment_id}/status", status_code=204, response_class=Response)
async def report_status(
    deployment_id: Id, body: StatusReport, device: Device, rt: Runtime
) -> Response:
    """Report this device's status in a deployment (409 for an invalid transition)."""

    def report() -> str:
        outcome = rt.store.report_status(
            deployment_id=deployment_id,
            device_id=device.device_id,
            status=body.status,
            reason=body.reason,
            version=body.version,
            now=utcnow(),
        )
        if body.status in ("success", "rolled-back"):
            rt.directory.set_installed(
                device.device_id, rt.store.get_device(device.device_id).installed
            )
        rt.view.refresh(device.device_id)
        return outcome.after

    entered = await run_in_threadpool(report)
    rt.metrics.transitions.labels(entered).inc()
    if body.status in FINAL:
        # Only final statuses move a rollout (successes pass phases, failures abort).
        await rt.evaluator.request(deployment_id)
    return Response(status_code=204)


@router.post("/telemetry", status_code=202, response_model=TelemetryAck)
async def telemetry(body: TelemetryRequest, device: Device, rt: Runtime) -> TelemetryAck:
    """Store a batch of metric points and log lines."""
    points = [(p.t, p.metric, p.value) for p in body.points]
    logs = [(line.t, line.level, line.message) for line in body.logs]
    accepted, logged = await run_in_threadpool(
        rt.store.add_telemetry, device.device_id, points, logs
    )
    rt.metrics.telemetry_points.inc(accepted)
    return TelemetryAck(accepted=accepted, logs=logged)


@router.get("/commands", response_model=CommandList)
async def commands(device: Device, rt: Runtime) -> CommandList:
    """Pending remote-debug commands; each is handed out once."""
    taken = await run_in_threadpool(rt.store.take_commands, device.device_id, utcnow())
    return CommandList(commands=[DeviceCommand(id=c.id, kind=c.kind, args=c.args) for c in taken])


@router.post("/commands/{command_id}/result", status_code=204, response_class=Response)
async def command_result(
    command_id: Id, body: CommandResultRequest, device: Device, rt: Runtime
) -> Response:
    """The result of a command this device was sent."""
    await run_in_threadpool(
        rt.store.complete_command, device.device_id, command_id, body.ok, body.output, utcnow()
    )
    return Response(status_code=204)
