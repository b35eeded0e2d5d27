"""Helpers of the server-side drift tests: bundles carrying a reference profile, sketches.

The profile is built with the real `build_reference_profile` from a synthetic training
split (three numeric features and one categorical, three classes); the bundle is the real
KWS bundle of tests/fleet/conftest.py with the two monitoring members added, signed.
Sketches are binned with `ReferenceProfile.histograms`, the rule devices apply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from numpy.typing import NDArray

from tinyops.monitor.reference import ReferenceProfile, build_reference_profile

FEATURES = ("f0", "f1", "f2", "mode")
N_CLASSES = 3
REFERENCE_ROWS = 4000
T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def reference_data(rows: int, seed: int, shift: dict[str, float] | None = None) -> NDArray[Any]:
    """Rows of the synthetic inputs; `shift` moves features by that many std deviations."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(0.0, 1.0, rows),
            rng.normal(5.0, 2.0, rows),
            rng.uniform(-1.0, 1.0, rows),
            rng.choice([0.0, 1.0, 2.0], size=rows, p=[0.5, 0.3, 0.2]),
        ]
    )
    stds = {"f0": 1.0, "f1": 2.0, "f2": 2 / np.sqrt(12)}
    for name, by in (shift or {}).items():
        j = FEATURES.index(name)
        if name == "mode":
            x[:, j] = 2.0  # every value becomes the rarest category
        else:
            x[:, j] += by * stds[name]
    return x


def probabilities(rows: int, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed + 1000)
    p = rng.dirichlet([2.0, 1.0, 1.0], size=rows)
    return np.asarray(p, dtype=np.float64)


def reference_profile() -> ReferenceProfile:
    return build_reference_profile(
        reference_data(REFERENCE_ROWS, 1),
        FEATURES,
        categorical=["mode"],
        probabilities=probabilities(REFERENCE_ROWS, 1),
    )


def policy(max_samples: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "format": "tinyops.monitoring-policy",
        "version": 1,
        "window_s": 3600,
        "summaries": "columns",
        "sampling": {"max_samples_per_window": max_samples},
        **extra,
    }


def bundle_with_profile(
    out: Path,
    kws_payload: tuple[dict[str, bytes], dict[str, Any]],
    key: Ed25519PrivateKey,
    version: str = "1.0.0",
    *,
    profile: dict[str, Any] | None = None,
    policy_json: dict[str, Any] | None = None,
    members: dict[str, bytes] | None = None,
) -> Path:
    """A signed KWS bundle with monitoring/profile.json and policy.json (or `members`)."""
    from tinyops.bundle.bundle import write_bundle

    files, model = kws_payload
    if members is None:
        members = {
            "monitoring/profile.json": json.dumps(
                profile if profile is not None else reference_profile().to_dict()
            ).encode(),
            "monitoring/policy.json": json.dumps(
                policy_json if policy_json is not None else policy()
            ).encode(),
        }
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return write_bundle(
        out,
        name="kws",
        version=version,
        target="nano33ble",
        files={**files, **members},
        private_key=key,
        model=model,
        measured={"arena_bytes": 24_000, "latency_ms": 12.0},
        created_at=created,
        expires_at=created + timedelta(days=3650),
    )


def sketch(
    profile: ReferenceProfile,
    start: datetime,
    *,
    rows: int = 2000,
    seed: int = 7,
    shift: dict[str, float] | None = None,
    version: str = "1.0.0",
    samples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON body of POST /api/v1/device/sketches for one window of `rows` inferences."""
    x = reference_data(rows, seed, shift)
    hist = profile.histograms(x, probabilities=probabilities(rows, seed))
    body: dict[str, Any] = {
        "release": {"name": "kws", "version": version},
        "window": {"start": start.isoformat(), "end": (start + HOUR).isoformat()},
        "count": rows,
        "histograms": hist.to_dict(),
    }
    if samples is not None:
        body["samples"] = samples
    return body


def installed(version: str = "1.0.0") -> dict[str, Any]:
    return {"name": "kws", "version": version, "sha256": None}


def auth(device: dict[str, str]) -> dict[str, str]:
    return {"Authorization": device["Authorization"]}


def release_with_profile_on(
    api: Callable[..., Any],
    out: Path,
    kws_payload: tuple[dict[str, bytes], dict[str, Any]],
    key: Ed25519PrivateKey,
) -> str:
    """Trust `key` on a running server, upload kws 1.0.0 with a reference profile, and
    return a new enrollment token. `api(method, path, **kwargs)` calls the management API
    as an admin and returns the JSON answer."""
    from cryptography.hazmat.primitives import serialization

    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    api("POST", "/api/v1/trusted-keys", json={"name": "ci", "public_key_pem": pem.decode()})
    api("POST", "/api/v1/releases", content=bundle_with_profile(out, kws_payload, key).read_bytes())
    return str(api("POST", "/api/v1/enrollment-tokens", json={"name": "lab"})["token"])
