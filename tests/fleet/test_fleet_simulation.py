"""The fleet simulator against a real server process: 200 device agents (the real agent
code, real HTTP, real bundles and self-tests) through staged rollouts.

1. A baseline release goes to every device in one phase.
2. A good release goes out in four phases (1%, 10%, 50%, 100%) to success.
3. A bad release crashes half of the devices that run it: the deployment aborts in its
   first phase, every device it reached is back on the good release, and no device
   outside that phase was touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server

from tinyops.fleet.simulator import (
    Faults,
    FleetSimulator,
    deployment_settled,
)

DEVICES = 200
BuildBundle = Callable[..., Path]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        extra_args=["--poll-interval", "2", "--update-poll-interval", "1",
                    "--evaluate-interval", "0.2", "--flush-interval", "0.5"],
    )  # fmt: skip
    try:
        yield running
    finally:
        running.stop()


class Admin:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.headers = url, {"Authorization": f"Bearer {token}"}

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        r = httpx.request(method, self.url + path, headers=self.headers, timeout=30, **kwargs)
        assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None


@pytest.mark.slow
def test_staged_rollout_to_success_then_bad_release_aborts_and_rolls_back(
    server: Server, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
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
    # Half of the devices crash when they run 1.2.0 (the bad release); nothing else fails.
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
    )
    asyncio.run(scenario(sim, admin, token, server.url))


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {status: n for status, n in counts.items() if n}


async def scenario(sim: FleetSimulator, admin: Admin, token: str, url: str) -> None:
    async def api(method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(admin, method, path, **kwargs)

    async def deploy(version: str, phases: list[dict[str, Any]], **extra: Any) -> int:
        body = {
            "release": {"name": "kws", "version": version, "target": "nano33ble"},
            "selector": {"tags": {"group": "lab"}},
            "phases": phases,
            **extra,
        }
        return int((await api("POST", "/api/v1/deployments", json=body))["id"])

    async def enrolled(_sim: FleetSimulator) -> bool:
        page = await api("GET", "/api/v1/devices", params={"limit": 1000})
        return len(page["devices"]) == DEVICES

    async with sim:
        await sim.wait(enrolled, timeout_s=120)

        # 1. Baseline to every device, one phase.
        base = await deploy("1.0.0", [{"percent": 100}])
        await sim.wait(deployment_settled(url, token, base), timeout_s=300)
        assert (await api("GET", f"/api/v1/deployments/{base}"))["status"] == "succeeded"
        assert sim.summary().versions == {"1.0.0": DEVICES}

        # 2. The good release in four phases, to success.
        good = await deploy(
            "1.1.0",
            [{"percent": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
            max_failure_rate=0.05,
        )
        await sim.wait(deployment_settled(url, token, good), timeout_s=300)
        status = await api("GET", f"/api/v1/deployments/{good}")
        assert status["status"] == "succeeded", status
        assert [p["devices"] for p in status["phases"]] == [2, 18, 80, 100]
        assert all(nonzero(p["counts"]) == {"success": p["devices"]} for p in status["phases"])
        assert sim.summary().versions == {"1.1.0": DEVICES}

        # 3. The bad release: aborted in its first phase, its devices back on 1.1.0.
        before = {d.device_id: len(d.record.statuses) for d in sim.devices}
        bad = await deploy(
            "1.2.0",
            [{"percent": 10}, {"percent": 50}, {"percent": 100}],
            max_failure_rate=0.05,
        )
        try:
            await sim.wait(deployment_settled(url, token, bad), timeout_s=120)
        except TimeoutError:
            status = await api("GET", f"/api/v1/deployments/{bad}")
            stuck = [
                (
                    d.device_id,
                    d.record.statuses[-6:],
                    [ln.message for ln in d.agent.log.last(8)] if d.agent else None,
                )
                for d in sim.devices
                if d.record.statuses
                and d.record.statuses[-1] not in ("success", "failure", "rolled-back")
            ][:5]
            raise AssertionError(
                f"bad deployment did not settle: {status}\nstuck: {stuck}"
            ) from None
        status = await api("GET", f"/api/v1/deployments/{bad}")
        summary = sim.summary()

    assert status["status"] == "aborted", status
    assert status["open_phase"] == 0
    assert "phase 0" in status["reason"]
    assert summary.versions == {"1.1.0": DEVICES}
    phase0 = status["phases"][0]
    assert phase0["devices"] == 20
    assert set(nonzero(phase0["counts"])) <= {"failure", "rolled-back", "pending"}
    assert phase0["counts"].get("failure", 0) >= 2  # the crash-loop reverts
    assert summary.crashes > 0
    # No device outside phase 0 was touched: none of them reported anything about 1.2.0.
    for later in status["phases"][1:]:
        assert nonzero(later["counts"]) == {"pending": later["devices"]}
    touched = [d for d in sim.devices if len(d.record.statuses) > before[d.device_id]]
    assert 0 < len(touched) <= phase0["devices"]
