"""Alerts in the server: HardwareSource over the real store (SQLite and PostgreSQL), the
alert loop with a webhook receiver, GET /api/v1/alerts, and /metrics."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server  # tests/fleet is on sys.path (rootdir conftest)

from tinyops.fleet.server.runtime import utcnow
from tinyops.monitor.alerts.rules import RulesError

pytestmark = pytest.mark.anyio

RULES = """
groups:
  - name: hardware
    rules:
      - name: DeviceHot
        metric: device_temperature_celsius
        condition: "> 70"
        annotations: {summary: "{{ $labels.device }} at {{ $value }} °C"}
      - name: LatencyOverBudget
        metric: device_latency_budget_ratio
        condition: "> 1.5"
        for: 10m
        severity: critical
"""


class Receiver:
    """A webhook receiver on 127.0.0.1 collecting JSON bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def _installed(version: str, path: Path) -> dict[str, Any]:
    return {
        "name": "kws",
        "version": version,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


async def _telemetry(fleet: Any, device: dict[str, str], **values: float) -> None:
    at = utcnow().isoformat()
    r = await fleet.client.post(
        "/api/v1/device/telemetry",
        json={"points": [{"t": at, "metric": k, "value": v} for k, v in values.items()]},
        headers={"Authorization": device["Authorization"]},
    )
    assert r.status_code == 202, r.text


def _by_device(frames: list[Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for frame in frames:
        for row, value in zip(frame.rows, frame.values.tolist(), strict=True):
            out.setdefault(frame.metric, {})[row[0]] = value
    return out


async def test_hardware_source_reads_telemetry_liveness_budgets_and_crash_loops(
    fleet_on_each_db: Any, build_bundle: Any, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    await fleet.trust(release_key)
    paths = {v: build_bundle(v) for v in ("1.0.0", "2.0.0")}
    for path in paths.values():
        assert (await fleet.upload(path)).status_code == 201
    v1 = _installed("1.0.0", paths["1.0.0"])
    hot = await fleet.enroll("hot-1", installed=v1)
    cool = await fleet.enroll("cool-2", installed=v1)
    await fleet.enroll("quiet-3")  # never checks in, sends nothing
    await _telemetry(
        fleet,
        hot,
        temperature_c=80,
        battery_v=3.3,
        free_memory_bytes=1000,
        inference_latency_ms=30,
        resets_total=2,
        uptime_s=50,
    )
    await _telemetry(fleet, cool, temperature_c=40, battery_v=4.5, inference_latency_ms=6)
    await fleet.checkin(hot, installed=v1)
    await fleet.runtime.flush()

    source = fleet.runtime.hardware_source
    now = utcnow()
    values = _by_device(source.collect_frames(now))
    assert values["device_temperature_celsius"] == {"hot-1": 80.0, "cool-2": 40.0}
    # (3.3 − 3.0) / (4.2 − 3.0) = 0.25; 4.5 V is above full: 1.
    assert values["device_battery_ratio"]["hot-1"] == pytest.approx(0.25)
    assert values["device_battery_ratio"]["cool-2"] == 1.0
    assert values["device_free_memory_bytes"] == {"hot-1": 1000.0}
    assert values["device_resets_total"] == {"hot-1": 2.0}
    assert values["device_uptime_seconds"] == {"hot-1": 50.0}
    assert values["device_inference_latency_seconds"] == {"hot-1": 0.03, "cool-2": 0.006}
    # The bundles were measured at 12 ms (conftest's build_bundle).
    assert values["device_latency_budget_seconds"] == {"hot-1": 0.012, "cool-2": 0.012}
    assert values["device_latency_budget_ratio"] == pytest.approx({"hot-1": 2.5, "cool-2": 0.5})
    assert values["device_crash_loop"] == {"hot-1": 0.0, "cool-2": 0.0, "quiet-3": 0.0}
    last_seen = values["device_last_seen_seconds"]
    assert set(last_seen) == {"hot-1", "cool-2", "quiet-3"}
    quiet = fleet.runtime.store.get_device("quiet-3")
    assert last_seen["quiet-3"] == pytest.approx(
        (now - quiet.enrolled_at).total_seconds(), abs=1e-3
    )
    assert 0 <= last_seen["hot-1"] <= last_seen["quiet-3"]
    labels = {f.metric: f.label_names for f in source.collect_frames(now)}
    assert labels["device_temperature_celsius"] == ("device", "hardware", "release")
    assert labels["device_latency_budget_seconds"] == ("device", "hardware")
    rows = next(
        f.rows for f in source.collect_frames(now) if f.metric == "device_temperature_celsius"
    )
    assert ("hot-1", "nano33ble", "kws@1.0.0") in rows

    # Later points replace earlier ones (read incrementally).
    await _telemetry(fleet, hot, temperature_c=85)
    assert _by_device(source.collect_frames(utcnow()))["device_temperature_celsius"]["hot-1"] == 85

    # A crash-loop revert reported in a deployment: 1 for an hour.
    r = await fleet.deploy({"name": "kws", "target": "nano33ble", "version": "2.0.0"})
    assert r.status_code == 201, r.text
    deployment = r.json()["id"]
    assert (await fleet.checkin(hot, installed=v1))["action"] == "update"
    await fleet.report(hot, deployment, "downloading", "downloaded", "installing", "trial")
    r = await fleet.client.post(
        f"/api/v1/device/deployments/{deployment}/status",
        json={
            "status": "failure",
            "reason": "crash loop: 4 boots on trial without a commit (at most 3 allowed)",
        },
        headers={"Authorization": hot["Authorization"]},
    )
    assert r.status_code == 204, r.text
    crash = _by_device(source.collect_frames(utcnow()))["device_crash_loop"]
    assert crash == {"hot-1": 1.0, "cool-2": 0.0, "quiet-3": 0.0}
    later = _by_device(source.collect_frames(utcnow() + timedelta(hours=1, seconds=1)))
    assert later["device_crash_loop"]["hot-1"] == 0.0


async def test_alert_loop_notifies_lists_and_exports_alerts(
    fleet_runner: Any, tmp_path: Path, receiver: Receiver
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    _settings, context = fleet_runner(alert_rules=rules, alert_webhook=receiver.url)
    async with context as fleet:
        hot = await fleet.enroll("hot-1")
        cool = await fleet.enroll("cool-2")
        await _telemetry(fleet, hot, temperature_c=81.5)
        await _telemetry(fleet, cool, temperature_c=30)

        events = await fleet.runtime.alerting.run_once(utcnow())
        assert [(e.status, e.alert.labels["device"]) for e in events] == [("firing", "hot-1")]
        (body,) = receiver.bodies
        assert body["status"] == "firing"
        assert body["alerts"][0]["labels"]["alertname"] == "DeviceHot"
        assert body["alerts"][0]["annotations"]["summary"] == "hot-1 at 81.5 °C"

        viewer = await fleet.token("viewer")
        r = await fleet.client.get("/api/v1/alerts", headers=viewer)
        assert r.status_code == 200, r.text
        (alert,) = r.json()["alerts"]
        assert alert["rule"] == "DeviceHot"
        assert alert["state"] == "firing"
        assert alert["severity"] == "warning"
        assert alert["value"] == 81.5
        assert alert["labels"]["device"] == "hot-1"
        assert alert["labels"]["release"] == "none"
        assert alert["summary"] == "hot-1 at 81.5 °C"
        assert len(alert["fingerprint"]) == 16
        r = await fleet.client.get("/api/v1/alerts?state=pending", headers=viewer)
        assert r.json() == {"alerts": []}
        r = await fleet.client.get("/api/v1/alerts?state=burning", headers=viewer)
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "state"
        r = await fleet.client.get("/api/v1/alerts")
        assert r.status_code == 401

        r = await fleet.client.get("/metrics", headers=viewer)
        text = r.text
        assert re.search(
            r'tinyops_device_temperature_celsius\{device="hot-1",hardware="nano33ble",'
            r'release="none"\} 81\.5',
            text,
        ), text
        assert 'tinyops_alerts_firing{rule="DeviceHot",severity="warning"} 1.0' in text
        assert 'tinyops_alerts_firing{rule="LatencyOverBudget",severity="critical"} 0.0' in text
        assert 'tinyops_device_crash_loop{device="cool-2"} 0.0' in text

        # Still hot: no new notification (deduplicated); cooled: resolved, one message.
        assert await fleet.runtime.alerting.run_once(utcnow()) == []
        await _telemetry(fleet, hot, temperature_c=50)
        events = await fleet.runtime.alerting.run_once(utcnow())
        assert [e.status for e in events] == ["resolved"]
        assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
        r = await fleet.client.get("/api/v1/alerts?state=resolved", headers=viewer)
        assert [a["labels"]["device"] for a in r.json()["alerts"]] == ["hot-1"]


async def test_without_rules_the_list_is_empty_and_metrics_are_exposed(fleet: Any) -> None:
    device = await fleet.enroll("nano-1")
    await _telemetry(fleet, device, temperature_c=99)
    assert not fleet.runtime.alerting.enabled
    assert await fleet.runtime.alerting.run_once(utcnow()) == []
    r = await fleet.client.get("/api/v1/alerts", headers=fleet.admin)
    assert r.json() == {"alerts": []}
    r = await fleet.client.get("/metrics", headers=fleet.admin)
    assert 'tinyops_device_temperature_celsius{device="nano-1"' in r.text


async def test_a_bad_rules_file_stops_the_server_naming_the_line(
    fleet_runner: Any, tmp_path: Path
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES.replace("device_latency_budget_ratio", "device_latency_ratio"))
    _settings, context = fleet_runner(alert_rules=rules)
    with pytest.raises(RulesError, match=r"alerts.yaml:10: groups\[0\].rules\[1\].metric"):
        async with context:
            pass


def test_bad_alert_options_of_the_server_process(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text("groups:\n  - name: g\n    rules: []\n")
    log = tmp_path / "server.log"
    server = Server(tmp_path / "fleet", None, log, ["--alert-rules", str(rules)])
    with pytest.raises(AssertionError):
        server.start()
    server.stop()
    assert "groups[0].rules: List should have at least 1 item" in log.read_text()
