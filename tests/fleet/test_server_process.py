"""A real server process, killed with SIGKILL twice in the middle of a deployment: it restarts
consistent and the deployment carries on to success (the background evaluator opens the
phase whose soak ran out while the server was dead)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import POLL_S, Server

BuildBundle = Callable[..., Path]
# Bound on waiting for the server's state to change, in seconds; never reached when all is well.
STATE_TIMEOUT_S = 60.0


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    running = Server(
        tmp_path / "fleet", None if db_url.startswith("sqlite") else db_url, tmp_path / "server.log"
    )
    try:
        yield running
    finally:
        running.stop()


def _wait_for(check: Callable[[], bool], what: str, server: Server) -> None:
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_S)
    raise AssertionError(
        f"{what} did not happen within {STATE_TIMEOUT_S} s:\n{server.log.read_text()}"
    )


UPDATE = ("downloading", "downloaded", "installing", "trial", "success")


def test_sigkill_mid_deployment_restarts_consistent_and_carries_on(
    server: Server, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    token = server.start(init=True)
    admin = {"Authorization": f"Bearer {token}"}
    pem = (
        release_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )

    def api(method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, server.url + path, timeout=30.0, **kwargs)

    assert (
        api(
            "POST",
            "/api/v1/trusted-keys",
            json={"name": "ci", "public_key_pem": pem},
            headers=admin,
        ).status_code
        == 201
    )
    paths = {v: build_bundle(v) for v in ("1.0.0", "1.1.0")}
    for path in paths.values():
        r = api("POST", "/api/v1/releases", content=path.read_bytes(), headers=admin)
        assert r.status_code == 201, r.text
    etk = api("POST", "/api/v1/enrollment-tokens", json={"name": "lab"}, headers=admin).json()[
        "token"
    ]
    old_sha = hashlib.sha256(paths["1.0.0"].read_bytes()).hexdigest()
    devices: dict[str, dict[str, str]] = {}
    for i in range(10):
        r = api(
            "POST",
            "/api/v1/device/enroll",
            json={
                "enrollment_token": etk,
                "device_id": f"nano-{i}",
                "hardware": "nano33ble",
                "tags": {"group": "lab"},
                "installed": {"name": "kws", "version": "1.0.0", "sha256": old_sha},
            },
        )
        devices[f"nano-{i}"] = {"Authorization": f"Bearer {r.json()['device_token']}"}
    r = api(
        "POST",
        "/api/v1/deployments",
        json={
            "release": {"name": "kws", "version": "1.1.0", "target": "nano33ble"},
            # 3 s of soak: the server is (almost always) killed while phase 0 soaks.
            "phases": [{"count": 2, "soak_s": 3.0}, {"percent": 100}],
            "max_failure_rate": 0.0,
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    deployment = r.json()["id"]

    def checkin(device_id: str) -> dict[str, Any]:
        r = api(
            "POST",
            "/api/v1/device/checkin",
            json={"health": {"uptime_s": 1, "resets": 0}},
            headers=devices[device_id],
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    def report(device_id: str, *statuses: str) -> None:
        for status in statuses:
            r = api(
                "POST",
                f"/api/v1/device/deployments/{deployment}/status",
                json={"status": status},
                headers=devices[device_id],
            )
            assert r.status_code == 204, (device_id, status, r.text)

    def state() -> dict[str, Any]:
        return dict(api("GET", f"/api/v1/deployments/{deployment}", headers=admin).json())

    canaries = [d for d in devices if checkin(d)["action"] == "update"]
    assert len(canaries) == 2
    for device_id in canaries:
        report(device_id, *UPDATE)
    assert state()["phases"][0]["passed_at"] is not None

    # Killed while phase 0 soaks: nothing in memory survives.
    server.kill()
    server.start()
    _wait_for(lambda: state()["open_phase"] == 1, "opening phase 1 after the restart", server)
    rest = [d for d in devices if d not in canaries]
    assert all(checkin(d)["action"] == "update" for d in rest)
    assert all(checkin(d)["action"] == "none" for d in canaries)
    halfway = rest[: len(rest) // 2]
    for device_id in halfway:
        report(device_id, "downloading", "downloaded", "installing")

    # Killed with devices half-way through their update.
    server.kill()
    server.start()
    after = state()
    assert after["status"] == "running" and after["open_phase"] == 1
    assert after["phases"][1]["counts"]["installing"] == len(halfway)
    assert after["phases"][0]["counts"]["success"] == 2
    for device_id in rest:
        assert checkin(device_id)["action"] == "update"
        report(device_id, *(("trial", "success") if device_id in halfway else UPDATE))
    _wait_for(lambda: state()["status"] == "succeeded", "the deployment succeeding", server)
    final = state()
    assert [p["counts"]["success"] for p in final["phases"]] == [2, 8]
    for device_id in devices:
        record = api("GET", f"/api/v1/devices/{device_id}", headers=admin).json()
        assert record["installed"]["version"] == "1.1.0", device_id
        assert [h["event"] for h in record["history"]] == ["updated", "enrolled"]
    audit = api(
        "GET", f"/api/v1/audit?target=deployment:{deployment}&limit=1000", headers=admin
    ).json()
    actions = [r["action"] for r in audit["records"]]
    assert actions.count("deployment.open-phase") == 1
    assert actions.count("deployment.succeed") == 1
