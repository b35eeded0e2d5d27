"""Request and response bodies of the fleet API (docs/device-protocol.md), as pydantic models.

They make the OpenAPI document accurate and they are the first line of defence against
bad input: every string has a length bound and refuses control characters (PostgreSQL
text cannot hold NUL), every number a range, every list a size, and floats must be finite.
Request bodies forbid unknown fields, so a typo is a 422 naming it rather than a silently
ignored setting.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from tinyops.fleet.rollout import DeviceStatus, RolloutStatus
from tinyops.security.roles import Role

# Ids and names: portable characters, as the bundle manifest requires of names.
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
# 32-bit signed: the largest id PostgreSQL's INTEGER columns hold.
MAX_ID: Final = 2**31 - 1
# Ten years, in seconds: a bound for durations that still fits every datetime.
MAX_DURATION_S: Final = 10 * 365 * 86_400.0
MAX_TELEMETRY_POINTS: Final = 10_000
MAX_LOG_LINES: Final = 1_000
MAX_TAGS: Final = 32
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, escape, ...)")
    return value


def _utc(value: datetime) -> datetime:
    try:
        moment = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is outside the range of representable times") from exc
    if not EARLIEST <= moment <= LATEST:
        raise ValueError(f"must lie between {EARLIEST.year} and {LATEST.year}")
    return moment


# A device clock can be wrong, but not by centuries: keeps times storable everywhere.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9000, 1, 1, tzinfo=UTC)
WireTime = Annotated[AwareDatetime, AfterValidator(_utc)]
Text1k = Annotated[str, StringConstraints(max_length=1024), AfterValidator(_no_control)]
Text4k = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_no_control)]


Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
DeviceId = Name
Version = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z.+-]+$"),
]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]
TagKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f:]+$")
]
TagValue = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")]
Tags = Annotated[dict[TagKey, TagValue], Field(max_length=MAX_TAGS)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
Token = Annotated[str, StringConstraints(max_length=128)]
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
ReportedStatus = Literal[
    "downloading", "downloaded", "installing", "trial", "success", "failure", "rolled-back"
]


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where a JSON value holds a lone UTF-16 surrogate (JSON allows "\\ud800"), if anywhere."""
    if isinstance(value, str):
        return path or "body" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, sub in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return where
            if (found := _surrogate_path(sub, where)) is not None:
                return found
    if isinstance(value, list):
        for index, sub in enumerate(value):
            if (found := _surrogate_path(sub, f"{path}[{index}]")) is not None:
                return found
    return None


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _unicode_only(cls, data: Any) -> Any:
        # A lone surrogate is not Unicode text: it could be stored, but never sent back
        # out as UTF-8, so every string in a body is refused here, whatever its field.
        where = _surrogate_path(data)
        if where is not None:
            raise ValueError(f"{where} holds a lone UTF-16 surrogate: not valid Unicode text")
        return data


class Response(BaseModel):
    # Pydantic writes aware UTC datetimes as ISO 8601 with a Z, the protocol's format.
    model_config = ConfigDict(extra="forbid")


# --- device API ---------------------------------------------------------------------------


class InstalledRef(Request):
    """The release a device runs."""

    name: Name = Field(description="Model name of the installed bundle.")
    version: Version = Field(description="Its version.")
    sha256: Sha256 | None = Field(default=None, description="sha256 of the bundle file, hex.")


class EnrollRequest(Request):
    enrollment_token: Token = Field(description="A fleet enrollment token, etk_...")
    device_id: DeviceId = Field(description="The id the device will be known by.")
    hardware: Name = Field(description="A board id of the catalog, e.g. 'nano33ble'.")
    tags: Tags = Field(default_factory=dict, description="Selector tags, e.g. {'group': 'lab'}.")
    public_key: Text4k | None = Field(
        default=None, description="The device's public key, PEM (optional, stored only)."
    )
    installed: InstalledRef | None = Field(default=None, description="What it runs now.")


class EnrollResponse(Response):
    device_id: str
    device_token: str = Field(description="The device's bearer token, shown once.")
    poll_interval_s: float
    server_key: str = Field(description="Base64 raw Ed25519 key that signs rollback orders.")


class SlotReport(Request):
    active: Literal["a", "b"] | None = Field(description="Active slot; null before any install.")
    state: Literal["committed", "trial"] = Field(description="Committed, or on trial.")


class Health(Request):
    uptime_s: int = Field(ge=0, le=2**53, description="Seconds since the last boot.")
    resets: int = Field(ge=0, le=2**53, description="Boots after the first one.")
    free_memory_bytes: int | None = Field(
        default=None, ge=0, le=2**53, description="Free memory, bytes."
    )


class CheckinRequest(Request):
    installed: InstalledRef | None = Field(default=None, description="The active release.")
    slot: SlotReport | None = Field(default=None, description="Active slot and its state.")
    health: Health | None = Field(default=None, description="Vital signs.")


class ReleaseOffer(Response):
    name: str
    version: str
    target: str
    url: str = Field(description="Download path on this server.")
    size: int = Field(description="Bytes of the .tinybundle.")
    sha256: str


class SignedOrder(Response):
    order: dict[str, Any] = Field(
        description="device_id, deployment_id, sha256, version, issued_at, expires_at."
    )
    signature: str = Field(description="Base64 Ed25519 signature over canonical JSON of order.")


class CheckinResponse(Response):
    action: Literal["none", "update"]
    poll_interval_s: float = Field(description="Seconds until the next check-in.")
    deployment_id: int | None = None
    release: ReleaseOffer | None = None
    rollback: SignedOrder | None = Field(
        default=None, description="Present when the release is an authorized downgrade."
    )
    deadline: datetime | None = Field(
        default=None,
        description="When the offered bundle expires: devices must not install it after.",
    )


class StatusReport(Request):
    status: ReportedStatus = Field(description="The deployment's new status on this device.")
    reason: Text1k | None = Field(default=None, description="Why (failure, rolled-back).")
    version: Version | None = Field(default=None, description="The version it is about.")


class TelemetryPoint(Request):
    t: WireTime = Field(description="When it was measured.")
    metric: MetricName = Field(description="Metric name (base unit in the name).")
    value: float = Field(description="The measurement.")


class LogLine(Request):
    t: WireTime
    level: LogLevel
    message: Text4k


class TelemetryRequest(Request):
    points: list[TelemetryPoint] = Field(default_factory=list, max_length=MAX_TELEMETRY_POINTS)
    logs: list[LogLine] = Field(default_factory=list, max_length=MAX_LOG_LINES)


class TelemetryAck(Response):
    accepted: int
    logs: int


class DeviceCommand(Response):
    id: int
    kind: str
    args: dict[str, Any]


class CommandList(Response):
    commands: list[DeviceCommand]


class CommandResultRequest(Request):
    ok: bool = Field(description="Whether the command did what it was asked.")
    output: dict[str, Any] = Field(default_factory=dict, description="What it produced.")


# --- management API ---------------------------------------------------------------------------


class ReleaseOut(Response):
    id: int
    name: str
    version: str
    target: str
    sha256: str
    size: int = Field(description="Bytes of the .tinybundle.")
    key_id: str = Field(description="Id of the trusted key that signed it.")
    created_at: datetime
    expires_at: datetime
    uploaded_at: datetime
    uploaded_by: str
    manifest: dict[str, Any]


class ReleaseList(Response):
    releases: list[ReleaseOut]


class ReleaseRef(Request):
    name: Name
    version: Version
    target: Name


class SelectorIn(Request):
    tags: Tags = Field(default_factory=dict, description="Every tag must match.")
    hardware: Name | None = Field(default=None, description="Must equal the release target.")
    installed_version: Version | None = Field(default=None, description="Devices on this version.")


class PhaseIn(Request):
    percent: float | None = Field(
        default=None, gt=0, le=100, description="Cumulative share of the selected devices, %."
    )
    count: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Cumulative number of devices."
    )
    soak_s: float = Field(
        default=0.0, ge=0, le=MAX_DURATION_S, description="Seconds after passing before the next."
    )
    success_threshold: Share | None = Field(
        default=None,
        description="Share that must succeed; null = 1 − the phase's failure limit (1.0 "
        "when there is none).",
    )
    max_failure_rate: Share | None = Field(default=None, description="Overrides the default.")


class DeploymentCreate(Request):
    release: ReleaseRef
    selector: SelectorIn = Field(default_factory=SelectorIn)
    phases: list[PhaseIn] = Field(
        default_factory=lambda: [PhaseIn(percent=100)], min_length=1, max_length=100
    )
    max_failure_rate: Share | None = Field(
        default=None, description="Failure share above which a phase aborts the deployment."
    )


class PhaseOut(Response):
    index: int
    percent: float | None
    count: int | None
    soak_s: float
    success_threshold: float = Field(description="The share that must succeed, in effect.")
    max_failure_rate: float | None
    devices: int = Field(description="Devices assigned to this phase.")
    counts: dict[DeviceStatus, int] = Field(description="Devices per status.")
    opened_at: datetime | None
    passed_at: datetime | None


class DeploymentOut(Response):
    id: int
    status: RolloutStatus
    reason: str | None
    release: ReleaseOut
    selector: dict[str, Any]
    max_failure_rate: float | None
    device_count: int
    open_phase: int
    phases: list[PhaseOut]
    created_at: datetime
    created_by: str
    updated_at: datetime


class DeploymentList(Response):
    deployments: list[DeploymentOut]


class InstalledOut(Response):
    name: str
    version: str
    sha256: str | None


class HistoryOut(Response):
    at: datetime
    event: str
    name: str | None
    version: str | None
    sha256: str | None
    release_id: int | None
    deployment_id: int | None


class DeviceOut(Response):
    id: str
    hardware: str
    tags: dict[str, str]
    status: str
    installed: InstalledOut | None
    installed_release_id: int | None
    previous_release_id: int | None
    enrolled_at: datetime
    last_seen: datetime | None
    health: dict[str, Any] | None
    slot: dict[str, Any] | None


class DeviceDetail(DeviceOut):
    history: list[HistoryOut] = Field(description="Installed-release changes, newest first.")


class DeviceList(Response):
    devices: list[DeviceOut]
    next_after: str | None = Field(description="Pass as ?after= for the next page; null at end.")


class CommandCreate(Request):
    kind: CommandKind
    args: dict[str, Any] = Field(default_factory=dict)


class CommandOut(Response):
    id: int
    device_id: str
    kind: str
    args: dict[str, Any]
    status: str
    created_at: datetime
    created_by: str
    sent_at: datetime | None
    completed_at: datetime | None
    ok: bool | None
    output: dict[str, Any] | None


class CommandsOut(Response):
    commands: list[CommandOut]


class LogLineOut(Response):
    id: int = Field(description="Storage order; the paging cursor.")
    device_id: str
    t: datetime = Field(description="When the device logged it (its clock, UTC).")
    level: LogLevel
    message: str


class LogPage(Response):
    logs: list[LogLineOut]
    next: int | None = Field(
        description="Pass as ?before_id= (order=newest) or ?after_id= (order=oldest) for the "
        "next page; null when this page was the last."
    )


class EnrollmentTokenCreate(Request):
    name: Name = Field(description="A label, e.g. the site or batch.")
    expires_in_s: float | None = Field(
        default=None, gt=0, le=MAX_DURATION_S, description="Lifetime; null for no expiry."
    )
    max_uses: int | None = Field(default=None, ge=1, le=MAX_ID, description="Enrollments allowed.")


class EnrollmentTokenOut(Response):
    id: int
    name: str
    token: str = Field(description="The enrollment token, shown once.")
    expires_at: datetime | None
    max_uses: int | None


class TokenCreate(Request):
    name: Name
    role: Role


class TokenCreated(Response):
    id: int
    name: str
    role: Role
    token: str = Field(description="The API token, shown once.")
    created_at: datetime


class TokenOut(Response):
    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class TokenList(Response):
    tokens: list[TokenOut]


class TrustedKeyCreate(Request):
    name: Name
    public_key_pem: Text4k = Field(description="Ed25519 public key, SubjectPublicKeyInfo PEM.")


class TrustedKeyOut(Response):
    key_id: str
    name: str
    added_at: datetime
    added_by: str


class TrustedKeyList(Response):
    keys: list[TrustedKeyOut]


class AuditOut(Response):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditList(Response):
    records: list[AuditOut]


class HealthOut(Response):
    status: Literal["ok"]
