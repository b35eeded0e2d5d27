"""What the device API does, independent of the transport that carried the request.

HTTP (`routers/device.py`) and MQTT (`tinyops.fleet.mqtt`) both call these methods, so a
device sees the same semantics on either: the same validation, authentication, state
changes, audit records and answers. Each method takes the protocol's request model and
the authenticated device, and returns the protocol's response model; refusals are the
store's `FleetError`s (each carries its HTTP status; MQTT maps them into error replies).
"""

from __future__ import annotations

import enum
import math
import re
from datetime import UTC, datetime
from typing import Any, Final, get_args

from starlette.concurrency import run_in_threadpool

from tinyops.fleet.rollout import FINAL
from tinyops.fleet.server.drift_models import SketchAck, SketchIn
from tinyops.fleet.server.models import (
    EARLIEST,
    LATEST,
    MAX_LOG_LINES,
    MAX_TELEMETRY_POINTS,
    NAME_PATTERN,
    SHA256_PATTERN,
    CheckinRequest,
    CheckinResponse,
    CommandList,
    CommandResultRequest,
    DeviceCommand,
    EnrollRequest,
    EnrollResponse,
    LogLevel,
    MetricName,
    SignedOrder,
    StatusReport,
    TelemetryAck,
    TelemetryRequest,
)
from tinyops.fleet.server.runtime import FleetRuntime, utcnow
from tinyops.fleet.server.views import release_offer
from tinyops.fleet.store import (
    CheckinWrite,
    DeviceCredential,
    Forbidden,
    Installed,
    Invalid,
    LogRow,
    PendingAction,
    PointRow,
    Unauthorized,
)
from tinyops.security.tokens import hash_token, is_token, new_token


class Unreported(enum.Enum):
    """A check-in body without `installed`: the device did not say (null would mean that
    nothing is installed)."""

    UNREPORTED = "unreported"


UNREPORTED: Final = Unreported.UNREPORTED


def authenticate_device(rt: FleetRuntime, token: str) -> DeviceCredential:
    """The device a `dev_` token belongs to (in-memory lookup); 401/403 otherwise."""
    if not token:
        raise Unauthorized("missing credentials: send the header Authorization: Bearer <token>")
    device = rt.directory.lookup(hash_token(token))
    if device is not None:
        return device
    if token.startswith("tok_") and rt.store.api_token(hash_token(token)) is not None:
        raise Forbidden("an API token cannot act as a device: use the device's dev_ token")
    raise Unauthorized(
        "unknown device token (never issued, rotated by re-enrollment, or the "
        "device was decommissioned)"
    )


class DeviceService:
    """The device protocol's operations over one server runtime."""

    def __init__(self, rt: FleetRuntime) -> None:
        self.rt = rt

    async def enroll(self, body: EnrollRequest) -> EnrollResponse:
        """Enroll a device with a fleet enrollment token; re-enrolling rotates its token."""
        from tinyops.targets.catalog import board_ids

        rt = self.rt
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

    async def checkin(self, device: DeviceCredential, body: CheckinRequest) -> CheckinResponse:
        """The poll: answers 'none', or 'update' with the release (and a rollback order)."""
        installed: Installed | Unreported | None = UNREPORTED
        if "installed" in body.model_fields_set:
            installed = (
                None
                if body.installed is None
                else Installed(body.installed.name, body.installed.version, body.installed.sha256)
            )
        now = utcnow()
        action = await self.record_checkin(
            device,
            installed,
            None if body.health is None else body.health.model_dump(),
            None if body.slot is None else body.slot.model_dump(),
            now,
        )
        return self.checkin_answer(device, action, now)

    async def record_checkin(
        self,
        device: DeviceCredential,
        installed: Installed | Unreported | None,
        health: dict[str, Any] | None,
        slot: dict[str, Any] | None,
        now: datetime,
    ) -> PendingAction | None:
        """A check-in's effects; the pending update or rollback to answer (None: 'none').

        The body's parts come already validated (by `CheckinRequest`, or by the HTTP fast
        path's exact subset of it); `installed` is UNREPORTED when the body left it out.
        Nothing here touches the database unless the device reports another release
        than the one on record: last_seen, health and slot go to the write-behind buffer.
        """
        rt = self.rt
        if installed is not UNREPORTED and _differs(device.installed, installed):
            record = await run_in_threadpool(
                rt.store.report_installed, device.device_id, installed, now
            )
            rt.directory.set_installed(device.device_id, record.installed)
        rt.buffer.record(CheckinWrite(device.device_id, now, health, slot))
        rt.metrics.checkins.inc()
        action = rt.view.get(device.device_id)
        # The target check is the store's selection rule; it is repeated here because it is
        # the one promise a device must never see broken.
        if action is None or action.release.target != device.hardware:
            return None
        return action

    def checkin_answer(
        self, device: DeviceCredential, action: PendingAction | None, now: datetime
    ) -> CheckinResponse:
        """The check-in's answer for `action` (from `record_checkin`)."""
        rt = self.rt
        if action is None:
            return CheckinResponse(action="none", poll_interval_s=rt.settings.poll_interval_s)
        rollback = None
        if action.kind == "rollback":
            rollback = SignedOrder.model_validate(rt.rollback_order(action, now))
        return CheckinResponse(
            action="update",
            poll_interval_s=rt.settings.updating_poll_interval_s,
            deployment_id=action.deployment_id,
            release=release_offer(action.release),
            rollback=rollback,
            deadline=action.release.expires_at,
        )

    async def report_status(
        self, device: DeviceCredential, deployment_id: int, body: StatusReport
    ) -> None:
        """Record this device's status in a deployment (409 for an invalid transition)."""
        rt = self.rt

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
                rt.directory.set_installed(device.device_id, outcome.installed)
            rt.view.refresh(device.device_id)
            return outcome.after

        entered = await run_in_threadpool(report)
        rt.metrics.transitions.labels(entered).inc()
        if body.status in FINAL:
            # Only final statuses move a rollout (successes pass phases, failures abort).
            await rt.evaluator.request(deployment_id)

    async def telemetry(self, device: DeviceCredential, body: TelemetryRequest) -> TelemetryAck:
        """Store a batch of metric points and log lines (answered once they are committed)."""
        points = [(device.device_id, p.t, p.metric, p.value) for p in body.points]
        logs = [(device.device_id, line.t, line.level, line.message) for line in body.logs]
        await self.rt.telemetry.write(points, logs)
        return TelemetryAck(accepted=len(points), logs=len(logs))

    async def sketches(self, device: DeviceCredential, body: SketchIn) -> SketchAck:
        """Store one window of drift sketches (answered once stored; drift_service.py).

        Checked against the profile on the event loop (in a thread only the first time a
        release is seen: that reads its profile), stored by group commit (SketchWriter)."""
        drift = self.rt.drift
        write = drift.check_cached(device, body)
        if write is None:
            write = await run_in_threadpool(drift.check, device, body)
        window_id, _created = await self.rt.sketches.write(write)
        return SketchAck(accepted=True, window_id=window_id)

    async def commands(self, device: DeviceCredential) -> CommandList:
        """Pending remote-debug commands; each is handed out once."""
        taken = await run_in_threadpool(self.rt.store.take_commands, device.device_id, utcnow())
        return CommandList(
            commands=[DeviceCommand(id=c.id, kind=c.kind, args=c.args) for c in taken]
        )

    async def command_result(
        self, device: DeviceCredential, command_id: int, body: CommandResultRequest
    ) -> None:
        """The result of a command this device was sent."""
        await run_in_threadpool(
            self.rt.store.complete_command,
            device.device_id,
            command_id,
            body.ok,
            body.output,
            utcnow(),
        )


def _differs(stored: Installed | None, reported: Installed | None) -> bool:
    """Whether a check-in reports another release than the stored one (a missing sha256
    in the report is no difference)."""
    if stored is None or reported is None:
        return stored != reported
    if (stored.name, stored.version) != (reported.name, reported.version):
        return True
    return reported.sha256 is not None and reported.sha256 != stored.sha256


# --- the HTTP fast path's validation -------------------------------------------------------
#
# The two requests that carry the load, check-ins and telemetry batches, are validated by
# the functions below before pydantic sees them. Each accepts an exact subset of what the
# request model accepts, and yields the values the model would: plain JSON types only
# (an int where an int is due, a float or int where a float is), no string that the
# model would coerce or refuse. Anything else (a float for an int, an unusual time
# format, a missing field, an unknown one) makes them return None, and the caller hands
# the request to the model, which accepts it as usual or explains what is wrong. So the
# fast path never accepts what the API would refuse, nor answers differently.

_NAME = re.compile(NAME_PATTERN.removeprefix("^").removesuffix("$"))
_VERSION = re.compile(r"[0-9A-Za-z.+-]{1,128}")
_SHA256 = re.compile(SHA256_PATTERN.removeprefix("^").removesuffix("$"))
# RFC 3339 with a 'T', seconds, at most microseconds and an explicit offset: a subset of
# what pydantic parses, and exactly what datetime.fromisoformat reads the same way.
_WIRE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
_CONTROL_OR_SURROGATE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_CHECKIN_KEYS: Final = frozenset({"installed", "slot", "health"})
_INSTALLED_KEYS: Final = frozenset({"name", "version", "sha256"})
_SLOT_KEYS: Final = frozenset({"active", "state"})
_HEALTH_KEYS: Final = frozenset({"uptime_s", "resets", "free_memory_bytes"})
_TELEMETRY_KEYS: Final = frozenset({"points", "logs"})
_POINT_KEYS: Final = frozenset({"t", "metric", "value"})
_LOG_KEYS: Final = frozenset({"t", "level", "message"})
_METRICS: Final = frozenset(get_args(MetricName))
_LEVELS: Final = frozenset(get_args(LogLevel))
# Bounds of the models: Health's counters, and the magnitude up to which an int is
# turned into the same float by pydantic and by float() (2**53: exactly representable).
_MAX_COUNTER: Final = 2**53
_MAX_LOG_MESSAGE: Final = 4096


class _Unusual(Exception):
    """The body is not in the fast path's subset: let the request model decide."""


CheckinParts = tuple[Installed | Unreported | None, dict[str, Any] | None, dict[str, Any] | None]
"""installed (UNREPORTED when absent), health, slot: as `checkin` derives them."""


def fast_checkin(data: Any) -> CheckinParts | None:
    """A check-in body's parts if `CheckinRequest` surely accepts it; None to ask it."""
    try:
        if type(data) is not dict or not data.keys() <= _CHECKIN_KEYS:
            raise _Unusual
        installed: Installed | Unreported | None = UNREPORTED
        if "installed" in data:
            installed = None if data["installed"] is None else _installed(data["installed"])
        health = data.get("health")
        slot = data.get("slot")
        return (
            installed,
            None if health is None else _health(health),
            None if slot is None else _slot(slot),
        )
    except _Unusual:
        return None


def _installed(raw: Any) -> Installed:
    if type(raw) is not dict or not raw.keys() <= _INSTALLED_KEYS:
        raise _Unusual
    name, version, sha256 = raw.get("name"), raw.get("version"), raw.get("sha256")
    if type(name) is not str or type(version) is not str or not _NAME.fullmatch(name):
        raise _Unusual
    if not _VERSION.fullmatch(version):
        raise _Unusual
    if sha256 is not None and (type(sha256) is not str or not _SHA256.fullmatch(sha256)):
        raise _Unusual
    return Installed(name, version, sha256)


def _counter(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_COUNTER:
        raise _Unusual
    return value


def _health(raw: Any) -> dict[str, Any]:
    if type(raw) is not dict or not raw.keys() <= _HEALTH_KEYS:
        raise _Unusual
    free = raw.get("free_memory_bytes")
    return {
        "uptime_s": _counter(raw.get("uptime_s")),
        "resets": _counter(raw.get("resets")),
        "free_memory_bytes": None if free is None else _counter(free),
    }


def _slot(raw: Any) -> dict[str, Any]:
    if type(raw) is not dict or raw.keys() != _SLOT_KEYS:
        raise _Unusual
    active, state = raw["active"], raw["state"]
    if active is not None and active not in ("a", "b"):
        raise _Unusual
    if state not in ("committed", "trial"):
        raise _Unusual
    return {"active": active, "state": state}


def fast_telemetry(device_id: str, data: Any) -> tuple[list[PointRow], list[LogRow]] | None:
    """A telemetry body's rows if `TelemetryRequest` surely accepts it; None to ask it."""
    try:
        if type(data) is not dict or not data.keys() <= _TELEMETRY_KEYS:
            raise _Unusual
        raw_points = data.get("points", [])
        raw_logs = data.get("logs", [])
        if type(raw_points) is not list or len(raw_points) > MAX_TELEMETRY_POINTS:
            raise _Unusual
        if type(raw_logs) is not list or len(raw_logs) > MAX_LOG_LINES:
            raise _Unusual
        points: list[PointRow] = []
        append = points.append
        for point in raw_points:
            if type(point) is not dict or point.keys() != _POINT_KEYS:
                raise _Unusual
            metric, value = point["metric"], point["value"]
            if type(metric) is not str or metric not in _METRICS:
                raise _Unusual
            kind = type(value)
            if kind is float:
                if not math.isfinite(value):
                    raise _Unusual
            elif kind is not int or not -_MAX_COUNTER <= value <= _MAX_COUNTER:
                raise _Unusual
            append((device_id, _wire_time(point["t"]), metric, float(value)))
        logs: list[LogRow] = []
        for line in raw_logs:
            if type(line) is not dict or line.keys() != _LOG_KEYS:
                raise _Unusual
            level, message = line["level"], line["message"]
            if type(level) is not str or level not in _LEVELS or type(message) is not str:
                raise _Unusual
            if len(message) > _MAX_LOG_MESSAGE or _CONTROL_OR_SURROGATE.search(message):
                raise _Unusual
            logs.append((device_id, _wire_time(line["t"]), level, message))
        return points, logs
    except _Unusual:
        return None


def _wire_time(raw: Any) -> datetime:
    if type(raw) is not str or not _WIRE_TIME.fullmatch(raw):
        raise _Unusual
    try:
        moment = datetime.fromisoformat(raw).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _Unusual from None
    if not EARLIEST <= moment <= LATEST:
        raise _Unusual
    return moment
