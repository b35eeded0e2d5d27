"""The drift API (GET /api/v1/drift, /drift/devices, /drift/profile), the DriftSource
metrics and /metrics, on SQLite and PostgreSQL with the real store.

A fleet of four devices runs kws 1.0.0: two in group "north" whose f0 sensor shifted by
one standard deviation, two in group "south" that see reference-like data. Every verdict
is checked against `compute_drift` on histograms summed here by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drift_testlib import (
    HOUR,
    T0,
    auth,
    bundle_with_profile,
    installed,
    policy,
    reference_profile,
    sketch,
)
from fleet_inprocess import running_fleet
from prometheus_client.parser import text_string_to_metric_families

from tinyops.errors import ProjectError
from tinyops.monitor.config import DriftConfig
from tinyops.monitor.drift import compute_drift
from tinyops.monitor.reference import Histograms

pytestmark = pytest.mark.anyio

Payload = tuple[dict[str, bytes], dict[str, Any]]
DEVICES = {"n-1": "north", "n-2": "north", "s-1": "south", "s-2": "south"}
SHIFTED = {"n-1", "n-2"}


async def _drifting_fleet(
    fleet: Any, tmp_path: Path, payload: Payload, key: Ed25519PrivateKey, start: datetime
) -> dict[str, dict[str, Any]]:
    """Upload the release, enroll the devices, send two windows each; the bodies sent."""
    await fleet.trust(key)
    r = await fleet.upload(bundle_with_profile(tmp_path / "b", payload, key))
    assert r.status_code == 201, r.text
    profile = reference_profile()
    sent: dict[str, dict[str, Any]] = {}
    for i, (device_id, group) in enumerate(sorted(DEVICES.items())):
        device = await fleet.enroll(device_id, tags={"group": group}, installed=installed())
        for hour in range(2):
            body = sketch(
                profile,
                start + hour * HOUR,
                seed=100 + 10 * i + hour,
                shift={"f0": 1.0} if device_id in SHIFTED else None,
            )
            r = await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
            assert r.status_code == 202, r.text
            sent[f"{device_id}/{hour}"] = body
    return sent


def _summed(bodies: list[dict[str, Any]]) -> Histograms:
    hist = Histograms.from_dict(bodies[0]["histograms"])
    for body in bodies[1:]:
        hist = hist.merged(Histograms.from_dict(body["histograms"]))
    return hist


def _params(**extra: str) -> dict[str, str]:
    return {
        "release": "kws@1.0.0",
        "start": T0.isoformat(),
        "end": (T0 + 2 * HOUR).isoformat(),
        **extra,
    }


async def test_drift_per_fleet_device_and_group(
    fleet_on_each_db: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    sent = await _drifting_fleet(fleet, tmp_path, kws_payload, release_key, T0)
    profile = reference_profile()
    viewer = await fleet.token("viewer")

    r = await fleet.client.get("/api/v1/drift", params=_params(), headers=viewer)
    assert r.status_code == 200, r.text
    whole = r.json()
    assert (whole["windows"], whole["devices"], whole["count"]) == (8, 4, 8 * 2000)
    expected = compute_drift(profile, _summed(list(sent.values())))
    assert whole["report"] == expected.to_dict()
    assert whole["histograms"] == _summed(list(sent.values())).to_dict()
    assert whole["release"] == {"name": "kws", "version": "1.0.0", "targets": ["nano33ble"]}
    assert whole["window"] == {"start": "2026-11-01T00:00:00Z", "end": "2026-11-01T02:00:00Z"}

    r = await fleet.client.get("/api/v1/drift", params=_params(device="n-1"), headers=viewer)
    one = r.json()
    assert one["windows"] == 2 and one["devices"] == 1
    assert (
        one["report"] == compute_drift(profile, _summed([sent["n-1/0"], sent["n-1/1"]])).to_dict()
    )
    assert one["report"]["drifted_features"] == ["f0"]
    assert one["selection"] == {"device": "n-1", "group": None}

    for group, drifted in (("north", ["f0"]), ("south", [])):
        r = await fleet.client.get(
            "/api/v1/drift", params=_params(group=f"group:{group}"), headers=viewer
        )
        report = r.json()["report"]
        assert r.json()["devices"] == 2
        assert report["drifted_features"] == drifted, group
        assert report["dataset_drift"] is False  # 1 of 4 features is below the 0.5 share

    # Only the windows within the range count.
    r = await fleet.client.get(
        "/api/v1/drift", params=_params(end=(T0 + HOUR).isoformat()), headers=viewer
    )
    assert r.json()["windows"] == 4
    # A range with no window: an answer without a report.
    r = await fleet.client.get(
        "/api/v1/drift",
        params=_params(start=(T0 + 5 * HOUR).isoformat(), end=(T0 + 6 * HOUR).isoformat()),
        headers=viewer,
    )
    assert r.status_code == 200
    assert (r.json()["windows"], r.json()["report"], r.json()["histograms"]) == (0, None, None)

    r = await fleet.client.get("/api/v1/drift/devices", params=_params(), headers=viewer)
    assert r.status_code == 200, r.text
    verdicts = {d["device"]: d for d in r.json()["devices"]}
    assert sorted(verdicts) == sorted(DEVICES)
    for device_id in DEVICES:
        assert verdicts[device_id]["drifted_features"] == (
            ["f0"] if device_id in SHIFTED else []
        ), device_id
        assert verdicts[device_id]["windows"] == 2 and verdicts[device_id]["count"] == 4000
        assert verdicts[device_id]["prediction_drift"] is False
    # Paging by device id.
    r = await fleet.client.get("/api/v1/drift/devices", params=_params(limit="3"), headers=viewer)
    page = r.json()
    assert [d["device"] for d in page["devices"]] == ["n-1", "n-2", "s-1"]
    assert page["next_after"] == "s-1"
    r = await fleet.client.get(
        "/api/v1/drift/devices", params=_params(limit="3", after="s-1"), headers=viewer
    )
    assert [d["device"] for d in r.json()["devices"]] == ["s-2"] and r.json()["next_after"] is None
    r = await fleet.client.get(
        "/api/v1/drift/devices", params=_params(group="group:south"), headers=viewer
    )
    assert [d["device"] for d in r.json()["devices"]] == ["s-1", "s-2"]

    r = await fleet.client.get(
        "/api/v1/drift/profile", params={"release": "kws@1.0.0"}, headers=viewer
    )
    assert r.json()["profile"] == profile.to_dict()
    assert r.json()["policy"] == policy()
    assert r.json()["config"] == DriftConfig().model_dump(mode="json")


async def test_drift_api_refusals(
    fleet: Any,
    tmp_path: Path,
    kws_payload: Payload,
    release_key: Ed25519PrivateKey,
    build_bundle: Any,
) -> None:
    await fleet.trust(release_key)
    assert (await fleet.upload(build_bundle("0.9.0"))).status_code == 201
    r = await fleet.upload(bundle_with_profile(tmp_path / "b", kws_payload, release_key))
    assert r.status_code == 201
    cases = [
        ({"release": "kws"}, 422, "release"),
        ({"release": "kws@1.0.0", "group": "nocolon"}, 422, "group"),
        ({"release": "kws@1.0.0", "device": "bad id!"}, 422, "device"),
        ({"release": "kws@1.0.0", "start": "yesterday"}, 422, "start"),
        ({"release": "kws@1.0.0", "start": "2026-11-01T00:00:00"}, 422, "start"),
        (
            {
                "release": "kws@1.0.0",
                "start": "2026-11-02T00:00:00Z",
                "end": "2026-11-01T00:00:00Z",
            },
            422,
            "start",
        ),
        ({"release": "kws@1.0.0", "device": "a", "group": "group:x"}, 422, "group"),
        # No room for the default day before it (found by the fuzz test: it was a 500).
        ({"release": "kws@1.0.0", "end": "0001-01-01T00:00:00Z"}, 422, "end"),
        ({"release": "kws@3.0.0"}, 404, None),
        ({"release": "kws@0.9.0"}, 409, "release"),
    ]
    for params, status, field in cases:
        r = await fleet.client.get("/api/v1/drift", params=params, headers=fleet.admin)
        assert r.status_code == status, (params, r.text)
        assert r.json()["error"]["field"] == field, (params, r.json())
    r = await fleet.client.get("/api/v1/drift", params={"release": "kws@1.0.0"})
    assert r.status_code == 401


async def test_drift_source_series_and_metrics_endpoint(
    fleet_on_each_db: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    # Windows of the last two hours: the latest one of each device is current.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - 2 * HOUR
    sent = await _drifting_fleet(fleet, tmp_path, kws_payload, release_key, start)
    source = fleet.runtime.drift_source
    assert set(source.metrics()) >= {
        "feature_drift_score",
        "feature_drifted",
        "dataset_drift_share",
        "prediction_drift_score",
        "confidence_drift_score",
        "model_accuracy",
        "model_accuracy_reference",
    }
    samples = list(source.collect(datetime.now(UTC)))
    drifted = {
        (s.labels.get("device") or s.labels.get("group"), s.labels["feature"])
        for s in samples
        if s.metric == "feature_drifted" and s.value == 1.0
    }
    assert drifted == {("n-1", "f0"), ("n-2", "f0"), ("group:north", "f0")}
    # Device series judge the latest window alone: the same numbers compute_drift gives.
    profile = reference_profile()
    latest = compute_drift(profile, Histograms.from_dict(sent["s-1/1"]["histograms"]))
    score = {
        s.labels["feature"]: (s.value, s.labels["method"])
        for s in samples
        if s.metric == "feature_drift_score" and s.labels.get("device") == "s-1"
    }
    assert score == {f.feature: (f.statistic, f.method) for f in latest.features}
    share = [
        s for s in samples if s.metric == "dataset_drift_share" and s.labels.get("device") == "n-1"
    ]
    assert [s.value for s in share] == [0.25]
    assert all(s.labels["release"] == "kws@1.0.0" for s in samples)
    # Group series: the latest windows of the group's devices, summed.
    north = compute_drift(profile, _summed([sent["n-1/1"], sent["n-2/1"]]))
    group_pred = [
        s.value
        for s in samples
        if s.metric == "prediction_drift_score" and s.labels.get("group") == "group:north"
    ]
    assert group_pred == [north.prediction.statistic if north.prediction else None]

    r = await fleet.client.get("/metrics", headers=fleet.admin)
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    exposed = {
        (s.labels.get("device", ""), s.labels["feature"])
        for s in families["tinyops_feature_drifted"].samples
        if s.value == 1.0
    }
    assert exposed == {("n-1", "f0"), ("n-2", "f0"), ("", "f0")}
    # Windows that ended long ago are not anyone's current state.
    later = datetime.now(UTC) + timedelta(hours=4)
    assert [s for s in source.collect(later) if s.metric.startswith("feature_")] == []


async def test_small_windows_are_summed_to_min_count_or_give_no_verdict(
    fleet: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    """A verdict needs DriftConfig.min_count (1000) inferences: a device's latest window of
    400 is judged together with its earlier ones, newest first, until they hold 1000; a
    device with 600 in all gets no drift series (its distances would be sampling noise)."""
    await fleet.trust(release_key)
    r = await fleet.upload(bundle_with_profile(tmp_path / "b", kws_payload, release_key))
    assert r.status_code == 201, r.text
    profile = reference_profile()
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    plan = {"busy": (700, 500, 400), "quiet": (300, 300)}  # inferences per hour, oldest first
    sent: dict[str, list[dict[str, Any]]] = {}
    for device_id, counts in plan.items():
        device = await fleet.enroll(device_id, tags={"group": "lab"}, installed=installed())
        for hour, rows in enumerate(counts):
            start = now - (len(counts) - hour) * HOUR
            body = sketch(profile, start, rows=rows, seed=hour, shift={"f0": 1.0})
            r = await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
            assert r.status_code == 202, r.text
            sent.setdefault(device_id, []).append(body)

    samples = list(fleet.runtime.drift_source.collect(datetime.now(UTC)))
    judged = {s.labels.get("device") for s in samples if s.metric == "dataset_drift_share"}
    # "quiet" has 600 inferences in all; the group "lab" sums its devices' latest windows
    # only (400 + 300), short of 1000 too.
    assert judged == {"busy"}
    # "busy": the latest two windows (400 + 500 = 900) are short, the third makes 1600.
    expected = compute_drift(profile, _summed(sent["busy"]))
    score = {
        s.labels["feature"]: s.value
        for s in samples
        if s.metric == "feature_drift_score" and s.labels.get("device") == "busy"
    }
    assert score == {f.feature: f.statistic for f in expected.features}
    assert ("busy", "f0") in {
        (s.labels.get("device"), s.labels["feature"])
        for s in samples
        if s.metric == "feature_drifted" and s.value == 1.0
    }


async def test_a_server_drift_config_changes_methods_and_a_bad_one_is_refused(
    tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    from fleet_inprocess import fleet_settings

    from tinyops.fleet.server.drift_service import load_drift_config

    config = tmp_path / "drift.yaml"
    config.write_text("numeric_method: psi\nthresholds:\n  psi: 0.2\n")
    settings = fleet_settings(tmp_path / "fleet", drift_config=config)
    async with running_fleet(settings) as fleet:
        await _drifting_fleet(fleet, tmp_path, kws_payload, release_key, T0)
        r = await fleet.client.get("/api/v1/drift", params=_params(), headers=fleet.admin)
        rows = {f["feature"]: f for f in r.json()["report"]["features"]}
        assert [rows[n]["method"] for n in ("f0", "f1", "f2")] == ["psi"] * 3
        assert rows["f0"]["threshold"] == 0.2
        assert rows["mode"]["method"] == "jensenshannon"

    bad = tmp_path / "bad.yaml"
    bad.write_text("numeric_method: median\n")
    with pytest.raises(ProjectError, match=r"bad.yaml: numeric_method"):
        load_drift_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("numeric_method: [\n")
    with pytest.raises(ProjectError, match=r"broken\.yaml"):
        load_drift_config(broken)

    # A project file gives its monitoring.drift, and errors name the key from the top.
    project = tmp_path / "tinyops.yaml"
    project.write_text("name: kws\nmonitoring:\n  drift:\n    thresholds: {psi: 0.3}\n")
    assert load_drift_config(project).thresholds.psi == 0.3
    project.write_text("name: kws\nmonitoring:\n  drift:\n    drift_share: 2\n")
    with pytest.raises(ProjectError, match=r"tinyops\.yaml: monitoring\.drift\.drift_share"):
        load_drift_config(project)


async def test_a_release_policy_drift_config_wins(
    fleet: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    await fleet.trust(release_key)
    path = bundle_with_profile(
        tmp_path / "b",
        kws_payload,
        release_key,
        policy_json=policy(drift={"per_feature_threshold": {"f1": 0.01}}),
    )
    assert (await fleet.upload(path)).status_code == 201
    device = await fleet.enroll("s-1", installed=installed())
    body = sketch(reference_profile(), T0, seed=7)
    assert (
        await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
    ).status_code == 202
    r = await fleet.client.get(
        "/api/v1/drift", params=_params(end=(T0 + HOUR).isoformat()), headers=fleet.admin
    )
    report = r.json()["report"]
    f1 = next(f for f in report["features"] if f["feature"] == "f1")
    assert f1["threshold"] == 0.01 and f1["drifted"] is (f1["statistic"] >= 0.01)
    assert np.isclose(
        f1["statistic"],
        compute_drift(reference_profile(), Histograms.from_dict(body["histograms"]))
        .feature("f1")
        .statistic,
    )


def test_client_helpers_against_a_real_server_process(
    tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    import httpx
    from fleet_inprocess import public_pem
    from fleet_process import Server

    from tinyops.fleet import client as fc

    server = Server(tmp_path / "data", None, tmp_path / "server.log")
    admin = server.start(init=True)
    assert admin is not None
    try:
        fc.add_trusted_key(server.url, admin, "ci", _pem_file(tmp_path, public_pem(release_key)))
        fc.upload_release(
            server.url,
            admin,
            bundle_with_profile(
                tmp_path / "b",
                kws_payload,
                release_key,
                policy_json=policy(max_samples=2, reference_accuracy=0.8),
            ),
        )
        etk = fc.create_enrollment_token(server.url, admin, "lab")["token"]
        profile = reference_profile()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for device_id, group in sorted(DEVICES.items()):
                token = http.post(
                    "/api/v1/device/enroll",
                    json={
                        "enrollment_token": etk,
                        "device_id": device_id,
                        "hardware": "nano33ble",
                        "tags": {"group": group},
                        "installed": installed(),
                    },
                ).json()["device_token"]
                samples = [{"features": [0.0, 5.0, 0.0, 0.0], "prediction": 1, "id": "p-1"}]
                body = sketch(
                    profile,
                    T0,
                    shift={"f0": 1.0} if device_id in SHIFTED else None,
                    samples=samples,
                )
                r = http.post(
                    "/api/v1/device/sketches",
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 202, r.text
        end = T0 + HOUR
        report = fc.get_drift(
            server.url, admin, "kws@1.0.0", group="group:north", start=T0, end=end
        )
        assert report["report"]["drifted_features"] == ["f0"] and report["devices"] == 2
        verdicts = fc.drift_devices(server.url, admin, "kws@1.0.0", start=T0, end=end)
        assert {v["device"]: v["drifted_features"] for v in verdicts} == {
            d: (["f0"] if d in SHIFTED else []) for d in DEVICES
        }
        assert fc.drift_profile(server.url, admin, "kws@1.0.0")["profile"] == profile.to_dict()
        assert fc.submit_feedback(server.url, admin, "kws", "1.0.0", "n-1", {"p-1": 1}) == {
            "accepted": 1
        }
        performance = fc.get_drift(
            server.url, admin, "kws@1.0.0", device_id="n-1", start=T0, end=end
        )["performance"]
        assert performance == {
            "labeled": 1,
            "correct": 1,
            "accuracy": 1.0,
            "reference_accuracy": 0.8,
        }
        with pytest.raises(fc.FleetClientError) as info:
            fc.submit_feedback(server.url, admin, "kws", "1.0.0", "n-1", {"p-404": 1})
        assert info.value.status == 422 and info.value.field == "items[0].prediction_id"
        added = fc.submit_samples(
            server.url, admin, "kws/field", [{"features": [1.0, 2.0], "label": 1}] * 3
        )
        assert added == {"accepted": 3, "total": 3}
        listed = fc.list_samples(server.url, admin, "kws/field", page_size=2)
        assert [s["label"] for s in listed] == [1, 1, 1]
    finally:
        server.stop()


def _pem_file(tmp_path: Path, pem: str) -> Path:
    path = tmp_path / "release.pub"
    path.write_text(pem)
    return path
