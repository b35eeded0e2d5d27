"""Issue 4's "done when", end to end: the fleet simulator with a drift fault makes the real
server raise drift alerts for exactly the drifted devices and features, and the web
dashboard shows them in a real browser.

A server process evaluates one rule (FeatureDrift: feature_drifted == 1 per device) every
0.2 s. Ten simulated devices (real agents over HTTP) install kws 1.0.0, whose bundle
carries a reference profile, and send a drift sketch every second, their inferences drawn
from that profile; the sensors of two of them shift two features by 2.5 reference
standard deviations. Once every device has been judged on at least `min_count`
inferences, the firing alerts must be exactly those (device, feature) pairs — no healthy
device, no untouched feature. Then a viewer logs in to the dashboard and sees the same
pairs on the alerts page and the drifted devices on the drift page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import WAIT_MS, Shots, browser, login, shots
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server

from tinyops.fleet.simulator import DriftFault, Faults, FleetSimulator, deployment_settled

__all__ = ["browser", "shots"]  # fixtures, imported for pytest

DEVICES = 10
DRIFTED = frozenset({"sim-000002", "sim-000007"})
SHIFTS = {"f0": 2.5, "f2": -2.5}
RULES = """
groups:
  - name: model
    rules:
      - name: FeatureDrift
        metric: feature_drifted
        match_re: {device: ".+"}
        condition: "== 1"
        severity: warning
        annotations:
          summary: "{{ $labels.feature }} drifted on {{ $labels.device }}"
"""
# Bounds on waiting for the real server and agents; never reached when all is well.
DEADLINE_S = 180.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    running = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        extra_args=[
            "--poll-interval", "0.5", "--update-poll-interval", "0.5",
            "--alert-rules", str(rules), "--alert-interval", "0.2",
        ],
    )  # fmt: skip
    try:
        yield running
    finally:
        running.stop()


def firing_pairs(alerts: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (a["labels"]["device"], a["labels"]["feature"])
        for a in alerts
        if a["rule"] == "FeatureDrift" and a["state"] == "firing"
    }


def test_drift_fault_fires_alerts_for_exactly_the_drifted_devices_and_features(
    server: Server,
    tmp_path: Path,
    kws_payload: tuple[dict[str, bytes], dict[str, Any]],
    release_key: Ed25519PrivateKey,
    browser: Any,
    shots: Shots,
) -> None:
    from drift_testlib import release_with_profile_on
    from playwright.sync_api import expect

    token = server.start(init=True)
    assert token is not None
    url, headers = server.url, {"Authorization": f"Bearer {token}"}

    def api(method: str, path: str, **kwargs: Any) -> Any:
        r = httpx.request(method, url + path, headers=headers, timeout=30, **kwargs)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    etk = release_with_profile_on(api, tmp_path / "b", kws_payload, release_key)
    viewer = api("POST", "/api/v1/tokens", json={"name": "watcher", "role": "viewer"})["token"]
    sim = FleetSimulator(
        url,
        etk,
        DEVICES,
        hardware="nano33ble",
        trusted_keys=[release_key.public_key()],
        tags={"group": "lab"},
        faults=Faults(drift=(DriftFault(SHIFTS, devices=DRIFTED),)),
        seed=11,
        poll_interval_s=0.5,
        inferences_per_poll=1000,
        sketch_window_s=1.0,
    )
    expected = {(d, f) for d in DRIFTED for f in SHIFTS}

    def judged_devices() -> set[str]:
        """Devices with a drift verdict on /metrics (judged on ≥ min_count inferences)."""
        text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
        devices = {
            line.split('device="', 1)[1].split('"', 1)[0]
            for line in text.splitlines()
            if line.startswith("tinyops_dataset_drift_share{") and 'device="' in line
        }
        return devices - {""}  # "": the group series

    async def scenario() -> list[dict[str, Any]]:
        async def call(method: str, path: str, **kwargs: Any) -> Any:
            return await asyncio.to_thread(api, method, path, **kwargs)

        async def enrolled(_sim: FleetSimulator) -> bool:
            page = await call("GET", "/api/v1/devices", params={"limit": 100})
            return len(page["devices"]) == DEVICES

        async def all_judged_and_alerted(_sim: FleetSimulator) -> bool:
            alerts = (await call("GET", "/api/v1/alerts"))["alerts"]
            judged = await asyncio.to_thread(judged_devices)
            return len(judged) == DEVICES and firing_pairs(alerts) >= expected

        async with sim:
            await sim.wait(enrolled, timeout_s=DEADLINE_S)
            body = {
                "release": {"name": "kws", "version": "1.0.0", "target": "nano33ble"},
                "selector": {"tags": {"group": "lab"}},
                "phases": [{"percent": 100}],
            }
            deployment = int((await call("POST", "/api/v1/deployments", json=body))["id"])
            await sim.wait(deployment_settled(url, token, deployment), timeout_s=DEADLINE_S)
            try:
                await sim.wait(all_judged_and_alerted, timeout_s=DEADLINE_S)
            except TimeoutError:
                alerts = (await call("GET", "/api/v1/alerts"))["alerts"]
                judged = await asyncio.to_thread(judged_devices)
                raise AssertionError(
                    f"judged {sorted(judged)}; alerts {firing_pairs(alerts)}; "
                    f"{sim.summary().to_dict()}"
                ) from None
            alerts: list[dict[str, Any]] = (await call("GET", "/api/v1/alerts"))["alerts"]
        assert sim.summary().drifted_devices == len(DRIFTED)
        return alerts

    # In a thread of its own: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        alerts = pool.submit(asyncio.run, scenario()).result()
    # Exactly the drifted pairs fire (and nothing else is even pending).
    assert firing_pairs(alerts) == expected, alerts
    assert {(a["labels"]["device"], a["labels"]["feature"]) for a in alerts} == expected
    assert {a["labels"]["release"] for a in alerts} == {"kws@1.0.0"}

    # The dashboard shows the same, to a viewer, in a real browser.
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    login(page, url, viewer)
    page.click("nav a:has-text('Alerts')")
    rows = page.locator("[data-testid=alerts] tr[data-rule=FeatureDrift][data-state=firing]")
    expect(rows).to_have_count(len(expected))
    for device, feature in sorted(expected):
        pair = rows.filter(has_text=f"device={device}").filter(has_text=f"feature={feature}")
        expect(pair).to_have_count(1)
    shots(page, "alerts")
    page.click("nav a:has-text('Drift')")
    drifted = page.locator("[data-testid=drift-devices] tbody tr[data-device]")
    # The drift page judges the whole last day of windows: the same two devices.
    expect(drifted).to_have_count(len(DRIFTED))
    for device in sorted(DRIFTED):
        row = drifted.filter(has_text=device)
        expect(row).to_have_count(1)
        for feature in SHIFTS:
            expect(row).to_contain_text(feature)
    shots(page, "drift")
    page.close()
