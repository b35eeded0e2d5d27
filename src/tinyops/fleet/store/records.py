"""Plain, immutable values the store returns: never live ORM objects.

A record is read inside one transaction and stays valid after it closes, so the server
can hand it to any thread without lazy loads or detached-instance surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tinyops.fleet.rollout import DeviceStatus, PhaseSpec, RolloutState
from tinyops.security.roles import Role

DeviceState = Literal["active", "updating", "rollback-pending", "decommissioned"]
"""A device's own status: idle (`active`), taking an update (`updating`: the release
reached it and it has not finished), waiting for a rollback, or retired."""
DEVICE_STATES: tuple[DeviceState, ...] = (
    "active",
    "updating",
    "rollback-pending",
    "decommissioned",
)
CommandStatus = Literal["pending", "sent", "done"]
HistoryEvent = Literal["enrolled", "reported", "updated", "rolled-back"]
"""Why a device's installed release changed: stated at enrollment, reported at a check-in,
installed by a deployment, or restored by a rollback."""


@dataclass(frozen=True)
class ApiTokenRecord:
    id: int
    name: str
    role: Role
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


@dataclass(frozen=True)
class EnrollmentTokenRecord:
    id: int
    name: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    max_uses: int | None
    uses: int


@dataclass(frozen=True, slots=True)
class Installed:
    """The release a device says it runs."""

    name: str
    version: str
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    id: str
    hardware: str
    tags: dict[str, str]
    status: DeviceState
    installed: Installed | None
    installed_release_id: int | None
    previous_release_id: int | None
    enrolled_at: datetime
    last_seen: datetime | None
    health: dict[str, Any] | None
    slot: dict[str, Any] | None
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """What the check-in hot path needs to know about a device, kept in memory."""

    device_id: str
    token_hash: str
    hardware: str
    installed: Installed | None


@dataclass(frozen=True, slots=True)
class NewDevice:
    """One device of a bulk enrollment (`Store.enroll_devices`): its token is issued by
    the caller, only the token's hash reaches the store."""

    device_id: str
    hardware: str
    token_hash: str
    tags: dict[str, str] = field(default_factory=dict)
    installed: Installed | None = None


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    event: HistoryEvent
    name: str | None
    version: str | None
    sha256: str | None
    release_id: int | None
    deployment_id: int | None


@dataclass(frozen=True)
class TrustedKeyRecord:
    key_id: str
    name: str
    public_key_pem: str
    added_at: datetime
    added_by: str


@dataclass(frozen=True)
class ReleaseRecord:
    id: int
    name: str
    version: str
    target: str
    sha256: str
    size: int
    """Bytes of the .tinybundle file."""
    key_id: str
    manifest: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    uploaded_at: datetime
    uploaded_by: str


@dataclass(frozen=True)
class Selector:
    """Which devices a deployment targets: all given conditions must hold."""

    tags: dict[str, str] = field(default_factory=dict)
    hardware: str | None = None
    installed_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tags": dict(self.tags),
            "hardware": self.hardware,
            "installed_version": self.installed_version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Selector:
        return cls(
            tags=dict(data.get("tags") or {}),
            hardware=data.get("hardware"),
            installed_version=data.get("installed_version"),
        )


@dataclass(frozen=True)
class DeploymentRecord:
    id: int
    release: ReleaseRecord
    selector: Selector
    phases: tuple[PhaseSpec, ...]
    max_failure_rate: float | None
    device_count: int
    state: RolloutState
    reason: str | None
    """Why it ended (abort, succeed) or the latest decision, in one sentence."""
    created_at: datetime
    created_by: str
    updated_at: datetime
    phase_counts: tuple[dict[DeviceStatus, int], ...] = ()
    """Per phase, devices in each status (filled by `Store.get_deployment`)."""


@dataclass(frozen=True)
class ProgressRecord:
    deployment_id: int
    device_id: str
    phase: int
    status: DeviceStatus
    previous_release_id: int | None
    reason: str | None
    updated_at: datetime


@dataclass(frozen=True)
class PendingAction:
    """What a device's next check-in answers, other than 'none'.

    kind `update`: install `release` for `deployment_id`; kind `rollback`: reinstall
    `release` (the one it had before the deployment) with a server-signed order.
    """

    device_id: str
    deployment_id: int
    kind: Literal["update", "rollback"]
    release: ReleaseRecord


@dataclass(frozen=True)
class CommandRecord:
    id: int
    device_id: str
    kind: str
    args: dict[str, Any]
    status: CommandStatus
    created_at: datetime
    created_by: str
    sent_at: datetime | None
    completed_at: datetime | None
    ok: bool | None
    output: dict[str, Any] | None


@dataclass(frozen=True)
class TelemetryRecord:
    device_id: str
    t: datetime
    metric: str
    value: float


@dataclass(frozen=True)
class LogRecord:
    device_id: str
    t: datetime
    level: str
    message: str


PointRow = tuple[str, datetime, str, float]
"""A telemetry point to store: (device id, UTC-aware time, metric, value)."""
LogRow = tuple[str, datetime, str, str]
"""A device log line to store: (device id, UTC-aware time, level, message)."""


@dataclass(slots=True)
class PreparedRows:
    """Rows already in the form one database takes in bulk (`Store.prepare_points`,
    `prepare_logs`, `prepare_checkins`): opaque to everyone but the store that made
    them. Preparing is pure Python and writing is mostly database work, so the server
    prepares on its event loop and writes in a thread."""

    count: int = 0
    data: list[Any] = field(default_factory=list)

    def add(self, other: PreparedRows) -> None:
        """Append `other`'s rows (prepared by the same store)."""
        self.count += other.count
        self.data += other.data


@dataclass(frozen=True)
class CheckinWrite:
    """One device's latest check-in, written behind the request (batched)."""

    device_id: str
    at: datetime
    health: dict[str, Any] | None
    slot: dict[str, Any] | None


@dataclass(frozen=True)
class ReportOutcome:
    """The result of a device's status report."""

    deployment_id: int
    device_id: str
    before: DeviceStatus
    after: DeviceStatus
    installed: Installed | None = None
    """The release the device's record says it runs, after the report."""


@dataclass(frozen=True)
class EvaluationOutcome:
    """One evaluation of a deployment's rules and what it changed."""

    deployment_id: int
    action: str
    """none, open-phase, abort or succeed."""
    reason: str
    changed: bool
    """Whether the stored rollout state changed (the check-in view must be rebuilt)."""
    rolled_back: tuple[str, ...] = ()
    """Devices set to rollback-pending."""
    stranded: tuple[str, ...] = ()
    """Devices the release reached that have no previous release on the server."""
