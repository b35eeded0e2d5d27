"""The JSON bodies the agent exchanges with the fleet server (docs/device-protocol.md).

Bodies the agent sends forbid unknown fields (a typo is a bug here). Bodies it receives
ignore unknown fields, so that a newer server can add information without breaking devices
already in the field; every field the agent relies on is still validated.

Times on the wire are ISO 8601 UTC strings with a 'Z' suffix (`2026-11-27T10:00:00Z`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, model_validator

SlotName = Literal["a", "b"]
SlotPhase = Literal["committed", "trial"]
DeploymentStatus = Literal[
    "downloading", "downloaded", "installing", "trial", "success", "failure", "rolled-back"
]
FINAL_STATUSES: frozenset[str] = frozenset({"success", "failure", "rolled-back"})
MetricName = Literal[
    "inference_latency_ms",
    "free_memory_bytes",
    "temperature_c",
    "resets_total",
    "uptime_s",
    "battery_v",
]
LogLevel = Literal["debug", "info", "warning", "error"]
CommandKind = Literal["fetch_logs", "run_self_test", "report_inventory", "set_log_level", "reboot"]
# Largest telemetry batch the server accepts, in points (protocol limit).
MAX_TELEMETRY_POINTS = 10_000
# Server limits on free text: log lines per batch, characters per log message and per
# status reason. Longer text is cut, never refused as a whole.
MAX_LOG_LINES = 1_000
MAX_LOG_MESSAGE_CHARS = 4_096
MAX_REASON_CHARS = 1_024
# Control characters the server refuses in free text (tab, newline, return are fine).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ELLIPSIS = "…"


def wire_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def clean_text(text: str, limit: int) -> str:
    """`text` without control characters, cut to at most `limit` characters (… marks a cut)."""
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= limit else text[: limit - len(_ELLIPSIS)] + _ELLIPSIS


class _Sent(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Received(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class InstalledRef(_Sent):
    """What a device runs: the committed release of its active slot."""

    name: str = Field(description="Model name of the installed bundle.")
    version: str = Field(description="SemVer version of the installed bundle.")
    sha256: str | None = Field(default=None, description="sha256 of the installed bundle file.")


class ReleaseRef(_Sent):
    """A release by name and version, as an enrollment names what the device runs."""

    name: str = Field(description="Model name.")
    version: str = Field(description="SemVer version.")


class EnrollRequest(_Sent):
    """POST /api/v1/device/enroll."""

    enrollment_token: str = Field(description="Fleet enrollment token, etk_...")
    device_id: str = Field(description="The id this device asks to be known by.")
    hardware: str = Field(description="Board id of the catalog, e.g. 'rpi4'.")
    tags: dict[str, str] = Field(default_factory=dict, description="Selector tags.")
    public_key: str | None = Field(default=None, description="Device key (unused: tokens).")
    installed: ReleaseRef | None = Field(default=None, description="Release it runs now.")


class EnrollResponse(_Received):
    """201 answer to an enrollment."""

    device_id: str = Field(description="The id the server registered.")
    device_token: str = Field(description="Bearer token of this device, dev_...")
    poll_interval_s: float = Field(gt=0, description="Seconds between check-ins.")
    server_key: str = Field(description="Base64 raw Ed25519 key that signs rollback orders.")


class SlotReport(_Sent):
    """Which slot runs and whether it is committed or still on trial."""

    active: SlotName | None = Field(description="Active slot; null when nothing is installed.")
    state: SlotPhase = Field(description="committed, or trial while a new release is tested.")


class Health(_Sent):
    """Vital signs sent with every check-in."""

    uptime_s: int = Field(ge=0, description="Seconds since the agent last booted.")
    resets: int = Field(ge=0, description="Boots after the first one (restarts, reboots).")
    free_memory_bytes: int | None = Field(default=None, ge=0, description="Bytes available.")


class CheckinRequest(_Sent):
    """POST /api/v1/device/checkin."""

    installed: InstalledRef | None = Field(description="Active release; null when none.")
    slot: SlotReport = Field(description="Active slot and its state.")
    health: Health = Field(description="Uptime, resets, free memory.")


class ReleaseOffer(_Received):
    """The release a deployment assigned to this device."""

    name: str = Field(description="Model name.")
    version: str = Field(description="SemVer version.")
    target: str = Field(description="Board id the bundle was built for.")
    url: str = Field(description="Where to download the .tinybundle (path on the server).")
    size: int = Field(ge=0, description="Size of the .tinybundle file, in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file, hex.")


class SignedRollbackOrder(_Received):
    """A server-signed order allowing this device to install an older release.

    `order` stays a plain object: the signature is checked over its canonical JSON exactly
    as received (`tinyops.security.rollback.verify_rollback_order`).
    """

    order: dict[str, Any] = Field(description="device_id, deployment_id, sha256, version, ...")
    signature: str = Field(description="Base64 Ed25519 signature over canonical JSON of order.")


class CheckinResponse(_Received):
    """200 answer to a check-in: nothing to do, or a release to install."""

    action: Literal["none", "update"] = Field(description="none, or update.")
    poll_interval_s: float = Field(gt=0, description="Seconds until the next check-in.")
    deployment_id: int | None = Field(default=None, description="Deployment of the update.")
    release: ReleaseOffer | None = Field(default=None, description="The release to install.")
    rollback: SignedRollbackOrder | None = Field(
        default=None, description="Present when the release is an authorized downgrade."
    )
    deadline: AwareDatetime | None = Field(default=None, description="Finish by this time.")

    @model_validator(mode="after")
    def _update_is_complete(self) -> CheckinResponse:
        if self.action == "update" and (self.deployment_id is None or self.release is None):
            raise ValueError("action 'update' needs deployment_id and release")
        return self


class StatusReport(_Sent):
    """POST /api/v1/device/deployments/{deployment_id}/status."""

    status: DeploymentStatus = Field(description="The deployment's new state on this device.")
    reason: str | None = Field(default=None, description="Why, for failure and rolled-back.")
    version: str | None = Field(default=None, description="Version the status is about.")


class TelemetryPoint(_Sent):
    """One measurement."""

    t: AwareDatetime = Field(description="When it was measured (UTC).")
    metric: MetricName = Field(description="Metric name, base units in the name.")
    value: float = Field(description="The measured value.")

    @field_serializer("t")
    def _t(self, value: datetime) -> str:
        return wire_time(value)


class LogLine(_Sent):
    """One agent log line."""

    t: AwareDatetime = Field(description="When it was logged (UTC).")
    level: LogLevel = Field(description="debug, info, warning or error.")
    message: str = Field(description="The message.")

    @field_serializer("t")
    def _t(self, value: datetime) -> str:
        return wire_time(value)


class TelemetryBatch(_Sent):
    """POST /api/v1/device/telemetry."""

    points: list[TelemetryPoint] = Field(
        default_factory=list, max_length=MAX_TELEMETRY_POINTS, description="Measurements."
    )
    logs: list[LogLine] = Field(default_factory=list, description="Log lines.")


class TelemetryAck(_Received):
    """202 answer to a telemetry batch."""

    accepted: int = Field(ge=0, description="Points stored.")
    logs: int = Field(ge=0, description="Log lines stored.")


class SketchAck(_Received):
    """202 answer to a drift sketch (POST /api/v1/device/sketches)."""

    accepted: bool = Field(description="The window was stored.")
    window_id: int = Field(description="Id of the stored window.")


class Command(_Received):
    """A remote-debug command an operator queued for this device."""

    id: int = Field(description="Command id, for the result.")
    kind: str = Field(description="fetch_logs, run_self_test, report_inventory, ...")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments of the kind.")


class CommandList(_Received):
    """200 answer to GET /api/v1/device/commands."""

    commands: list[Command] = Field(default_factory=list, description="Pending commands.")


class CommandResult(_Sent):
    """POST /api/v1/device/commands/{id}/result."""

    ok: bool = Field(description="Whether the command did what it was asked.")
    output: dict[str, Any] = Field(default_factory=dict, description="What it produced.")


__all__ = [
    "FINAL_STATUSES",
    "MAX_LOG_LINES",
    "MAX_LOG_MESSAGE_CHARS",
    "MAX_REASON_CHARS",
    "MAX_TELEMETRY_POINTS",
    "CheckinRequest",
    "CheckinResponse",
    "Command",
    "CommandKind",
    "CommandList",
    "CommandResult",
    "DeploymentStatus",
    "EnrollRequest",
    "EnrollResponse",
    "Health",
    "InstalledRef",
    "LogLevel",
    "LogLine",
    "MetricName",
    "ReleaseOffer",
    "ReleaseRef",
    "SignedRollbackOrder",
    "SketchAck",
    "SlotName",
    "SlotPhase",
    "SlotReport",
    "StatusReport",
    "TelemetryAck",
    "TelemetryBatch",
    "TelemetryPoint",
    "clean_text",
    "wire_time",
]
