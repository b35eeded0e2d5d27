"""The server's KS test on raw samples, through a real `python -m tinyops.fleet.server`
process on SQLite and PostgreSQL.

The release's profile carries reference rows (800 training rows: a small reference, so
'auto' picks KS given samples) and its policy lets devices send 500 raw samples a window.
The current data is the hand-made case of tests/monitor/test_drift_ks_reference.py: the
reference rows moved to their bins' upper edges, so the histograms equal the reference's
(chi-squared p = 1, no drift on binned data) while the raw values do not (KS p ≪ 0.05).
A device that sent 500 such samples is judged by KS and drifts; one that sent 20 (fewer
than ks_min_samples, 100) is judged on its histograms and does not; the fleet's merged
windows hold 520 samples and drift. Every statistic is recomputed here by hand.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from drift_testlib import HOUR, T0, bundle_with_profile, installed, policy, reference_data
from fleet_process import Server
from numpy.typing import NDArray

from tinyops.monitor.drift import compute_drift, ks_pvalue
from tinyops.monitor.reference import NumericProfile, ReferenceProfile, build_reference_profile

Payload = tuple[dict[str, bytes], dict[str, Any]]
FEATURES = ("f0", "f1", "f2", "mode")
ROWS = 800


def on_upper_edges(profile: ReferenceProfile, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Numeric values moved to their bin's upper edge (the open last bin: its mean)."""
    out = x.copy()
    for j, feat in enumerate(profile.features):
        if isinstance(feat, NumericProfile):
            edges = np.asarray(feat.edges)
            uppers = np.append(edges, feat.bin_means[-1])
            out[:, j] = uppers[np.searchsorted(edges, x[:, j], side="left")]
    return out


def body(
    profile: ReferenceProfile, x: NDArray[np.float64], n_samples: int, tag: str
) -> dict[str, Any]:
    return {
        "release": {"name": "kws", "version": "1.0.0"},
        "window": {"start": T0.isoformat(), "end": (T0 + HOUR).isoformat()},
        "count": int(x.shape[0]),
        "histograms": profile.histograms(x).to_dict(),
        "samples": [
            {"features": row, "prediction": 0, "id": f"{tag}-{i}"}
            for i, row in enumerate(x[:n_samples].tolist())
        ],
    }


def test_the_drift_api_runs_ks_on_the_windows_raw_samples(
    db_url: str, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    x = reference_data(ROWS, 1)
    profile = build_reference_profile(x, FEATURES, categorical=["mode"], reference_samples=1000)
    ref = profile.sample_matrix()
    assert ref is not None and ref.shape == (ROWS, 4)
    cur = on_upper_edges(profile, x)
    server = Server(tmp_path / "fleet", db_url, tmp_path / "server.log")
    try:
        token = server.start(init=True)
        assert token is not None
        admin = {"Authorization": f"Bearer {token}"}

        def call(method: str, path: str, expect: int, **kwargs: Any) -> Any:
            headers = kwargs.pop("headers", admin)
            r = httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
            return r.json() if r.content else None

        pem = release_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        call(
            "POST", "/api/v1/trusted-keys", 201, json={"name": "ci", "public_key_pem": pem.decode()}
        )
        bundle = bundle_with_profile(
            tmp_path / "b",
            kws_payload,
            release_key,
            profile=json.loads(json.dumps(profile.to_dict())),
            policy_json=policy(max_samples=500),
        )
        call("POST", "/api/v1/releases", 201, content=bundle.read_bytes())
        etk = call("POST", "/api/v1/enrollment-tokens", 201, json={"name": "lab"})["token"]
        for device_id, n_samples in (("edge-1", 500), ("few-1", 20)):
            enrolled = call(
                "POST",
                "/api/v1/device/enroll",
                201,
                headers={},
                json={
                    "enrollment_token": etk,
                    "device_id": device_id,
                    "hardware": "nano33ble",
                    "tags": {},
                    "installed": installed(),
                },
            )
            device = {"Authorization": f"Bearer {enrolled['device_token']}"}
            sent = body(profile, cur, n_samples, device_id)
            call("POST", "/api/v1/device/sketches", 202, headers=device, json=sent)

        def report(**selection: str) -> dict[str, Any]:
            params = {
                "release": "kws@1.0.0",
                "start": (T0 - timedelta(minutes=1)).isoformat(),
                "end": (T0 + 2 * HOUR).isoformat(),
                **selection,
            }
            answer: dict[str, Any] = call("GET", "/api/v1/drift", 200, params=params)
            return answer

        edge, few, fleet = report(device="edge-1"), report(device="few-1"), report()
    finally:
        server.stop()

    def rows(answer: dict[str, Any]) -> dict[str, tuple[str, float, bool]]:
        return {
            f["feature"]: (f["method"], f["statistic"], f["drifted"])
            for f in answer["report"]["features"]
        }

    # The binned verdict on these histograms, by hand: identical to the reference's.
    binned = compute_drift(profile, profile.histograms(cur))
    assert [(f.method, f.statistic, f.drifted) for f in binned.features[:3]] == [
        ("chisquare", 1.0, False)
    ] * 3

    assert edge["samples"] == 500 and few["samples"] == 20 and fleet["samples"] == 520
    by_hand = {name: ks_pvalue(ref[:, j], cur[:500, j]) for j, name in enumerate(FEATURES[:3])}
    got = rows(edge)
    for name, p in by_hand.items():
        assert got[name][0] == "ks" and got[name][1] == pytest.approx(p, rel=1e-9)
        assert p < 0.05 and got[name][2]
    assert got["mode"][0] == "chisquare" and not got["mode"][2]  # categorical: no KS
    assert edge["report"]["dataset_drift"]

    # 20 samples are fewer than ks_min_samples (100): the histograms decide, no drift.
    assert {k: v for k, v in rows(few).items() if k != "mode"} == {
        name: ("chisquare", 1.0, False) for name in FEATURES[:3]
    }
    assert not few["report"]["dataset_drift"]

    # The fleet: both windows summed, the 520 samples of both devices in KS.
    both = np.concatenate([cur[:500], cur[:20]])
    got = rows(fleet)
    for j, name in enumerate(FEATURES[:3]):
        assert got[name][0] == "ks"
        assert got[name][1] == pytest.approx(ks_pvalue(ref[:, j], both[:, j]), rel=1e-9)
        assert got[name][2]
