"""The dashboard end to end in a real browser: Debian's Chromium driven by Playwright
(`executable_path=/usr/bin/chromium`; Playwright never downloads a browser here).

A real server process, seeded through the real API (tests/fleet/web_fleet.py). A devops
token logs in, sees the devices, filters them, opens a device, sends a command (the
script shows the command's own arguments) and sees it listed, opens a deployment and
pauses and resumes it, and logs out; a viewer sees no command form and no pause button,
and a command posted with its session is refused (403). With a drifted device (its sensor
shifted one feature) and a drift alert rule, the drift page lists that device and
feature and the alerts page the firing alert.

Screenshots of each step are saved under the test's tmp dir and copied to
test-artifacts/screenshots/ at the repository root.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import WAIT_MS, Shots, browser, login, shots
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server
from web_fleet import SeededFleet, device_call, seed, seed_drift

__all__ = ["browser", "shots"]  # fixtures, imported for pytest
BuildBundle = Callable[..., Path]


@pytest.fixture
def fleet(
    tmp_path: Path, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> Iterator[SeededFleet]:
    server = Server(tmp_path / "fleet", None, tmp_path / "server.log")
    try:
        yield seed(server, build_bundle, release_key)
    finally:
        server.stop()


def _table_ids(page: Any) -> list[str]:
    return [link.inner_text() for link in page.locator("[data-testid=devices] tbody a").all()]


def test_devops_logs_in_sends_a_command_pauses_a_deployment_and_logs_out(
    browser: Any, fleet: SeededFleet, shots: Shots
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    page.goto(fleet.url + "/ui/devices/nano-01")
    expect(page.locator("#token")).to_be_visible()
    assert page.locator("[data-testid=devices]").count() == 0
    shots(page, "login")

    login(page, fleet.url, fleet.tokens["devops"])
    expect(page.locator("[data-testid=who]")).to_contain_text("devops-1")
    assert _table_ids(page) == ["nano-01", "nano-02", "pi-01"]
    expect(page.locator("[data-testid=by-target]")).to_contain_text("rpi4")
    shots(page, "fleet")

    page.select_option("select[name=hardware]", "rpi4")
    page.click("button:has-text('Filter')")
    page.wait_for_url(re.compile(r".*hardware=rpi4.*"))
    assert _table_ids(page) == ["pi-01"]
    page.click("a:has-text('Clear')")
    page.click("[data-testid=devices] a:has-text('nano-01')")
    page.wait_for_url(fleet.url + "/ui/devices/nano-01")
    expect(page.locator("svg[data-metric=temperature_c] polyline")).to_be_visible()
    expect(page.locator("[data-testid=logs]")).to_contain_text('<script>alert("x")</script>')
    shots(page, "device")

    # The script shows only the chosen command's arguments.
    level = page.locator("label[data-for-kind=set_log_level]")
    lines = page.locator("label[data-for-kind=fetch_logs]")
    page.select_option("#command-kind", "set_log_level")
    expect(level).to_be_visible()
    expect(lines).to_be_hidden()
    page.select_option("select[name=level] >> nth=0", "debug")
    page.click("[data-testid=command-form] button:has-text('Send')")
    page.wait_for_url(re.compile(r".*/ui/devices/nano-01\?sent=\d+#commands$"))
    expect(page.locator("[data-testid=sent]")).to_contain_text("queued")
    row = page.locator("[data-testid=commands] tbody tr").first
    expect(row).to_contain_text("set_log_level")
    expect(row).to_contain_text('"level": "debug"')
    expect(row).to_contain_text("token:devops-1")
    shots(page, "command-sent")
    polled = device_call(fleet, "nano-01", "GET", "/commands").json()["commands"]
    assert [(c["kind"], c["args"]) for c in polled] == [("set_log_level", {"level": "debug"})]

    page.click("nav a:has-text('Deployments')")
    page.click(f"[data-testid=deployments] a:has-text('{fleet.deployment_id}')")
    page.wait_for_url(f"{fleet.url}/ui/deployments/{fleet.deployment_id}")
    phases = page.locator("[data-testid=phases] tbody tr")
    expect(phases).to_have_count(2)
    expect(phases.nth(0)).to_contain_text("success 1")
    expect(phases.nth(1)).to_contain_text("pending 1")
    expect(phases.nth(1)).to_contain_text("(open)")
    shots(page, "deployment")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=deployment-actions] button:has-text('Pause')")
    expect(page.locator("h1 .badge")).to_have_text("paused")
    shots(page, "paused")
    page.click("[data-testid=deployment-actions] button:has-text('Resume')")
    expect(page.locator("h1 .badge")).to_have_text("running")
    audit = fleet.api(
        "GET", f"/api/v1/audit?target=deployment:{fleet.deployment_id}&actor=token:devops-1"
    ).json()["records"]
    assert [a["action"] for a in audit] == ["deployment.resume", "deployment.pause"]

    page.click("button:has-text('Log out')")
    page.wait_for_url(fleet.url + "/ui/login")
    page.goto(fleet.url + "/ui")
    assert "/ui/login" in page.url
    shots(page, "logged-out")
    page.close()


def test_a_viewer_sees_no_command_form_and_its_post_is_refused(
    browser: Any, fleet: SeededFleet, shots: Shots
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    login(page, fleet.url, fleet.tokens["viewer"])
    page.goto(fleet.url + "/ui/devices/nano-01")
    expect(page.locator("[data-testid=device-id]")).to_have_text("nano-01")
    assert page.locator("[data-testid=command-form]").count() == 0
    assert page.locator("button:has-text('Send')").count() == 0
    shots(page, "viewer-device")
    page.goto(f"{fleet.url}/ui/deployments/{fleet.deployment_id}")
    assert page.locator("[data-testid=deployment-actions]").count() == 0

    # The session's own CSRF token does not lend the viewer a permission it lacks.
    csrf = page.locator("form.logout input[name=csrf]").get_attribute("value")
    refused = page.request.post(
        fleet.url + "/ui/devices/nano-01/commands",
        form={"kind": "reboot", "csrf": csrf},
        max_redirects=0,
    )
    assert refused.status == 403
    assert "lacks the permission" in refused.text()
    page.set_content(refused.text())
    shots(page, "viewer-refused")
    commands = fleet.api("GET", "/api/v1/devices/nano-01/commands").json()["commands"]
    assert commands == []
    context.close()


@pytest.fixture
def drift_fleet(
    tmp_path: Path,
    kws_payload: tuple[dict[str, bytes], dict[str, Any]],
    release_key: Ed25519PrivateKey,
) -> Iterator[SeededFleet]:
    fleet = seed_drift(tmp_path, kws_payload, release_key)
    try:
        yield fleet
    finally:
        fleet.server.stop()


def test_the_drifted_device_and_its_alert_are_on_the_dashboard(
    browser: Any, drift_fleet: SeededFleet, shots: Shots
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(WAIT_MS)
    login(page, drift_fleet.url, drift_fleet.tokens["viewer"])
    page.click("nav a:has-text('Drift')")
    page.wait_for_url(drift_fleet.url + "/ui/drift")
    f0 = page.locator("[data-testid=drift-features] tr[data-feature=f0]")
    expect(f0).to_contain_text("drifted")
    expect(f0.locator("svg[data-feature=f0] rect.cur").first).to_be_attached()
    drifted = page.locator("[data-testid=drift-devices] tbody tr[data-device]")
    expect(drifted).to_have_count(1)
    expect(drifted.first).to_contain_text("nano-01")
    expect(drifted.first).to_contain_text("f0")
    shots(page, "drift")

    drifted.first.locator("a:has-text('report')").click()
    page.wait_for_url(re.compile(r".*/ui/drift\?.*device=nano-01.*"))
    expect(page.locator("h1")).to_contain_text("device nano-01")
    shots(page, "drift-device")

    page.click("nav a:has-text('Alerts')")
    row = page.locator("[data-testid=alerts] tr[data-rule=FeatureDrifted][data-state=firing]")
    expect(row.filter(has_text="device=nano-01")).to_have_count(1)
    expect(row.filter(has_text="device=nano-02")).to_have_count(0)
    shots(page, "alerts")
    row.filter(has_text="device=nano-01").locator("a:has-text('device')").click()
    page.wait_for_url(drift_fleet.url + "/ui/devices/nano-01")
    page.close()
