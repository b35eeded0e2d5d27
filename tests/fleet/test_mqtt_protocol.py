"""The device protocol over MQTT against an in-process fleet server and the real Mosquitto:
every operation through the agent's `MqttTransport`, the same answers and errors as HTTP,
malformed and forbidden requests, duplicate deliveries, notifications."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_mqtt_support import (
    MESSAGE_TIMEOUT_S,
    RawClient,
    bridged,
    new_prefix,
    require_broker,
)

from tinyops.fleet.agent.clock import ManualClock
from tinyops.fleet.agent.http import HttpTransport
from tinyops.fleet.agent.messages import (
    CheckinRequest,
    CommandResult,
    EnrollRequest,
    Health,
    InstalledRef,
    SlotReport,
    StatusReport,
    TelemetryBatch,
    TelemetryPoint,
)
from tinyops.fleet.agent.transport import TransportError
from tinyops.fleet.mqtt.session import MqttSession
from tinyops.fleet.mqtt.topics import Broker, Topics, parse_broker_url
from tinyops.fleet.mqtt.transport import MqttTransport, WakeableClock

pytestmark = pytest.mark.anyio

BuildBundle = Callable[..., Path]
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
CHECKIN = CheckinRequest(
    installed=None,
    slot=SlotReport(active=None, state="committed"),
    health=Health(uptime_s=10, resets=0, free_memory_bytes=80_000),
)


@asynccontextmanager
async def device_over_mqtt(
    fleet: Any, prefix: str, device_id: str, clock: WakeableClock | None = None
) -> AsyncIterator[MqttTransport]:
    """The agent's transport for `device_id`: MQTT, downloads over the fleet's HTTP."""
    session = MqttSession(parse_broker_url(require_broker()), Topics(prefix))
    http = HttpTransport("http://fleet", client=fleet.client)
    transport = MqttTransport(session, device_id, http=http, clock=clock, timeout_s=15.0)
    try:
        yield transport
    finally:
        await transport.aclose()
        await session.aclose()


def enroll_request(etk: str, device_id: str, **extra: Any) -> EnrollRequest:
    return EnrollRequest(
        enrollment_token=etk,
        device_id=device_id,
        hardware="nano33ble",
        tags={"group": "lab"},
        **extra,
    )


async def test_every_operation_over_mqtt_changes_what_http_would(fleet: Any) -> None:
    prefix = new_prefix()
    etk = await fleet.enrollment_token()
    async with bridged(fleet, prefix), device_over_mqtt(fleet, prefix, "nano-1") as device:
        enrolled = await device.enroll(enroll_request(etk, "nano-1"))
        assert enrolled.device_id == "nano-1" and enrolled.device_token.startswith("dev_")
        assert enrolled.poll_interval_s == 300.0
        device.authenticate(enrolled.device_token)

        answer = await device.checkin(CHECKIN)
        assert (answer.action, answer.poll_interval_s) == ("none", 300.0)
        await fleet.runtime.flush()
        record = (await fleet.client.get("/api/v1/devices/nano-1", headers=fleet.admin)).json()
        assert record["health"] == {"uptime_s": 10, "resets": 0, "free_memory_bytes": 80_000}
        assert record["slot"] == {"active": None, "state": "committed"}
        assert record["last_seen"] is not None

        points = [TelemetryPoint(t=NOW, metric="temperature_c", value=41.5)]
        ack = await device.send_telemetry(TelemetryBatch(points=points))
        assert (ack.accepted, ack.logs) == (1, 0)
        stored = fleet.runtime.store.telemetry("nano-1", "temperature_c")
        assert [(p.t, p.value) for p in stored] == [(NOW, 41.5)]

        created = await fleet.client.post(
            "/api/v1/devices/nano-1/commands",
            json={"kind": "fetch_logs", "args": {"lines": 20}},
            headers=fleet.admin,
        )
        assert created.status_code == 201, created.text
        command_id = created.json()["id"]
        commands = await device.fetch_commands()
        assert [(c.id, c.kind, c.args) for c in commands] == [
            (command_id, "fetch_logs", {"lines": 20})
        ]
        assert await device.fetch_commands() == []  # handed out once
        await device.send_command_result(command_id, CommandResult(ok=True, output={"n": 1}))
        with pytest.raises(TransportError) as twice:
            await device.send_command_result(command_id, CommandResult(ok=True))
        assert (twice.value.status, twice.value.code, twice.value.retryable) == (
            409,
            "conflict",
            False,
        )
        history = (
            await fleet.client.get("/api/v1/devices/nano-1/commands", headers=fleet.admin)
        ).json()["commands"]
        assert (history[0]["status"], history[0]["output"]) == ("done", {"n": 1})

        # Re-enrolling rotates the token: the old one is refused with 401, as over HTTP.
        again = await device.enroll(enroll_request(etk, "nano-1"))
        with pytest.raises(TransportError) as stale:
            await device.checkin(CHECKIN)
        assert (stale.value.status, stale.value.code) == (401, "unauthorized")
        device.authenticate(again.device_token)
        assert (await device.checkin(CHECKIN)).action == "none"

    audit = (
        await fleet.client.get("/api/v1/audit?target=device:nano-1", headers=fleet.admin)
    ).json()["records"]
    actions = [r["action"] for r in audit]
    assert actions.count("device.enroll") == 2
    assert "command.result" in actions and all(r["actor"] for r in audit)


async def test_an_update_over_mqtt_notified_downloaded_over_http_and_reported(
    fleet: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    await fleet.trust(release_key)
    path = build_bundle("1.1.0")
    assert (await fleet.upload(path)).status_code == 201
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    prefix = new_prefix()
    etk = await fleet.enrollment_token()
    clock = WakeableClock(ManualClock(NOW), spread_s=0.0)
    async with (
        bridged(fleet, prefix) as bridge,
        device_over_mqtt(fleet, prefix, "nano-1", clock) as device,
    ):
        device.authenticate((await device.enroll(enroll_request(etk, "nano-1"))).device_token)
        assert (await device.checkin(CHECKIN)).action == "none"
        assert bridge.notify_changes() == []
        # The device waits for its next poll (virtual time: only a notification ends it).
        waiting = asyncio.ensure_future(clock.sleep(300.0))
        deployed = await fleet.deploy(
            {"name": "kws", "version": "1.1.0", "target": "nano33ble"},
            selector={"tags": {"group": "lab"}},
        )
        assert deployed.status_code == 201, deployed.text
        deployment_id = deployed.json()["id"]
        assert bridge.notify_changes() == ["nano-1"]
        await asyncio.wait_for(waiting, MESSAGE_TIMEOUT_S)
        assert bridge.notify_changes() == []  # once per change

        offer = await device.checkin(CHECKIN)
        assert offer.action == "update" and offer.deployment_id == deployment_id
        assert offer.release is not None and offer.release.sha256 == sha
        assert offer.poll_interval_s == 60.0

        class Sink:
            data = bytearray()

            def restart(self, offset: int) -> None:
                del self.data[offset:]

            def write(self, chunk: bytes) -> None:
                self.data += chunk

        sink = Sink()
        await device.download(offer.release.url, 0, sink)
        assert hashlib.sha256(sink.data).hexdigest() == sha

        for status in ("downloading", "downloaded", "installing", "trial"):
            await device.report_status(deployment_id, StatusReport(status=status))
        with pytest.raises(TransportError) as early:
            await device.report_status(deployment_id, StatusReport(status="rolled-back"))
        error = early.value
        assert (error.status, error.code, error.field, error.retryable) == (
            409,
            "invalid-transition",
            "status",
            False,
        )
        await device.report_status(deployment_id, StatusReport(status="success", version="1.1.0"))
        running = InstalledRef(name="kws", version="1.1.0", sha256=sha)
        assert (await device.checkin(CHECKIN.model_copy(update={"installed": running}))).action == (
            "none"
        )

    state = await fleet.deployment(deployment_id)
    assert state["status"] == "succeeded"
    assert state["phases"][0]["counts"]["success"] == 1
    record = (await fleet.client.get("/api/v1/devices/nano-1", headers=fleet.admin)).json()
    assert record["installed"] == {"name": "kws", "version": "1.1.0", "sha256": sha}


async def test_malformed_and_foreign_requests_get_error_replies(fleet: Any) -> None:
    prefix = new_prefix()
    a = await fleet.enroll("nano-a")
    await fleet.enroll("nano-b")
    token_a = a["Authorization"].removeprefix("Bearer ")
    checkin = {"health": {"uptime_s": 1, "resets": 0}}
    async with bridged(fleet, prefix):
        with RawClient(prefix) as raw:
            res = f"{prefix}/dev/nano-a/res"

            async def error_of(
                device_id: str, op: str, payload: bytes | dict[str, Any]
            ) -> tuple[str, Any, int, dict[str, Any]]:
                topic, reply = await raw.ask(device_id, op, payload)
                return topic, reply["request_id"], reply["status"], reply["body"]["error"]

            topic, rid, status, error = await error_of("nano-a", "checkin", b"{not json")
            assert (topic, rid, status, error["code"]) == (
                f"{res}/checkin",
                None,
                400,
                "malformed-json",
            )
            assert "at byte 1" in error["message"]

            _, rid, status, error = await error_of("nano-a", "checkin", b"[1, 2]")
            assert (rid, status, error["code"]) == (None, 422, "invalid")

            _, rid, status, error = await error_of(
                "nano-a", "checkin", {"token": token_a, "body": checkin}
            )
            assert (rid, status, error["field"]) == (None, 422, "request_id")

            topic, rid, status, error = await error_of(
                "nano-a", "reboot_now", {"request_id": "r1", "token": token_a}
            )
            assert (topic, rid, status, error["code"]) == (
                f"{res}/reboot_now",
                "r1",
                404,
                "not-found",
            )
            assert "checkin" in error["message"]

            # Device a's token on device b's topics: refused, and nothing changes for either.
            topic, rid, status, error = await error_of(
                "nano-b", "checkin", {"request_id": "r2", "token": token_a, "body": checkin}
            )
            assert (topic, rid, status, error["code"]) == (
                f"{prefix}/dev/nano-b/res/checkin",
                "r2",
                403,
                "forbidden",
            )
            assert "nano-a" in error["message"] and "nano-b" in error["message"]

            _, rid, status, error = await error_of(
                "nano-a", "checkin", {"request_id": "r3", "token": "dev_" + "x" * 43}
            )
            assert (rid, status, error["code"]) == ("r3", 401, "unauthorized")
            _, _, status, error = await error_of(
                "nano-a", "telemetry", {"request_id": "r4", "body": {}}
            )
            assert (status, error["code"]) == (401, "unauthorized")

            _, _, status, error = await error_of(
                "nano-a",
                "enroll",
                {
                    "request_id": "r5",
                    "body": {
                        "enrollment_token": await fleet.enrollment_token(),
                        "device_id": "nano-c",
                        "hardware": "nano33ble",
                    },
                },
            )
            assert (status, error["code"]) == (403, "forbidden")

            _, _, status, error = await error_of(
                "nano-a", "command_result", {"request_id": "r6", "token": token_a, "body": {}}
            )
            assert (status, error["field"]) == (422, "command_id")
            _, _, status, error = await error_of(
                "nano-a",
                "checkin",
                {"request_id": "r7", "token": token_a, "body": checkin, "deployment_id": 3},
            )
            assert (status, error["field"]) == (422, "deployment_id")
            _, _, status, error = await error_of(
                "nano-a", "checkin", {"request_id": "r8", "token": token_a, "extra": 1}
            )
            assert (status, error["field"]) == (422, "extra")

            huge = json.dumps({"request_id": "r9", "pad": "x" * (1 << 20)}).encode()
            _, _, status, error = await error_of("nano-a", "checkin", huge)
            assert (status, error["code"]) == (413, "body-too-large")

            # Still serving, and the foreign check-in left no trace on either device.
            _, reply = await raw.ask(
                "nano-a", "checkin", {"request_id": "ok", "token": token_a, "body": checkin}
            )
            assert (reply["request_id"], reply["status"]) == ("ok", 200)
            assert reply["body"]["action"] == "none"
    await fleet.runtime.flush()
    record_a = (await fleet.client.get("/api/v1/devices/nano-a", headers=fleet.admin)).json()
    record_b = (await fleet.client.get("/api/v1/devices/nano-b", headers=fleet.admin)).json()
    assert record_a["health"] == {"uptime_s": 1, "resets": 0, "free_memory_bytes": None}
    assert (record_b["health"], record_b["last_seen"]) == (None, None)


# (op, request fields over MQTT, HTTP method and path, HTTP body) for refusals that must be
# the same error over both transports. {cmd} is a command of device a.
SAME_ERRORS: list[tuple[str, dict[str, Any], str, str, Any]] = [
    (
        "checkin",
        {"body": {"health": {"uptime_s": "long", "resets": 0}}},
        "POST",
        "/api/v1/device/checkin",
        {"health": {"uptime_s": "long", "resets": 0}},
    ),
    (
        "telemetry",
        {"body": {"points": [{"t": "2026-11-27T10:00:00Z", "metric": "joy", "value": 1}]}},
        "POST",
        "/api/v1/device/telemetry",
        {"points": [{"t": "2026-11-27T10:00:00Z", "metric": "joy", "value": 1}]},
    ),
    (
        "status",
        {"deployment_id": 999, "body": {"status": "downloading"}},
        "POST",
        "/api/v1/device/deployments/999/status",
        {"status": "downloading"},
    ),
    (
        "status",
        {"deployment_id": 1, "body": {"status": "paused"}},
        "POST",
        "/api/v1/device/deployments/1/status",
        {"status": "paused"},
    ),
    (
        "command_result",
        {"command_id": 424242, "body": {"ok": True}},
        "POST",
        "/api/v1/device/commands/424242/result",
        {"ok": True},
    ),
    (
        "command_result",
        {"command_id": "{cmd}", "body": {"ok": "yes please"}},
        "POST",
        "/api/v1/device/commands/{cmd}/result",
        {"ok": "yes please"},
    ),
    (
        "checkin",
        {"body": {"installed": {"name": "kws", "version": "1.0.0", "bogus": 1}}},
        "POST",
        "/api/v1/device/checkin",
        {"installed": {"name": "kws", "version": "1.0.0", "bogus": 1}},
    ),
]


async def test_refusals_are_the_same_errors_as_over_http(fleet: Any) -> None:
    prefix = new_prefix()
    a = await fleet.enroll("nano-a")
    await fleet.enroll("nano-b")
    token_a = a["Authorization"].removeprefix("Bearer ")
    created = await fleet.client.post(
        "/api/v1/devices/nano-b/commands", json={"kind": "reboot"}, headers=fleet.admin
    )
    command_of_b = created.json()["id"]
    cases = [*SAME_ERRORS]
    # A command of another device (403), and enrollments with a bad hardware id (422) and
    # a token that is no enrollment token (401).
    cases.append(
        (
            "command_result",
            {"command_id": command_of_b, "body": {"ok": True}},
            "POST",
            f"/api/v1/device/commands/{command_of_b}/result",
            {"ok": True},
        )
    )
    for etk in (await fleet.enrollment_token(), "etk_nope"):
        enroll = {"enrollment_token": etk, "device_id": "nano-a", "hardware": "toaster"}
        if etk == "etk_nope":
            enroll["hardware"] = "nano33ble"
        cases.append(("enroll", {"body": enroll}, "POST", "/api/v1/device/enroll", enroll))
    async with bridged(fleet, prefix):
        with RawClient(prefix) as raw:
            for i, (op, fields, method, path, body) in enumerate(cases):
                fields = {k: (command_of_b if v == "{cmd}" else v) for k, v in fields.items()}
                path = path.replace("{cmd}", str(command_of_b))
                headers = {} if op == "enroll" else {"Authorization": a["Authorization"]}
                http = await fleet.client.request(method, path, json=body, headers=headers)
                token = {} if op == "enroll" else {"token": token_a}
                _, reply = await raw.ask("nano-a", op, {"request_id": f"q{i}", **token, **fields})
                assert http.status_code >= 400, (op, http.text)
                assert (reply["status"], reply["body"]) == (http.status_code, http.json()), op


async def test_a_duplicate_delivery_is_handled_once(fleet: Any) -> None:
    prefix = new_prefix()
    device = await fleet.enroll("nano-1")
    token = device["Authorization"].removeprefix("Bearer ")
    created = await fleet.client.post(
        "/api/v1/devices/nano-1/commands", json={"kind": "reboot"}, headers=fleet.admin
    )
    command_id = created.json()["id"]
    result = {"request_id": "dup-1", "token": token, "command_id": command_id}
    result["body"] = {"ok": True, "output": {}}
    async with bridged(fleet, prefix):
        with RawClient(prefix) as raw:
            _, first = await raw.ask("nano-1", "command_result", result)
            _, copy = await raw.ask("nano-1", "command_result", result)
            _, fresh = await raw.ask("nano-1", "command_result", {**result, "request_id": "dup-2"})
    # The copy gets the first answer (a second handling would be a 409: a result is taken
    # once); a new request id is a new request.
    assert first == copy == {"request_id": "dup-1", "status": 204, "body": None}
    assert (fresh["status"], fresh["body"]["error"]["code"]) == (409, "conflict")


async def test_the_app_serves_mqtt_when_configured(fleet_runner: Any) -> None:
    prefix = new_prefix()
    _settings, context = fleet_runner(mqtt_url=require_broker(), mqtt_prefix=prefix)
    async with context as fleet:
        device = await fleet.enroll("nano-1")
        token = device["Authorization"].removeprefix("Bearer ")
        with RawClient(prefix) as raw:
            _, reply = await raw.ask("nano-1", "commands", {"request_id": "c1", "token": token})
    assert reply == {"request_id": "c1", "status": 200, "body": {"commands": []}}


async def test_an_unreachable_broker_is_a_retryable_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        session = MqttSession(Broker("127.0.0.1", port), Topics("tinyops"), connect_timeout_s=5)
        with pytest.raises(TransportError) as refused:
            await session.ensure_connected()
        assert refused.value.retryable and f"127.0.0.1:{port}" in str(refused.value)
        transport = MqttTransport(session, "nano-1", http=HttpTransport("http://127.0.0.1:9"))
        with pytest.raises(TransportError) as again:
            await transport.checkin(CHECKIN)
        assert again.value.retryable and again.value.status is None
        await transport.aclose()
        await session.aclose()
