"""Group commit of sketches: many windows in one transaction, each judged as if alone.

`DriftStore.add_sketches` on SQLite and PostgreSQL (the real store under the in-process
app): one batch mixing new windows, a retry of a window of the same batch, a retry of a
stored window, other counts for both, and prediction ids taken before or earlier in the
batch. Every write gets what `add_sketch` one after another would have answered, and the
refused ones store nothing while the others of the batch are stored. Then many sketches
at once against a real server process: every answer is right and the database holds
exactly the accepted windows.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
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

from tinyops.fleet.server.drift_models import SketchIn
from tinyops.fleet.store import Conflict, Store
from tinyops.security.tokens import hash_token

Payload = tuple[dict[str, bytes], dict[str, Any]]


def _stored(store: Store) -> tuple[int, int]:
    from sqlalchemy import func, select

    from tinyops.fleet.store import schema as t

    with store._ro() as s:
        windows = s.scalar(select(func.count()).select_from(t.SketchWindow)) or 0
        samples = s.scalar(select(func.count()).select_from(t.PredictionSample)) or 0
    return int(windows), int(samples)


def _with_samples(body: dict[str, Any], *ids: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["samples"] = [{"features": [0.1, 5.0, 0.2, 1.0], "prediction": 1, "id": pid} for pid in ids]
    return out


def _other_counts(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["histograms"]["features"]["f0"][0] += 1
    out["histograms"]["features"]["f0"][1] -= 1
    return out


@pytest.mark.anyio
async def test_a_batch_answers_each_sketch_as_if_it_came_alone(
    fleet_on_each_db: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    await fleet.trust(release_key)
    path = bundle_with_profile(
        tmp_path / "b", kws_payload, release_key, policy_json=policy(max_samples=5)
    )
    assert (await fleet.upload(path)).status_code == 201
    one = await fleet.enroll("nano-1", installed=installed())
    two = await fleet.enroll("nano-2", installed=installed())
    profile = reference_profile()
    stored = _with_samples(sketch(profile, T0, seed=1), "p-1")
    r = await fleet.client.post("/api/v1/device/sketches", json=stored, headers=auth(one))
    assert r.status_code == 202, r.text
    stored_id = r.json()["window_id"]

    runtime = fleet.runtime

    def credential(headers: dict[str, str]) -> Any:
        return runtime.directory.lookup(hash_token(headers["Authorization"][7:]))

    def write(headers: dict[str, str], body: dict[str, Any]) -> Any:
        return runtime.drift.check(credential(headers), SketchIn.model_validate(body))

    fresh = _with_samples(sketch(profile, T0 + HOUR, seed=2), "p-2")
    batch = [
        write(one, fresh),  # 0 new → stored
        write(one, fresh),  # 1 the same window again in the batch → 0's id
        write(one, _other_counts(fresh)),  # 2 that window, other counts → 409
        write(one, stored),  # 3 a retry of a stored window → its id
        write(one, _other_counts(stored)),  # 4 a stored window, other counts → 409
        write(one, _with_samples(sketch(profile, T0 + 2 * HOUR, seed=3), "p-1")),  # 5 taken id
        write(two, _with_samples(sketch(profile, T0, seed=4), "p-9")),  # 6 new → stored
        write(two, _with_samples(sketch(profile, T0 + HOUR, seed=5), "p-9")),  # 7 id of 6 → 409
        write(two, sketch(profile, T0 + 2 * HOUR, seed=6)),  # 8 new, no samples → stored
    ]
    outcomes = runtime.store.drift.add_sketches(batch, T0 + 3 * HOUR)
    assert len(outcomes) == len(batch)
    refused = {i: o for i, o in enumerate(outcomes) if isinstance(o, Exception)}
    assert set(refused) == {2, 4, 5, 7}
    assert all(isinstance(e, Conflict) and e.status == 409 for e in refused.values())
    assert [refused[i].field for i in (2, 4, 5, 7)] == [  # type: ignore[attr-defined]
        "window.start",
        "window.start",
        "samples[0].id",
        "samples[0].id",
    ]
    ok = {i: o for i, o in enumerate(outcomes) if not isinstance(o, Exception)}
    new_ids = {ok[0][0], ok[6][0], ok[8][0]}
    assert ok[0][1] and ok[6][1] and ok[8][1] and len(new_ids) == 3
    assert stored_id not in new_ids
    assert ok[1] == (ok[0][0], False) and ok[3] == (stored_id, False)
    # 1 stored before + 3 new windows; samples: p-1 before, p-2 and p-9 of this batch.
    assert _stored(runtime.store) == (4, 3)
    windows = {w.id: w for w in runtime.store.drift.windows([1], T0 - HOUR, T0 + 4 * HOUR)}
    assert windows[ok[0][0]].counts == batch[0].counts
    assert windows[ok[6][0]].device_id == "nano-2"
    # Through the API the refusals read as before group commit: 409 naming the field.
    r = await fleet.client.post(
        "/api/v1/device/sketches", json=_other_counts(fresh), headers=auth(one)
    )
    assert r.status_code == 409 and r.json()["error"]["field"] == "window.start"
    assert _stored(runtime.store) == (4, 3)


def test_concurrent_sketches_each_get_their_own_answer(
    db_url: str, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    """120 requests at once (enough to share transactions): 100 new windows of 10
    devices, 10 retries of some of them, 10 with other counts for some of them."""
    profile = reference_profile()
    server = Server(tmp_path / "fleet", db_url, tmp_path / "server.log")
    try:
        token = server.start(init=True)
        assert token is not None
        admin = {"Authorization": f"Bearer {token}"}

        def call(method: str, path: str, **kwargs: Any) -> Any:
            headers = kwargs.pop("headers", admin)
            r = httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)
            assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text}"
            return r.json() if r.content else None

        pem = release_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        call("POST", "/api/v1/trusted-keys", json={"name": "ci", "public_key_pem": pem.decode()})
        bundle = bundle_with_profile(tmp_path / "b", kws_payload, release_key)
        call("POST", "/api/v1/releases", content=bundle.read_bytes())
        etk = call("POST", "/api/v1/enrollment-tokens", json={"name": "lab"})["token"]
        devices = []
        for d in range(10):
            enrolled = call(
                "POST",
                "/api/v1/device/enroll",
                headers={},
                json={
                    "enrollment_token": etk,
                    "device_id": f"dev-{d}",
                    "hardware": "nano33ble",
                    "tags": {},
                    "installed": installed(),
                },
            )
            devices.append({"Authorization": f"Bearer {enrolled['device_token']}"})
        requests: list[tuple[str, int, dict[str, Any]]] = []  # (kind, device, body)
        for d in range(10):
            for w in range(10):
                body = sketch(profile, T0 + w * HOUR, rows=200, seed=100 * d + w)
                requests.append(("new", d, body))
                if w == 3:
                    requests.append(("retry", d, body))
                if w == 5:
                    requests.append(("other", d, _other_counts(body)))

        async def send_all() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post("/api/v1/device/sketches", json=b, headers=devices[d])
                        for _, d, b in requests
                    )
                )

        answers = asyncio.run(send_all())
        stats = call("GET", "/api/v1/drift/devices", params={
            "release": "kws@1.0.0",
            "start": T0.isoformat(),
            "end": (T0 + 11 * HOUR).isoformat(),
        })  # fmt: skip
    finally:
        server.stop()
    by_key: dict[tuple[int, str], list[tuple[str, httpx.Response]]] = {}
    for (kind, d, body), answer in zip(requests, answers, strict=True):
        by_key.setdefault((d, body["window"]["start"]), []).append((kind, answer))
    ids = set()
    for (_d, start), group in by_key.items():
        statuses = sorted(a.status_code for _, a in group)
        kinds = [k for k, _ in group]
        accepted = [a.json()["window_id"] for _, a in group if a.status_code == 202]
        if "other" in kinds:
            # Two reports of one window with different counts: whichever the server took
            # first is stored, the other is refused naming window.start.
            assert statuses == [202, 409], (start, statuses)
            refused = next(a for _, a in group if a.status_code == 409)
            assert refused.json()["error"]["field"] == "window.start"
        else:
            assert statuses == [202] * len(group), (start, statuses)
        assert len(set(accepted)) == 1  # a retry gets the original's id
        ids.add(accepted[0])
    assert len(ids) == 100
    # The database holds exactly the 100 accepted windows, 10 per device.
    assert {d["device"]: d["windows"] for d in stats["devices"]} == {
        f"dev-{d}": 10 for d in range(10)
    }
