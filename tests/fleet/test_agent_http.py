"""HttpTransport against a real HTTP server on 127.0.0.1 (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from test_agent_support import NOW, SERVER_KEY, LiveServer, serve_stub

from tinyops.fleet.agent.http import HttpTransport
from tinyops.fleet.agent.messages import (
    CheckinRequest,
    CommandResult,
    EnrollRequest,
    Health,
    SlotReport,
    StatusReport,
    TelemetryBatch,
    TelemetryPoint,
)
from tinyops.fleet.agent.transport import TransportError
from tinyops.security.rollback import public_key_to_b64

T = TypeVar("T")
PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


@pytest.fixture
def live_server() -> Iterator[LiveServer]:
    with serve_stub() as server:
        yield server


class Sink:
    """Collects a download the way the agent's sink does: restart(offset), then writes."""

    def __init__(self, kept: bytes = b"") -> None:
        self.data = bytearray(kept)
        self.restarts: list[int] = []

    def restart(self, offset: int) -> None:
        self.restarts.append(offset)
        del self.data[offset:]

    def write(self, chunk: bytes) -> None:
        self.data += chunk


def with_transport(server: LiveServer, use: Callable[[HttpTransport], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = HttpTransport(server.url)
        try:
            return await use(transport)
        finally:
            await transport.aclose()

    return asyncio.run(main())


async def enrolled(transport: HttpTransport, server: LiveServer) -> str:
    answer = await transport.enroll(
        EnrollRequest(
            enrollment_token=server.stub.enrollment_token,
            device_id="pi-1",
            hardware="rpi4",
            tags={"group": "lab"},
        )
    )
    transport.authenticate(answer.device_token)
    return answer.device_token


def checkin_body() -> CheckinRequest:
    return CheckinRequest(
        installed=None,
        slot=SlotReport(active=None, state="committed"),
        health=Health(uptime_s=5, resets=0, free_memory_bytes=1024),
    )


def test_enroll_and_checkin_follow_the_protocol(live_server: LiveServer) -> None:
    async def use(transport: HttpTransport) -> None:
        token = await enrolled(transport, live_server)
        assert token.startswith("dev_")
        answer = await transport.checkin(checkin_body())
        assert (answer.action, answer.poll_interval_s) == ("none", 60)

    with_transport(live_server, use)
    (enrollment,) = live_server.stub.enrollments
    assert enrollment == {
        "enrollment_token": live_server.stub.enrollment_token,
        "device_id": "pi-1",
        "hardware": "rpi4",
        "tags": {"group": "lab"},
        "public_key": None,
        "installed": None,
    }
    assert live_server.stub.checkins == [
        {
            "installed": None,
            "slot": {"active": None, "state": "committed"},
            "health": {"uptime_s": 5, "resets": 0, "free_memory_bytes": 1024},
        }
    ]


def test_error_bodies_become_transport_errors(live_server: LiveServer) -> None:
    live_server.stub.failures = [503, 422]

    async def use(transport: HttpTransport) -> list[TransportError]:
        errors = []
        with pytest.raises(TransportError) as unauthenticated:
            await transport.checkin(checkin_body())
        errors.append(unauthenticated.value)
        await enrolled(transport, live_server)
        for _ in range(2):
            with pytest.raises(TransportError) as failed:
                await transport.checkin(checkin_body())
            errors.append(failed.value)
        return errors

    unauthorized, unavailable, unprocessable = with_transport(live_server, use)
    assert (unauthorized.status, unauthorized.code, unauthorized.retryable) == (
        401,
        "unauthorized",
        False,
    )
    assert "device token missing or not valid" in str(unauthorized)
    assert (unavailable.status, unavailable.retryable) == (503, True)
    assert (unprocessable.status, unprocessable.retryable) == (422, False)
    assert str(unprocessable).startswith("POST /api/v1/device/checkin: HTTP 422 unavailable")


def test_unreachable_server_is_retryable() -> None:
    async def main() -> None:
        transport = HttpTransport("http://127.0.0.1:9")
        try:
            await transport.checkin(checkin_body())
        finally:
            await transport.aclose()

    with pytest.raises(TransportError, match="ConnectError") as caught:
        asyncio.run(main())
    assert caught.value.retryable and caught.value.status is None


def test_download_resumes_with_range_after_a_dropped_connection(live_server: LiveServer) -> None:
    stub = live_server.stub
    stub.artifacts[5] = PAYLOAD
    stub.drop_after = [30_000]
    sink = Sink()

    async def use(transport: HttpTransport) -> None:
        await enrolled(transport, live_server)
        with pytest.raises(TransportError, match="download interrupted") as caught:
            await transport.download("/api/v1/device/artifacts/5", 0, sink)
        assert caught.value.retryable
        kept = len(sink.data)
        assert 0 < kept < len(PAYLOAD)
        await transport.download("/api/v1/device/artifacts/5", kept, sink)

    with_transport(live_server, use)
    assert bytes(sink.data) == PAYLOAD
    assert stub.ranges[0] is None
    assert stub.ranges[1] == f"bytes={sink.restarts[1]}-"
    assert sink.restarts[0] == 0 and sink.restarts[1] > 0


def test_download_restarts_when_the_server_ignores_range(live_server: LiveServer) -> None:
    stub = live_server.stub
    stub.artifacts[5] = PAYLOAD
    stub.ignore_range = True
    sink = Sink(kept=b"stale bytes")

    async def use(transport: HttpTransport) -> None:
        await enrolled(transport, live_server)
        await transport.download("/api/v1/device/artifacts/5", 11, sink)

    with_transport(live_server, use)
    assert sink.restarts == [0]
    assert bytes(sink.data) == PAYLOAD


def test_download_past_the_end_is_a_416(live_server: LiveServer) -> None:
    live_server.stub.artifacts[5] = PAYLOAD

    async def use(transport: HttpTransport) -> None:
        await enrolled(transport, live_server)
        await transport.download("/api/v1/device/artifacts/5", len(PAYLOAD), Sink(PAYLOAD))

    with pytest.raises(TransportError, match="HTTP 416") as caught:
        with_transport(live_server, use)
    assert caught.value.status == 416 and not caught.value.retryable


def test_reports_telemetry_and_commands(live_server: LiveServer) -> None:
    stub = live_server.stub
    stub.commands["pi-1"] = [{"id": 3, "kind": "report_inventory", "args": {}}]

    async def use(transport: HttpTransport) -> None:
        await enrolled(transport, live_server)
        await transport.report_status(17, StatusReport(status="downloading", version="1.2.0"))
        with pytest.raises(TransportError, match="409 invalid_transition") as caught:
            await transport.report_status(17, StatusReport(status="success", version="1.2.0"))
        assert not caught.value.retryable
        point = TelemetryPoint(t=NOW, metric="uptime_s", value=5.0)
        ack = await transport.send_telemetry(TelemetryBatch(points=[point], logs=[]))
        assert (ack.accepted, ack.logs) == (1, 0)
        (command,) = await transport.fetch_commands()
        assert (command.id, command.kind) == (3, "report_inventory")
        await transport.send_command_result(3, CommandResult(ok=True, output={"x": 1}))

    with_transport(live_server, use)
    assert stub.reports == [(17, {"status": "downloading", "reason": None, "version": "1.2.0"})]
    assert stub.telemetry == [
        {"points": [{"t": "2026-11-27T10:00:00Z", "metric": "uptime_s", "value": 5.0}], "logs": []}
    ]
    assert stub.results == [(3, {"ok": True, "output": {"x": 1}})]


def test_malformed_answer_is_a_retryable_error(live_server: LiveServer) -> None:
    # An update without its release is not a valid check-in answer.
    live_server.stub.answers["pi-1"] = {"action": "update", "poll_interval_s": 60}

    async def use(transport: HttpTransport) -> None:
        await enrolled(transport, live_server)
        await transport.checkin(checkin_body())

    with pytest.raises(TransportError, match="malformed answer") as caught:
        with_transport(live_server, use)
    assert caught.value.retryable


def test_server_key_is_the_raw_key_in_base64(live_server: LiveServer) -> None:
    async def use(transport: HttpTransport) -> str:
        answer = await transport.enroll(
            EnrollRequest(
                enrollment_token=live_server.stub.enrollment_token,
                device_id="pi-9",
                hardware="rpi4",
            )
        )
        return answer.server_key

    assert with_transport(live_server, use) == public_key_to_b64(SERVER_KEY.public_key())
