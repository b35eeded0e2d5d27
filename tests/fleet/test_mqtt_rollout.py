"""HTTP and MQTT pass the same rollout scenario: `scenario` of test_fleet_simulation (200
simulated devices against a real server process: baseline, a four-phase rollout to
success, a bad release aborted in its first phase and rolled back, no device outside that
phase touched) runs here with every device speaking MQTT — the server started with
`--mqtt`, the simulator's devices multiplexed over one broker connection, artifacts over
HTTP. test_fleet_simulation runs it over HTTP."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server
from test_fleet_simulation import DEVICES, Admin, scenario
from test_mqtt_support import new_prefix, require_broker

from tinyops.fleet.agent import run_agent
from tinyops.fleet.simulator import Faults, FleetSimulator

BuildBundle = Callable[..., Path]


@pytest.mark.slow
def test_the_rollout_scenario_passes_over_mqtt(
    tmp_path: Path, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    broker, prefix = require_broker(), new_prefix()
    server = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        extra_args=["--poll-interval", "2", "--update-poll-interval", "1",
                    "--evaluate-interval", "0.2", "--flush-interval", "0.5",
                    "--mqtt", broker, "--mqtt-prefix", prefix],
    )  # fmt: skip
    try:
        token = server.start(init=True)
        assert token is not None
        admin = Admin(server.url, token)
        pem = release_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        admin("POST", "/api/v1/trusted-keys", json={"name": "ci", "public_key_pem": pem.decode()})
        for version in ("1.0.0", "1.1.0", "1.2.0"):
            admin("POST", "/api/v1/releases", content=build_bundle(version).read_bytes())
        etk = admin("POST", "/api/v1/enrollment-tokens", json={"name": "lab"})["token"]
        # The simulation of test_fleet_simulation, over MQTT.
        sim = FleetSimulator(
            server.url,
            etk,
            DEVICES,
            hardware="nano33ble",
            trusted_keys=[release_key.public_key()],
            tags={"group": "lab"},
            faults=Faults(crash=0.5, bad_versions=frozenset({"1.2.0"})),
            seed=7,
            poll_interval_s=2.0,
            transport="mqtt",
            mqtt_url=broker,
            mqtt_prefix=prefix,
        )
        asyncio.run(scenario(sim, admin, token, server.url))
        mqtt, http = device_requests(server.url, token)
    finally:
        server.stop()
    # Every device request went over MQTT: the HTTP device API saw downloads only.
    assert mqtt["checkin"] > DEVICES and mqtt["status"] > DEVICES
    assert http == 0


def test_the_reference_agent_enrolls_and_polls_over_mqtt(
    tmp_path: Path, release_key: Ed25519PrivateKey
) -> None:
    broker, prefix = require_broker(), new_prefix()
    server = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        extra_args=["--mqtt", broker, "--mqtt-prefix", prefix],
    )
    try:
        token = server.start(init=True)
        assert token is not None
        admin = Admin(server.url, token)
        etk = admin("POST", "/api/v1/enrollment-tokens", json={"name": "lab"})["token"]
        run_agent(
            server.url,
            etk,
            tmp_path / "agent",
            "nano33ble",
            "nano-1",
            {"group": "lab"},
            trusted_keys=[release_key.public_key()],
            max_polls=1,
            transport="mqtt",
            mqtt_url=broker,
            mqtt_prefix=prefix,
        )
        device = admin("GET", "/api/v1/devices/nano-1")
        mqtt, http = device_requests(server.url, token)
    finally:
        server.stop()
    assert (device["hardware"], device["tags"]) == ("nano33ble", {"group": "lab"})
    assert (mqtt["enroll"], mqtt["checkin"], mqtt["commands"]) == (1, 1, 1)
    assert http == 0
    # The identity it enrolled with is kept for the next start.
    assert "nano-1" in (tmp_path / "agent" / "identity.json").read_text()


def device_requests(url: str, token: str) -> tuple[dict[str, float], float]:
    """Device requests the server answered over MQTT, per op, and over HTTP (downloads
    aside), from its /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).text
    mqtt: dict[str, float] = defaultdict(float)
    http = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "tinyops_mqtt_requests_total":
                mqtt[labels["op"]] += sample.value
            if (
                sample.name == "tinyops_http_request_duration_seconds_count"
                and labels["route"].startswith("/api/v1/device/")
                and "artifacts" not in labels["route"]
            ):
                http += sample.value
    return mqtt, http
