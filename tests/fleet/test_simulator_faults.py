"""The simulator's fault injection: parsing, and a rollout that completes through power
losses, corrupted downloads, dropped requests, slow links and skewed clocks (real server
process, real agents)."""

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

from tinyops.errors import UsageError
from tinyops.fleet.simulator import Faults, FleetSimulator, deployment_settled, parse_faults


def test_parse_faults_reads_percentages_shares_and_seconds() -> None:
    faults = parse_faults("power-loss=2%,corrupt-download=0.01, clock-skew=30,crash=50%", ["1.2.0"])
    assert faults == Faults(
        power_loss=0.02,
        corrupt_download=0.01,
        clock_skew_s=30.0,
        crash=0.5,
        bad_versions=frozenset({"1.2.0"}),
    )
    assert parse_faults("") == Faults()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("power-loss", "is not NAME=VALUE"),
        ("sunspots=2%", "is not NAME=VALUE with NAME one of"),
        ("power-loss=lots", "'lots' is not a number or a percentage"),
        ("power-loss=150%", "is not a share between 0 and 100%"),
    ],
)
def test_parse_faults_errors_name_the_fault(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_faults(text)


def test_fault_draws_are_reproducible_per_seed() -> None:
    def draws(seed: int) -> list[tuple[bool, bool, bool]]:
        sim = FleetSimulator(
            "http://127.0.0.1:9", "etk_x", 50, hardware="rpi4",
            trusted_keys=[Ed25519PrivateKey.generate().public_key()],
            faults=Faults(slow_link=0.3, crash=0.3, selftest_fail=0.3), seed=seed,
        )  # fmt: skip
        return [(d.slow, d.crashes_on_bad, d.fails_on_bad) for d in sim.devices]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert 0 < sum(s for s, _, _ in draws(1)) < 50


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(
        tmp_path / "fleet", None, tmp_path / "server.log",
        extra_args=["--poll-interval", "1", "--update-poll-interval", "1",
                    "--evaluate-interval", "0.2", "--flush-interval", "0.5"],
    )  # fmt: skip
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.slow
def test_rollout_completes_through_network_and_power_faults(
    server: Server, build_bundle: Callable[..., Path], release_key: Ed25519PrivateKey
) -> None:
    token = server.start(init=True)
    assert token is not None
    headers = {"Authorization": f"Bearer {token}"}

    def api(method: str, path: str, **kwargs: Any) -> Any:
        r = httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)
        assert r.status_code < 400, r.text
        return r.json()

    pem = release_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    api("POST", "/api/v1/trusted-keys", json={"name": "ci", "public_key_pem": pem.decode()})
    api("POST", "/api/v1/releases", content=build_bundle("1.0.0").read_bytes())
    etk = api("POST", "/api/v1/enrollment-tokens", json={"name": "lab"})["token"]
    faults = Faults(
        power_loss=0.25,
        corrupt_download=0.25,
        network_drop=0.05,
        slow_link=0.3,
        slow_link_bytes_per_s=100_000,
        clock_skew_s=120,
    )
    sim = FleetSimulator(
        server.url, etk, 40, hardware="nano33ble", trusted_keys=[release_key.public_key()],
        tags={"group": "lab"}, faults=faults, seed=3, poll_interval_s=1.0,
    )  # fmt: skip

    async def scenario() -> tuple[Any, dict[str, Any]]:
        async def enrolled(_sim: FleetSimulator) -> bool:
            page = await asyncio.to_thread(api, "GET", "/api/v1/devices", params={"limit": 100})
            return len(page["devices"]) == 40

        async with sim:
            await sim.wait(enrolled, timeout_s=120)
            body = {
                "release": {"name": "kws", "version": "1.0.0", "target": "nano33ble"},
                "selector": {"tags": {"group": "lab"}},
                "phases": [{"percent": 25}, {"percent": 100}],
                "max_failure_rate": 0.25,
            }
            dep = (await asyncio.to_thread(api, "POST", "/api/v1/deployments", json=body))["id"]
            try:
                summary = await sim.wait(deployment_settled(server.url, token, dep), timeout_s=90)
            except TimeoutError:
                status = await asyncio.to_thread(api, "GET", f"/api/v1/deployments/{dep}")
                stuck = [
                    (
                        d.device_id,
                        d.record.statuses[-5:],
                        d.record.resets,
                        [ln.message for ln in d.agent.log.last(6)] if d.agent else None,
                    )
                    for d in sim.devices
                    if not d.record.statuses or d.record.statuses[-1] not in ("success", "failure")
                ][:4]
                raise AssertionError(f"{status['phases']}\n{stuck}") from None
            status = await asyncio.to_thread(api, "GET", f"/api/v1/deployments/{dep}")
            return summary, status

    summary, status = asyncio.run(scenario())
    assert status["status"] == "succeeded", status
    # The faults really happened, and the devices came through them.
    assert summary.power_losses > 0 and summary.resets == summary.power_losses
    assert summary.corrupted_downloads > 0
    assert summary.dropped_requests > 0
    succeeded = sum(p["counts"].get("success", 0) for p in status["phases"])
    assert summary.versions.get("1.0.0", 0) == succeeded >= 30
