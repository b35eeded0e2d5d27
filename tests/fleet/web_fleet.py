"""Shared by the dashboard tests: a real server process seeded through the real API, and
a dashboard login with httpx (test_web_dashboard.py, test_web_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server

BuildBundle = Callable[..., Path]
# A log line that would run script if the page did not escape it.
HOSTILE_LOG = '<script>alert("x")</script> & <b>bold</b>'
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


@dataclass
class SeededFleet:
    """What `seed` made: the server, tokens by role, device tokens, the deployment id."""

    server: Server
    admin: str
    tokens: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    deployment_id: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def api(
        self,
        method: str,
        path: str,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A management API call, with the admin token unless `token` is given."""
        auth = {"Authorization": f"Bearer {token or self.admin}"}
        return httpx.request(
            method, self.url + path, headers={**auth, **(headers or {})}, timeout=30, **kwargs
        )


def _ok(r: httpx.Response, *statuses: int) -> Any:
    assert r.status_code in statuses, (r.status_code, r.text)
    return r.json() if r.content else None


def seed(server: Server, build_bundle: BuildBundle, release_key: Ed25519PrivateKey) -> SeededFleet:
    """A fleet with three devices on two targets, telemetry and logs on nano-01, a release
    and a two-phase deployment whose first phase (nano-01) has succeeded."""
    admin = server.start(init=True)
    assert admin is not None
    fleet = SeededFleet(server, admin)
    for role in ("viewer", "devops", "ml-engineer"):
        body = _ok(
            fleet.api("POST", "/api/v1/tokens", json={"name": f"{role}-1", "role": role}), 201
        )
        fleet.tokens[role] = body["token"]
    pem = (
        release_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    _ok(fleet.api("POST", "/api/v1/trusted-keys", json={"name": "ci", "public_key_pem": pem}), 201)
    bundle = build_bundle("1.0.0")
    _ok(
        fleet.api(
            "POST",
            "/api/v1/releases",
            content=bundle.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        ),
        201,
    )
    etk = _ok(fleet.api("POST", "/api/v1/enrollment-tokens", json={"name": "lab"}), 201)["token"]
    for device_id, hardware, group in (
        ("nano-01", "nano33ble", "lab"),
        ("nano-02", "nano33ble", "field"),
        ("pi-01", "rpi4", "lab"),
    ):
        body = _ok(
            httpx.post(
                server.url + "/api/v1/device/enroll",
                json={
                    "enrollment_token": etk,
                    "device_id": device_id,
                    "hardware": hardware,
                    "tags": {"group": group},
                    "installed": {"name": "kws", "version": "0.9.0"},
                },
                timeout=30,
            ),
            201,
        )
        fleet.devices[device_id] = body["device_token"]
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    points = [
        {"t": (start + timedelta(minutes=i)).isoformat(), "metric": "temperature_c", "value": v}
        for i, v in enumerate([41.0, 43.5, 47.25, 45.0, 52.0])
    ] + [
        {"t": (start + timedelta(minutes=i)).isoformat(), "metric": "free_memory_bytes", "value": v}
        for i, v in enumerate([81_000.0, 80_500.0, 79_000.0])
    ]
    logs = [
        {"t": start.isoformat(), "level": "info", "message": "booted slot a"},
        {"t": (start + timedelta(minutes=1)).isoformat(), "level": "error", "message": HOSTILE_LOG},
    ]
    _ok(
        device_call(fleet, "nano-01", "POST", "/telemetry", json={"points": points, "logs": logs}),
        202,
    )
    deployment = _ok(
        fleet.api(
            "POST",
            "/api/v1/deployments",
            json={
                "release": {"name": "kws", "version": "1.0.0", "target": "nano33ble"},
                "selector": {"tags": {}},
                "phases": [{"count": 1}, {"percent": 100}],
            },
        ),
        201,
    )
    fleet.deployment_id = int(deployment["id"])
    # The first phase's device takes the update to success.
    first = next(p for p in deployment["phases"] if p["index"] == 0)
    assert first["devices"] == 1, deployment
    progress = [
        d
        for d in ("nano-01", "nano-02")
        if device_call(fleet, d, "POST", "/checkin", json={}).json()["action"] == "update"
    ]
    assert len(progress) == 1, progress
    for status in ("downloading", "downloaded", "installing", "trial", "success"):
        r = device_call(
            fleet,
            progress[0],
            "POST",
            f"/deployments/{fleet.deployment_id}/status",
            json={"status": status, "version": "1.0.0"},
        )
        assert r.status_code == 204, r.text
    return fleet


def device_call(fleet: SeededFleet, device_id: str, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {fleet.devices[device_id]}"}
    return httpx.request(
        method, f"{fleet.url}/api/v1/device{path}", headers=headers, timeout=30, **kw
    )


def hidden_inputs(html: str) -> dict[str, str]:
    return dict(HIDDEN_INPUT.findall(html))


def login(url: str, token: str) -> httpx.Client:
    """An httpx client logged in to the dashboard with `token` (asserts it worked)."""
    client = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    page = client.get("/ui/login")
    assert page.status_code == 200, page.text
    form = hidden_inputs(page.text)
    r = client.post("/ui/login", data={"token": token, "csrf": form["csrf"], "next": "/ui"})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui"
    return client


def csrf_of(client: httpx.Client, path: str) -> str:
    """The session's CSRF token, read from a form on `path`."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    return hidden_inputs(page.text)["csrf"]


# --- a fleet with drift: a release with a reference profile, sketches, an alert rule ------

DRIFT_RULES = """\
groups:
  - name: drift
    rules:
      - name: FeatureDrifted
        metric: feature_drifted
        condition: "== 1"
        severity: warning
        annotations:
          summary: "{{ $labels.feature }} drifted on {{ $labels.device }}"
"""
# Bound on waiting for the server's alert loop; never reached when all is well.
ALERT_TIMEOUT_S = 60.0


def seed_drift(
    tmp_path: Path,
    kws_payload: tuple[dict[str, bytes], dict[str, Any]],
    release_key: Ed25519PrivateKey,
) -> SeededFleet:
    """A server evaluating one rule (feature_drifted == 1) every 0.2 s, and kws 1.0.0 with
    a reference profile on two devices: nano-01's sensor shifted feature f0 by 3 standard
    deviations in the last complete window, nano-02's did not. Returns once the alert
    fires for nano-01."""
    import time

    from drift_testlib import bundle_with_profile, reference_profile, sketch
    from fleet_process import POLL_S

    rules = tmp_path / "alerts.yaml"
    rules.write_text(DRIFT_RULES)
    server = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        extra_args=["--alert-rules", str(rules), "--alert-interval", "0.2"],
    )
    admin = server.start(init=True)
    assert admin is not None
    fleet = SeededFleet(server, admin)
    body = _ok(
        fleet.api("POST", "/api/v1/tokens", json={"name": "viewer-1", "role": "viewer"}), 201
    )
    fleet.tokens["viewer"] = body["token"]
    pem = (
        release_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    _ok(fleet.api("POST", "/api/v1/trusted-keys", json={"name": "ci", "public_key_pem": pem}), 201)
    out = tmp_path / "bundle"
    out.mkdir()
    bundle = bundle_with_profile(out, kws_payload, release_key)
    _ok(
        fleet.api(
            "POST",
            "/api/v1/releases",
            content=bundle.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        ),
        201,
    )
    etk = _ok(fleet.api("POST", "/api/v1/enrollment-tokens", json={"name": "lab"}), 201)["token"]
    profile = reference_profile()
    # The last complete hour: a window the drift metrics count as current.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    for device_id, shift in (("nano-01", {"f0": 3.0}), ("nano-02", None)):
        r = httpx.post(
            server.url + "/api/v1/device/enroll",
            json={
                "enrollment_token": etk,
                "device_id": device_id,
                "hardware": "nano33ble",
                "tags": {"group": "lab"},
                "installed": {"name": "kws", "version": "1.0.0"},
            },
            timeout=30,
        )
        fleet.devices[device_id] = _ok(r, 201)["device_token"]
        r = device_call(
            fleet, device_id, "POST", "/sketches", json=sketch(profile, start, shift=shift)
        )
        _ok(r, 202)
    deadline = time.monotonic() + ALERT_TIMEOUT_S
    while time.monotonic() < deadline:
        firing = fleet.api("GET", "/api/v1/alerts?state=firing").json()["alerts"]
        if any(a["labels"].get("device") == "nano-01" for a in firing):
            return fleet
        time.sleep(POLL_S)
    raise AssertionError(
        f"no drift alert fired within {ALERT_TIMEOUT_S} s:\n{server.log.read_text()}"
    )
