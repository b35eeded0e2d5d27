"""Sketch ingestion (POST /api/v1/device/sketches): releases carrying a reference profile,
the accepted body, retries, and every refusal with the field it names and nothing stored.

Runs the app with the real store on SQLite and PostgreSQL (httpx ASGI), and once against
a real `python -m tinyops.fleet.server` process.
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
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
from fleet_process import Server

from tinyops.fleet.store import Store

pytestmark = pytest.mark.anyio

Payload = tuple[dict[str, bytes], dict[str, Any]]
FAR = T0 + timedelta(days=3650)


def _stored(store: Store) -> tuple[int, int]:
    """(windows, prediction samples) in the database, over every release."""
    from sqlalchemy import func, select

    from tinyops.fleet.store import schema as t

    with store._ro() as s:
        windows = s.scalar(select(func.count()).select_from(t.SketchWindow)) or 0
        samples = s.scalar(select(func.count()).select_from(t.PredictionSample)) or 0
    return int(windows), int(samples)


async def _fleet_with_profile(
    fleet: Any, tmp_path: Path, payload: Payload, key: Ed25519PrivateKey, **policy_extra: Any
) -> dict[str, str]:
    await fleet.trust(key)
    path = bundle_with_profile(
        tmp_path / "bundles", payload, key, policy_json=policy(**policy_extra)
    )
    r = await fleet.upload(path)
    assert r.status_code == 201, r.text
    device: dict[str, str] = await fleet.enroll("nano-1", installed=installed())
    return device


async def test_a_sketch_is_stored_once_and_a_retry_gets_its_window(
    fleet_on_each_db: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    device = await _fleet_with_profile(fleet, tmp_path, kws_payload, release_key)
    profile = reference_profile()
    body = sketch(profile, T0)
    r = await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
    assert r.status_code == 202, r.text
    window_id = r.json()["window_id"]
    assert r.json() == {"accepted": True, "window_id": window_id}
    # The same window again (an answer the device never got): the same id, stored once.
    again = await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
    assert again.status_code == 202 and again.json()["window_id"] == window_id
    store = fleet.runtime.store
    assert _stored(store) == (1, 0)
    rows = store.drift.windows([1], T0 - HOUR, FAR)
    assert len(rows) == 1
    stored = rows[0]
    assert (stored.device_id, stored.count, stored.window_start) == ("nano-1", 2000, T0)
    # Counts kept in the profile's feature order, concatenated.
    expected: list[int] = []
    for name in ("f0", "f1", "f2", "mode"):
        expected += body["histograms"]["features"][name]
    assert stored.counts == expected
    assert stored.predictions == body["histograms"]["predictions"]
    assert stored.confidence == body["histograms"]["confidence"]
    # Another content for the same window start is a conflict, not an overwrite.
    other = sketch(profile, T0, seed=99)
    r = await fleet.client.post("/api/v1/device/sketches", json=other, headers=auth(device))
    assert r.status_code == 409 and r.json()["error"]["field"] == "window.start"
    assert _stored(store) == (1, 0)
    # The next window is a new row.
    r = await fleet.client.post(
        "/api/v1/device/sketches", json=sketch(profile, T0 + HOUR), headers=auth(device)
    )
    assert r.status_code == 202 and r.json()["window_id"] != window_id
    assert _stored(store) == (2, 0)


def _bad_bodies(body: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, str]]:
    """(what, body, status, field) of each malformed variant of a valid `body`."""

    def variant(change: Any) -> dict[str, Any]:
        b = copy.deepcopy(body)
        change(b)
        return b

    feats = "histograms.features"
    return [
        (
            "wrong bin count",
            variant(lambda b: b["histograms"]["features"]["f0"].append(0)),
            422,
            f"{feats}.f0",
        ),
        (
            "negative count",
            variant(lambda b: b["histograms"]["features"]["f1"].__setitem__(0, -1)),
            422,
            f"{feats}.f1[0]",
        ),
        (
            "fractional count",
            variant(lambda b: b["histograms"]["features"]["f1"].__setitem__(1, 2.5)),
            422,
            f"{feats}.f1[1]",
        ),
        (
            "count as text",
            variant(lambda b: b["histograms"]["features"]["f2"].__setitem__(0, "3")),
            422,
            f"{feats}.f2[0]",
        ),
        (
            "unknown feature",
            variant(lambda b: b["histograms"]["features"].__setitem__("f9", [1, 2])),
            422,
            f"{feats}.f9",
        ),
        (
            "missing feature",
            variant(lambda b: b["histograms"]["features"].pop("mode")),
            422,
            feats,
        ),
        (
            "counts that do not sum to count",
            variant(lambda b: b.__setitem__("count", b["count"] + 1)),
            422,
            f"{feats}.f0",
        ),
        (
            "predictions of the wrong length",
            variant(lambda b: b["histograms"]["predictions"].append(0)),
            422,
            "histograms.predictions",
        ),
        (
            "confidence that does not sum to count",
            variant(lambda b: b["histograms"]["confidence"].__setitem__(0, 10**6)),
            422,
            "histograms.confidence",
        ),
        (
            "window end before start",
            variant(lambda b: b["window"].__setitem__("end", b["window"]["start"])),
            422,
            "window.end",
        ),
        (
            "window without time zone",
            variant(lambda b: b["window"].__setitem__("start", "2026-11-01T00:00:00")),
            422,
            "window.start",
        ),
        ("negative total", variant(lambda b: b.__setitem__("count", -5)), 422, "count"),
        ("boolean total", variant(lambda b: b.__setitem__("count", True)), 422, "count"),
        (
            "unknown top-level field",
            variant(lambda b: b.__setitem__("extra", 1)),
            422,
            "extra",
        ),
        (
            "a sample though the policy allows none",
            variant(
                lambda b: b.__setitem__("samples", [{"features": [0, 0, 0, 0], "prediction": 0}])
            ),
            422,
            "samples",
        ),
        (
            "a release the device does not run",
            variant(lambda b: b["release"].__setitem__("version", "2.0.0")),
            409,
            "release",
        ),
    ]


async def test_bad_sketches_are_refused_naming_the_field_and_store_nothing(
    fleet_on_each_db: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    device = await _fleet_with_profile(fleet, tmp_path, kws_payload, release_key)
    body = sketch(reference_profile(), T0)
    for what, bad, status, field in _bad_bodies(body):
        r = await fleet.client.post("/api/v1/device/sketches", json=bad, headers=auth(device))
        assert r.status_code == status, (what, r.text)
        error = r.json()["error"]
        assert error["field"] == field, (what, error)
        assert error["message"], what
    # Not JSON at all: 400, not 500.
    r = await fleet.client.post(
        "/api/v1/device/sketches",
        content=b"{not json",
        headers={**auth(device), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert _stored(fleet.runtime.store) == (0, 0)
    # Nothing was broken for the valid body.
    r = await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
    assert r.status_code == 202, r.text


async def test_samples_up_to_the_policy_limit_and_their_checks(
    fleet_on_each_db: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    device = await _fleet_with_profile(fleet, tmp_path, kws_payload, release_key, max_samples=2)
    profile = reference_profile()
    good = [
        {"features": [0.1, 5.0, 0.2, 1.0], "prediction": 2, "id": "p-1"},
        {"features": [0.0, 4.0, -0.5, 0.0], "prediction": 0},
    ]
    cases = [
        ("three samples", [*good, good[1]], "samples"),
        (
            "a sample of 3 features",
            [{"features": [0, 0, 0], "prediction": 0}],
            "samples[0].features",
        ),
        (
            "a prediction that is no class",
            [{"features": [0, 0, 0, 0], "prediction": 3}],
            "samples[0].prediction",
        ),
        ("a repeated id", [good[0], {**good[1], "id": "p-1"}], "samples[1].id"),
        (
            "a non-finite value",
            [{"features": [0, float("nan"), 0, 0], "prediction": 0}],
            "samples[0].features[1]",
        ),
    ]
    for what, samples, field in cases:
        body = sketch(profile, T0, samples=samples)
        r = await fleet.client.post(
            "/api/v1/device/sketches",
            content=json.dumps(body),  # allows NaN through, as a careless client would
            headers={**auth(device), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (what, r.text)
        assert r.json()["error"]["field"] == field, (what, r.json())
    assert _stored(fleet.runtime.store) == (0, 0)
    r = await fleet.client.post(
        "/api/v1/device/sketches", json=sketch(profile, T0, samples=good), headers=auth(device)
    )
    assert r.status_code == 202, r.text
    assert _stored(fleet.runtime.store) == (1, 2)
    # A prediction id is unique per device and release, across windows too.
    r = await fleet.client.post(
        "/api/v1/device/sketches",
        json=sketch(profile, T0 + HOUR, samples=good[:1]),
        headers=auth(device),
    )
    assert r.status_code == 409 and r.json()["error"]["field"] == "samples[0].id"
    assert _stored(fleet.runtime.store) == (1, 2)


async def test_releases_without_a_profile_and_bad_monitoring_members(
    fleet: Any,
    tmp_path: Path,
    kws_payload: Payload,
    release_key: Ed25519PrivateKey,
    build_bundle: Any,
) -> None:
    await fleet.trust(release_key)
    # A bundle made before monitoring existed stays valid; sketches for it get 409.
    r = await fleet.upload(build_bundle("1.0.0"))
    assert r.status_code == 201, r.text
    device = await fleet.enroll("nano-1", installed=installed())
    r = await fleet.client.post(
        "/api/v1/device/sketches", json=sketch(reference_profile(), T0), headers=auth(device)
    )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "no-profile"
    assert "monitoring/profile.json" in r.json()["error"]["message"]
    # A release that was never uploaded: 409 too.
    other = await fleet.enroll("nano-2", installed=installed("7.0.0"))
    r = await fleet.client.post(
        "/api/v1/device/sketches",
        json=sketch(reference_profile(), T0, version="7.0.0"),
        headers=auth(other),
    )
    assert r.status_code == 409 and r.json()["error"]["field"] == "release"
    # Malformed monitoring members: the upload is refused naming the member.
    profile = reference_profile().to_dict()
    cases = {
        "only a profile": {"monitoring/profile.json": json.dumps(profile).encode()},
        "profile not JSON": {
            "monitoring/profile.json": b"{",
            "monitoring/policy.json": json.dumps(policy()).encode(),
        },
        "profile without rows": {
            "monitoring/profile.json": json.dumps({**profile, "rows": 0}).encode(),
            "monitoring/policy.json": json.dumps(policy()).encode(),
        },
        "policy with a negative sample limit": {
            "monitoring/profile.json": json.dumps(profile).encode(),
            "monitoring/policy.json": json.dumps(policy(max_samples=-1)).encode(),
        },
        "reference accuracy above 1": {
            "monitoring/profile.json": json.dumps(profile).encode(),
            "monitoring/policy.json": json.dumps(policy(reference_accuracy=1.5)).encode(),
        },
    }
    for i, (what, members) in enumerate(cases.items()):
        path = bundle_with_profile(
            tmp_path / f"bad{i}", kws_payload, release_key, f"2.0.{i}", members=members
        )
        r = await fleet.upload(path)
        assert r.status_code == 422, (what, r.text)
        error = r.json()["error"]
        assert error["code"] == "invalid-bundle" and error["field"] == "monitoring", what
        assert "monitoring/" in error["message"], (what, error)
    versions = {rel.version for rel in fleet.runtime.store.list_releases("kws")}
    assert versions == {"1.0.0"}


def test_a_real_server_process_takes_sketches(
    db_url: str, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    from fleet_inprocess import public_pem

    server = Server(tmp_path / "data", db_url, tmp_path / "server.log")
    admin_token = server.start(init=True)
    try:
        admin = {"Authorization": f"Bearer {admin_token}"}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post(
                "/api/v1/trusted-keys",
                json={"name": "ci", "public_key_pem": public_pem(release_key)},
                headers=admin,
            )
            assert r.status_code == 201, r.text
            path = bundle_with_profile(tmp_path / "b", kws_payload, release_key)
            r = client.post(
                "/api/v1/releases",
                content=path.read_bytes(),
                headers={**admin, "Content-Type": "application/octet-stream"},
            )
            assert r.status_code == 201, r.text
            etk = client.post(
                "/api/v1/enrollment-tokens", json={"name": "lab"}, headers=admin
            ).json()["token"]
            enrolled = client.post(
                "/api/v1/device/enroll",
                json={
                    "enrollment_token": etk,
                    "device_id": "nano-1",
                    "hardware": "nano33ble",
                    "installed": installed(),
                },
            ).json()
            device = {"Authorization": f"Bearer {enrolled['device_token']}"}
            profile = reference_profile()
            for hour, shift in enumerate([None, None, {"f1": 1.0}]):
                r = client.post(
                    "/api/v1/device/sketches",
                    json=sketch(profile, T0 + hour * HOUR, shift=shift),
                    headers=device,
                )
                assert r.status_code == 202, r.text
            r = client.get(
                "/api/v1/drift",
                params={
                    "release": "kws@1.0.0",
                    "start": (T0 + 2 * HOUR).isoformat(),
                    "end": (T0 + 3 * HOUR).isoformat(),
                },
                headers=admin,
            )
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["windows"] == 1 and answer["count"] == 2000
            assert answer["report"]["drifted_features"] == ["f1"]
    finally:
        server.stop()


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indices)."""
    out = [path]
    if isinstance(value, dict):
        for key, sub in value.items():
            out += _paths(sub, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            out += _paths(sub, (*path, index))
    return out


async def test_randomly_mutated_sketches_get_4xx_or_202_and_never_a_partial_write(
    fleet: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    import random

    device = await _fleet_with_profile(fleet, tmp_path, kws_payload, release_key)
    valid = sketch(reference_profile(), T0)
    junk: list[Any] = [-1, 0, 1.5, 2**70, "3", "", None, True, [], {}, [1] * 50, "\x00", "é" * 300]
    rng = random.Random(20261127)
    accepted: set[int] = set()
    statuses: set[int] = set()
    for _ in range(300):
        body = copy.deepcopy(valid)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(_paths(body)[1:])
            parent = body
            for part in path[:-1]:
                parent = parent[part]
            action = rng.random()
            if action < 0.15 and isinstance(parent, dict):
                del parent[path[-1]]
            elif action < 0.25 and isinstance(parent, dict):
                parent[f"x{rng.randint(0, 9)}"] = copy.deepcopy(rng.choice(junk))
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(junk))
        r = await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
        statuses.add(r.status_code)
        assert r.status_code in (202, 400, 409, 422), (body, r.status_code, r.text)
        if r.status_code == 202:
            accepted.add(r.json()["window_id"])
        else:
            assert set(r.json()) == {"error"} and r.json()["error"]["message"]
        assert _stored(fleet.runtime.store)[0] == len(accepted)
    assert 422 in statuses


async def test_sketches_over_mqtt_answer_as_http_does(
    fleet: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    from test_mqtt_support import RawClient, bridged, new_prefix

    device = await _fleet_with_profile(fleet, tmp_path, kws_payload, release_key)
    token = device["Authorization"].removeprefix("Bearer ")
    profile = reference_profile()
    prefix = new_prefix()
    async with bridged(fleet, prefix):
        with RawClient(prefix) as raw:
            body = sketch(profile, T0)
            topic, reply = await raw.ask(
                "nano-1", "sketches", {"request_id": "s1", "token": token, "body": body}
            )
            assert topic == f"{prefix}/dev/nano-1/res/sketches"
            assert reply["status"] == 202 and reply["request_id"] == "s1"
            window_id = reply["body"]["window_id"]
            assert reply["body"] == {"accepted": True, "window_id": window_id}
            bad = copy.deepcopy(body)
            bad["histograms"]["features"]["f0"].append(0)
            _, reply = await raw.ask(
                "nano-1", "sketches", {"request_id": "s2", "token": token, "body": bad}
            )
            http = await fleet.client.post(
                "/api/v1/device/sketches", json=bad, headers=auth(device)
            )
            assert reply["status"] == http.status_code == 422
            assert reply["body"] == http.json()
            assert reply["body"]["error"]["field"] == "histograms.features.f0"
    assert _stored(fleet.runtime.store) == (1, 0)
