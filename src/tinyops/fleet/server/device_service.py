"""What the device API does, independent of the transport that carried the request.

HTTP (`routers/device.py`) and MQTT (`tinyops.fleet.mqtt`) both call these methods, so a
device sees the same semantics on either: the same validation, authentication, state
changes, audit records and answers. Each method takes the protocol's request model and
the authenticated device, and returns the protocol's response model; refusals are the
store's `FleetError`s (each carries its HTTP status; MQTT maps them into error replies).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from tinyops.fleet.rollout import FINAL
from tinyops.fleet.server.models import (
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
from tinyops.fleet.server.runtime import FleetRuntime, utcnow
from tinyops.fleet.server.views import release_offer
from tinyops.fleet.store import (
    CheckinWrite,
    DeviceCredential,
    Forbidden,
    Installed,
    Invalid,
    Unauthorized,
)
from tinyops.security.tokens import hash_token, is_token, new_token


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
        rt = self.rt
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

    async def telemetry(self, device: DeviceCredential, body: TelemetryRequest) -> TelemetryAck:
        """Store a batch of metric points and log lines."""
        points = [(p.t, p.metric, p.value) for p in body.points]
        logs = [(line.t, line.level, line.message) for line in body.logs]
        accepted, logged = await run_in_threadpool(
            self.rt.store.add_telemetry, device.device_id, points, logs
        )
        self.rt.metrics.telemetry_points.inc(accepted)
        return TelemetryAck(accepted=accepted, logs=logged)

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
