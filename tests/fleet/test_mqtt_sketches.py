"""Drift sketches over MQTT: `MqttTransport.send_sketch` against the real Mosquitto.

First the transport against an in-process fleet (real store, real bridge): a sketch is
stored and acknowledged with its window id, a retry gets the same id, and a refusal is
the same `TransportError` (status, code, field, not retryable) that HTTP gives for the
same body. Then the simulator's MQTT mode with a drift fault against a real server
process started with `--mqtt`: every sketch goes over MQTT (the HTTP device API sees
none) and the drift API names exactly the drifted device and feature.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drift_testlib import (
    HOUR,
    T0,
    bundle_with_profile,
    installed,
    reference_profile,
    release_with_profile_on,
    sketch,
)
from fleet_process import Server
from test_mqtt_rollout import device_requests
from test_mqtt_support import MESSAGE_TIMEOUT_S, bridged, new_prefix, require_broker

from tinyops.fleet.agent.http import HttpTransport
from tinyops.fleet.agent.transport import TransportError
from tinyops.fleet.mqtt.session import MqttSession
from tinyops.fleet.mqtt.topics import Topics, parse_broker_url
from tinyops.fleet.mqtt.transport import MqttTransport
from tinyops.fleet.simulator import DriftFault, Faults, FleetSimulator, deployment_settled

Payload = tuple[dict[str, bytes], dict[str, Any]]


@pytest.mark.anyio
async def test_a_sketch_over_mqtt_is_stored_and_refused_as_over_http(
    fleet: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    prefix = new_prefix()
    await fleet.trust(release_key)
    r = await fleet.upload(bundle_with_profile(tmp_path / "b", kws_payload, release_key))
    assert r.status_code == 201, r.text
    headers = await fleet.enroll("nano-1", installed=installed())
    token = headers["Authorization"].removeprefix("Bearer ")
    profile = reference_profile()
    body = sketch(profile, T0, seed=3)
    other = copy.deepcopy(body)
    other["histograms"]["features"]["f0"][0] += 1
    other["histograms"]["features"]["f0"][1] -= 1

    async with bridged(fleet, prefix):
        session = MqttSession(parse_broker_url(require_broker()), Topics(prefix))
        http = HttpTransport("http://fleet", client=fleet.client, device_token=token)
        mqtt = MqttTransport(
            session,
            "nano-1",
            http=HttpTransport("http://fleet", client=fleet.client),
            device_token=token,
            timeout_s=MESSAGE_TIMEOUT_S,
        )
        try:
            ack = await mqtt.send_sketch(body)
            assert ack.accepted and ack.window_id >= 1
            # A retry whose answer was lost: the same window, stored once.
            assert (await mqtt.send_sketch(body)).window_id == ack.window_id
            # The same window with other counts: refused alike on both transports.
            with pytest.raises(TransportError) as over_mqtt:
                await mqtt.send_sketch(other)
            with pytest.raises(TransportError) as over_http:
                await http.send_sketch(other)
            # A sketch for a release the device does not run: 409 on both, naming 'release'.
            wrong = sketch(profile, T0, version="9.9.9")
            with pytest.raises(TransportError) as wrong_mqtt:
                await mqtt.send_sketch(wrong)
            with pytest.raises(TransportError) as wrong_http:
                await http.send_sketch(wrong)
        finally:
            await mqtt.aclose()
            await session.aclose()
    for a, b in ((over_mqtt.value, over_http.value), (wrong_mqtt.value, wrong_http.value)):
        assert (a.status, a.code, a.field, a.retryable) == (b.status, b.code, b.field, False)
    assert over_mqtt.value.status == 409 and over_mqtt.value.field == "window.start"
    assert wrong_mqtt.value.code == "release-not-installed"
    rows = fleet.runtime.store.drift.windows([1], T0 - HOUR, T0 + 2 * HOUR)
    assert [(w.id, w.count) for w in rows] == [(ack.window_id, body["count"])]


DEVICES = 3
DRIFTED = "sim-000001"
PER_DEVICE = 1500  # inferences each device must have sketched before the verdict


def test_the_simulator_over_mqtt_sends_sketches_that_show_the_drift(
    tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    broker, prefix = require_broker(), new_prefix()
    server = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        extra_args=["--poll-interval", "0.3", "--update-poll-interval", "0.3",
                    "--mqtt", broker, "--mqtt-prefix", prefix],
    )  # fmt: skip
    try:
        token = server.start(init=True)
        assert token is not None
        url, headers = server.url, {"Authorization": f"Bearer {token}"}

        def api(method: str, path: str, **kwargs: Any) -> Any:
            r = httpx.request(method, url + path, headers=headers, timeout=30, **kwargs)
            assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
            return r.json() if r.content else None

        etk = release_with_profile_on(api, tmp_path / "b", kws_payload, release_key)
        sim = FleetSimulator(
            url,
            etk,
            DEVICES,
            hardware="nano33ble",
            trusted_keys=[release_key.public_key()],
            tags={"group": "lab"},
            faults=Faults(drift=(DriftFault({"f1": 1.5}, devices=frozenset({DRIFTED})),)),
            seed=4,
            poll_interval_s=0.3,
            inferences_per_poll=300,
            sketch_window_s=1.0,
            transport="mqtt",
            mqtt_url=broker,
            mqtt_prefix=prefix,
        )

        async def scenario() -> dict[str, Any]:
            async def call(method: str, path: str, **kwargs: Any) -> Any:
                return await asyncio.to_thread(api, method, path, **kwargs)

            async def enrolled(_sim: FleetSimulator) -> bool:
                page = await call("GET", "/api/v1/devices", params={"limit": 100})
                return len(page["devices"]) == DEVICES

            async def sketched(_sim: FleetSimulator) -> bool:
                page = await call("GET", "/api/v1/drift/devices", params={"release": "kws@1.0.0"})
                counts = {d["device"]: d["count"] for d in page["devices"]}
                return len(counts) == DEVICES and min(counts.values()) >= PER_DEVICE

            async with sim:
                await sim.wait(enrolled, timeout_s=60)
                deploy = {
                    "release": {"name": "kws", "version": "1.0.0", "target": "nano33ble"},
                    "selector": {"tags": {"group": "lab"}},
                    "phases": [{"percent": 100}],
                }
                deployment = int((await call("POST", "/api/v1/deployments", json=deploy))["id"])
                await sim.wait(deployment_settled(url, token, deployment), timeout_s=120)
                await sim.wait(sketched, timeout_s=120)
            page: dict[str, Any] = await call(
                "GET", "/api/v1/drift/devices", params={"release": "kws@1.0.0"}
            )
            return page

        page = asyncio.run(scenario())
        mqtt, http = device_requests(server.url, token)
    finally:
        server.stop()
    verdicts = {d["device"]: d["drifted_features"] for d in page["devices"]}
    assert verdicts == {f"sim-{i:06d}": (["f1"] if i == 1 else []) for i in range(DEVICES)}
    # Every sketch (and every other device request) went over MQTT.
    windows = sum(d["windows"] for d in page["devices"])
    assert mqtt["sketches"] >= windows >= DEVICES
    assert http == 0
