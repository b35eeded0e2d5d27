"""The simulator's drift fault: inferences drawn from the reference profile, some devices
shifted on some features, and the sketches that show exactly that drift.

The sampler and the device selection are checked on their own; then a small simulated
fleet (real agents, real HTTP, real signed bundles with a profile) runs against the stub
server with the sketch route (sketch_support.py), and the sketches each device sent are
compared with the profile by `tinyops.monitor.drift.compute_drift`. Last, the same with
the real server process: its sketch endpoint stores the windows and its drift API names
exactly the drifted device and feature.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server
from sketch_support import monitored_bundle, reference_profile, serve_with_sketches
from test_agent_support import HARDWARE, RELEASE_KEY, offer_for

from tinyops.errors import DataError, UsageError
from tinyops.fleet.simulator import (
    DriftFault,
    Faults,
    FleetSimulator,
    ProfileSampler,
    deployment_settled,
    parse_drift,
)
from tinyops.monitor.drift import compute_drift
from tinyops.monitor.reference import Histograms, ReferenceProfile, build_reference_profile


def mixed_profile() -> ReferenceProfile:
    """3,000 reference rows (over Evidently's 1,000: Wasserstein and Jensen–Shannon decide):
    a normal, a skewed, a uniform, a 4-valued discrete and a categorical feature; 3 classes."""
    rng = np.random.default_rng(21)
    n = 3000
    x = np.stack(
        [
            rng.normal(5.0, 2.0, n),
            rng.exponential(1.0, n),
            rng.uniform(-1.0, 1.0, n),
            rng.integers(0, 4, n).astype(float),
            rng.choice([10.0, 20.0, 30.0], n, p=[0.5, 0.3, 0.2]),
        ],
        axis=1,
    )
    probs = rng.dirichlet([4.0, 2.0, 1.0], size=n)
    return build_reference_profile(
        x,
        ["normal", "skewed", "uniform", "steps", "kind"],
        categorical=["kind"],
        probabilities=probs,
    )


def drifted(profile: ReferenceProfile, rows: Any, probs: Any) -> set[str]:
    report = compute_drift(profile, profile.histograms(rows, probabilities=probs))
    assert report.prediction is not None and not report.prediction.drifted
    assert report.confidence is not None and not report.confidence.drifted
    return {r.feature for r in report.features if r.drifted}


def test_inferences_drawn_from_the_profile_show_no_drift() -> None:
    profile = mixed_profile()
    rows, probs = ProfileSampler(profile, {}).sample(4000, np.random.default_rng(1))
    assert rows.shape == (4000, 5)
    assert probs is not None and probs.shape == (4000, 3)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert drifted(profile, rows, probs) == set()
    # Values stay in the reference's world: discrete values and categories are exact.
    assert set(np.unique(rows[:, 3])) <= {0.0, 1.0, 2.0, 3.0}
    assert set(np.unique(rows[:, 4])) == {10.0, 20.0, 30.0}


def test_shifted_features_drift_and_no_other_does() -> None:
    profile = mixed_profile()
    sampler = ProfileSampler(profile, {"normal": 1.0, "uniform": -0.5})
    rows, probs = sampler.sample(4000, np.random.default_rng(2))
    assert drifted(profile, rows, probs) == {"normal", "uniform"}
    # The shift is in reference standard deviations: the normal feature's mean moves by σ.
    normal = profile.feature("normal")
    base, _ = ProfileSampler(profile, {}).sample(4000, np.random.default_rng(2))
    assert rows[:, 0].mean() - base[:, 0].mean() == pytest.approx(normal.std, rel=1e-9)  # type: ignore[union-attr]


def test_sampling_is_reproducible_for_a_seed() -> None:
    sampler = ProfileSampler(mixed_profile(), {"skewed": 2.0})
    a = sampler.sample(100, np.random.default_rng(5))
    b = sampler.sample(100, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and a[1] is not None and b[1] is not None
    assert np.array_equal(a[1], b[1])


def test_drift_on_features_the_profile_cannot_shift_is_refused() -> None:
    with pytest.raises(DataError, match=r"features \['pixel'\] that the release's profile"):
        ProfileSampler(mixed_profile(), {"pixel": 1.0})
    with pytest.raises(DataError, match="'kind' is categorical"):
        ProfileSampler(mixed_profile(), {"kind": 1.0})


def sim_with(faults: Faults, devices: int = 40, seed: int = 9) -> FleetSimulator:
    return FleetSimulator(
        "http://127.0.0.1:9",
        "etk",
        devices,
        hardware=HARDWARE,
        trusted_keys=[RELEASE_KEY.public_key()],
        faults=faults,
        seed=seed,
    )


def test_drifted_devices_are_chosen_by_share_or_id_and_reproducibly() -> None:
    faults = Faults(
        drift=(
            DriftFault({"normal": 1.0}, share=0.25),
            DriftFault({"uniform": 2.0, "normal": 0.5}, devices=frozenset({"sim-000003"})),
        )
    )

    def shifts(sim: FleetSimulator) -> dict[str, dict[str, float]]:
        return {d.device_id: d.record.drift_shifts for d in sim.devices if d.record.drift_shifts}

    first = shifts(sim_with(faults))
    assert first == shifts(sim_with(faults))  # the same seed picks the same devices
    by_share = [d for d, s in first.items() if "normal" in s and s["normal"] in (1.0, 1.5)]
    assert 4 <= len(by_share) <= 16  # about a quarter of 40
    assert first["sim-000003"]["uniform"] == 2.0
    assert first["sim-000003"]["normal"] in (0.5, 1.5)  # shifts of both faults add up
    assert shifts(sim_with(faults, seed=10)) != first
    assert sim_with(faults).summary().drifted_devices == len(first)


def test_drift_faults_parse_from_the_command_line_form() -> None:
    assert parse_drift("20%:band_03=2,band_04=-1.5;sim-000001+sim-000007:band_00=3") == (
        DriftFault({"band_03": 2.0, "band_04": -1.5}, share=0.2),
        DriftFault({"band_00": 3.0}, devices=frozenset({"sim-000001", "sim-000007"})),
    )
    assert parse_drift("0.5:x=1") == (DriftFault({"x": 1.0}, share=0.5),)
    for bad, message in (
        ("20%", "SELECTION:FEATURE=SHIFT"),
        ("20%:band_03", "FEATURE=SHIFT"),
        ("20%:band_03=up", "FEATURE=SHIFT"),
        ("150%:x=1", "between 0 and 1"),
        ("20%:x=nan", "finite number"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_drift(bad)


DEVICES = 4
DRIFTED = "sim-000001"
PER_DEVICE = 3000  # inferences in each device's sketches before the verdicts are read


def test_a_drifted_device_sends_sketches_that_drift_on_exactly_its_features(
    tmp_path: Path,
) -> None:
    bundle = monitored_bundle(tmp_path, "1.0.0")
    with serve_with_sketches() as live:
        live.stub.artifacts[1] = bundle.read_bytes()
        for i in range(DEVICES):
            live.stub.answers[f"sim-{i:06d}"] = {
                "action": "update",
                "poll_interval_s": 0.1,
                "deployment_id": 1,
                "release": offer_for(bundle, 1),
                "rollback": None,
                "deadline": None,
            }
        sim = FleetSimulator(
            live.url,
            live.stub.enrollment_token,
            DEVICES,
            hardware=HARDWARE,
            trusted_keys=[RELEASE_KEY.public_key()],
            faults=Faults(drift=(DriftFault({"column_02": 2.0}, devices=frozenset({DRIFTED})),)),
            seed=4,
            poll_interval_s=0.1,
            inferences_per_poll=200,
            sketch_window_s=0.5,
        )

        def counts() -> dict[str, int]:
            out: dict[str, int] = defaultdict(int)
            for body, device in zip(live.received, live.devices, strict=True):
                out[device] += body["count"]
            return out

        async def enough(_sim: FleetSimulator) -> bool:
            seen = counts()
            return len(seen) == DEVICES and min(seen.values()) >= PER_DEVICE

        summary = asyncio.run(sim.run(enough, timeout_s=120))
    assert summary.versions == {"1.0.0": DEVICES}
    assert summary.drifted_devices == 1 and summary.inference_errors == 0
    merged: dict[str, Histograms] = {}
    for body, device in zip(live.received, live.devices, strict=True):
        assert body["release"] == {"name": "digits", "version": "1.0.0"}
        h = Histograms.from_dict(body["histograms"])
        merged[device] = merged[device].merged(h) if device in merged else h
    profile = reference_profile()
    verdicts = {}
    for device, h in merged.items():
        report = compute_drift(profile, h)
        verdicts[device] = {r.feature for r in report.features if r.drifted}
        assert report.prediction is not None and not report.prediction.drifted
    assert verdicts == {f"sim-{i:06d}": ({"column_02"} if i == 1 else set()) for i in range(4)}


# ---- against the real server ---------------------------------------------------------


@pytest.fixture
def fleet_server(tmp_path: Path) -> Iterator[Server]:
    running = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        extra_args=["--poll-interval", "0.3", "--update-poll-interval", "0.3"],
    )
    try:
        yield running
    finally:
        running.stop()


def test_the_server_sees_drift_on_exactly_the_drifted_devices_and_features(
    fleet_server: Server,
    tmp_path: Path,
    kws_payload: tuple[dict[str, bytes], dict[str, Any]],
    release_key: Ed25519PrivateKey,
) -> None:
    """The simulator (real agents) → the real server's sketch endpoint → its drift API."""
    from drift_testlib import release_with_profile_on

    token = fleet_server.start(init=True)
    assert token is not None
    url, headers = fleet_server.url, {"Authorization": f"Bearer {token}"}

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
            body = {
                "release": {"name": "kws", "version": "1.0.0", "target": "nano33ble"},
                "selector": {"tags": {"group": "lab"}},
                "phases": [{"percent": 100}],
            }
            deployment = int((await call("POST", "/api/v1/deployments", json=body))["id"])
            await sim.wait(deployment_settled(url, token, deployment), timeout_s=120)
            await sim.wait(sketched, timeout_s=120)
        page: dict[str, Any] = await call(
            "GET", "/api/v1/drift/devices", params={"release": "kws@1.0.0"}
        )
        return page

    page = asyncio.run(scenario())
    verdicts = {d["device"]: d["drifted_features"] for d in page["devices"]}
    assert verdicts == {f"sim-{i:06d}": (["f1"] if i == 1 else []) for i in range(DEVICES)}
    assert not any(d["prediction_drift"] for d in page["devices"])
