"""How the agent talks to the server: one `Transport` per device, protocol-level calls.

A transport turns the calls below into requests of docs/device-protocol.md and answers into
the models of `tinyops.fleet.agent.messages`; `HttpTransport` (tinyops.fleet.agent.http) is
the HTTP one. Every failure is a `TransportError`: `retryable` says whether the same call
may succeed later (network down, timeout, 5xx, 408, 429) or will not (other 4xx: the
server understood and refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from tinyops.errors import TinyopsError
from tinyops.fleet.agent.messages import (
    CheckinRequest,
    CheckinResponse,
    Command,
    CommandResult,
    EnrollRequest,
    EnrollResponse,
    SketchAck,
    StatusReport,
    TelemetryAck,
    TelemetryBatch,
)

# Statuses after which the same request may well succeed: timeout, too early, rate limit.
RETRYABLE_STATUSES = frozenset({408, 425, 429})


class TransportError(TinyopsError):
    """A call to the server failed; `status` is the HTTP status when there was an answer."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code
        self.field = field


def malformed_answer(exc: ValidationError, what: str, status: int | None) -> TransportError:
    """The error for a server answer that does not fit its model: retryable, since a
    malformed answer is the server's bug and may be fixed (or redeployed) later."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
    return TransportError(f"{what}: malformed answer ({problems})", retryable=True, status=status)


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_STATUSES


class DownloadSink(Protocol):
    """Where a download's bytes go; the transport says where the server's bytes start."""

    def restart(self, offset: int) -> None:
        """The bytes that follow start at `offset`: drop anything kept beyond it."""
        ...

    def write(self, chunk: bytes) -> None:
        """The next bytes of the file."""
        ...


class Transport(Protocol):
    def authenticate(self, device_token: str | None) -> None:
        """Use this device token from now on (None: none, before enrollment)."""
        ...

    async def enroll(self, request: EnrollRequest) -> EnrollResponse: ...

    async def checkin(self, request: CheckinRequest) -> CheckinResponse: ...

    async def download(self, url: str, offset: int, sink: DownloadSink) -> None:
        """Fetch the artifact at `url` from byte `offset` on (Range), into `sink`."""
        ...

    async def report_status(self, deployment_id: int, report: StatusReport) -> None: ...

    async def send_telemetry(self, batch: TelemetryBatch) -> TelemetryAck: ...

    async def fetch_commands(self) -> list[Command]: ...

    async def send_command_result(self, command_id: int, result: CommandResult) -> None: ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class SketchTransport(Protocol):
    """A transport that can also deliver drift sketches (tinyops.monitor.sketch bodies).

    Separate from `Transport` so that a transport without it (a custom one) stays valid:
    an agent on one of those keeps no sketches. HTTP and MQTT both have it.
    """

    async def send_sketch(self, body: Mapping[str, Any]) -> SketchAck: ...


__all__ = [
    "RETRYABLE_STATUSES",
    "DownloadSink",
    "SketchTransport",
    "Transport",
    "TransportError",
    "is_retryable_status",
]
