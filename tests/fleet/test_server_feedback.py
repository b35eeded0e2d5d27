"""Feedback labels (performance drift) and labeled samples for retraining, with the real
store on SQLite and PostgreSQL: roles, validation naming the field, nothing stored on a
refusal, the audit trail, accuracy in the drift API and in the metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

pytestmark = pytest.mark.anyio

Payload = tuple[dict[str, bytes], dict[str, Any]]
RELEASE = {"name": "kws", "version": "1.0.0"}


def _samples(predictions: list[int]) -> list[dict[str, Any]]:
    return [
        {"features": [0.1 * i, 5.0, 0.0, 1.0], "prediction": p, "id": f"p-{i}"}
        for i, p in enumerate(predictions)
    ]


async def _fleet_with_samples(
    fleet: Any, tmp_path: Path, payload: Payload, key: Ed25519PrivateKey, start: datetime
) -> None:
    """kws 1.0.0 with reference accuracy 0.9; nano-1 sent 4 sampled predictions p-0..p-3."""
    await fleet.trust(key)
    path = bundle_with_profile(
        tmp_path / "b", payload, key, policy_json=policy(max_samples=4, reference_accuracy=0.9)
    )
    assert (await fleet.upload(path)).status_code == 201
    device = await fleet.enroll("nano-1", installed=installed())
    body = sketch(reference_profile(), start, samples=_samples([0, 1, 2, 0]))
    r = await fleet.client.post("/api/v1/device/sketches", json=body, headers=auth(device))
    assert r.status_code == 202, r.text


async def test_feedback_gives_accuracy_and_refuses_unknown_predictions(
    fleet_on_each_db: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    await _fleet_with_samples(fleet, tmp_path, kws_payload, release_key, now - HOUR)
    ml = await fleet.token("ml-engineer", name="labeler")
    audit_before = len(fleet.runtime.store.audit_log(limit=1000))

    def feedback(items: list[dict[str, Any]], device: str = "nano-1") -> dict[str, Any]:
        return {"release": RELEASE, "device": device, "items": items}

    refusals = [
        (
            feedback([{"prediction_id": "p-0", "label": 0}, {"prediction_id": "p-9", "label": 1}]),
            422,
            "items[1].prediction_id",
        ),
        (
            feedback([{"prediction_id": "p-0", "label": 0}], device="nano-2"),
            422,
            "items[0].prediction_id",
        ),
        (feedback([{"prediction_id": "p-0", "label": 3}]), 422, "items[0].label"),
        (feedback([{"prediction_id": "p-0", "label": -1}]), 422, "items[0].label"),
        (feedback([{"prediction_id": "p-0", "label": 1.5}]), 422, "items[0].label"),
        (feedback([]), 422, "items"),
        (
            {
                **feedback([{"prediction_id": "p-0", "label": 0}]),
                "release": {"name": "kws", "version": "9.9.9"},
            },
            404,
            None,
        ),
    ]
    for body, status, field in refusals:
        r = await fleet.client.post("/api/v1/feedback", json=body, headers=ml)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["field"] == field, (body, r.json())
    assert len(fleet.runtime.store.audit_log(limit=1000)) == audit_before

    params = {"release": "kws@1.0.0", "start": (now - 2 * HOUR).isoformat(), "end": now.isoformat()}
    r = await fleet.client.get("/api/v1/drift", params=params, headers=ml)
    assert r.json()["performance"] == {
        "labeled": 0,
        "correct": 0,
        "accuracy": None,
        "reference_accuracy": 0.9,
    }

    # p-0 right, p-1 wrong (label 0, predicted 1), p-2 right.
    items = [
        {"prediction_id": "p-0", "label": 0},
        {"prediction_id": "p-1", "label": 0},
        {"prediction_id": "p-2", "label": 2},
    ]
    r = await fleet.client.post("/api/v1/feedback", json=feedback(items), headers=ml)
    assert r.status_code == 201, r.text
    assert r.json() == {"accepted": 3}
    r = await fleet.client.get("/api/v1/drift", params=params, headers=ml)
    assert r.json()["performance"] == {
        "labeled": 3,
        "correct": 2,
        "accuracy": 2 / 3,
        "reference_accuracy": 0.9,
    }
    # A corrected label replaces the earlier one.
    r = await fleet.client.post(
        "/api/v1/feedback", json=feedback([{"prediction_id": "p-1", "label": 1}]), headers=ml
    )
    assert r.status_code == 201
    r = await fleet.client.get("/api/v1/drift", params=params, headers=ml)
    assert (r.json()["performance"]["labeled"], r.json()["performance"]["correct"]) == (3, 3)

    records = fleet.runtime.store.audit_log(limit=1000)[:2]
    assert [(a.action, a.actor, a.target) for a in records] == [
        ("feedback.submit", "token:labeler", "device:nano-1")
    ] * 2

    samples = list(fleet.runtime.drift_source.collect(datetime.now(UTC)))
    accuracy = {(s.metric, s.labels["release"]): s.value for s in samples if "accuracy" in s.metric}
    assert accuracy == pytest.approx(
        {
            ("model_accuracy", "kws@1.0.0"): 1.0,
            ("model_accuracy_reference", "kws@1.0.0"): 0.9,
            ("model_accuracy_drop", "kws@1.0.0"): 0.9 - 1.0,
        }
    )


async def test_feedback_and_samples_need_the_submit_data_permission(
    fleet: Any, tmp_path: Path, kws_payload: Payload, release_key: Ed25519PrivateKey
) -> None:
    await _fleet_with_samples(fleet, tmp_path, kws_payload, release_key, T0)
    feedback = {
        "release": RELEASE,
        "device": "nano-1",
        "items": [{"prediction_id": "p-0", "label": 0}],
    }
    samples = {"dataset": "digits/field", "items": [{"features": [1.0, 2.0], "label": 1}]}
    for role, allowed in (
        ("viewer", False),
        ("devops", False),
        ("ml-engineer", True),
        ("admin", True),
    ):
        headers = await fleet.token(role, name=f"who-{role}")
        for path, body in (("/api/v1/feedback", feedback), ("/api/v1/samples", samples)):
            r = await fleet.client.post(path, json=body, headers=headers)
            if allowed:
                assert r.status_code == 201, (role, path, r.text)
            else:
                assert r.status_code == 403, (role, path, r.text)
                assert "submit-data" in r.json()["error"]["message"]
        # Reading the samples is for any role.
        r = await fleet.client.get(
            "/api/v1/samples", params={"dataset": "digits/field"}, headers=headers
        )
        assert r.status_code == 200
    device = await fleet.enroll("nano-9")
    r = await fleet.client.post("/api/v1/feedback", json=feedback, headers=auth(device))
    assert r.status_code == 403


async def test_labeled_samples_are_validated_stored_and_paged(fleet_on_each_db: Any) -> None:
    fleet = fleet_on_each_db
    ml = await fleet.token("ml-engineer", name="labeler")
    dataset = "digits/field"
    items = [
        {
            "features": [float(i), 1.0, 2.5],
            "label": i % 3,
            "device": "nano-1",
            "t": "2026-11-01T10:00:00Z",
        }
        for i in range(5)
    ]
    r = await fleet.client.post(
        "/api/v1/samples", json={"dataset": dataset, "items": items}, headers=ml
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"accepted": 5, "total": 5}

    refusals = [
        (
            {"dataset": dataset, "items": [items[0], {"features": [1.0], "label": 0}]},
            "items[1].features",
        ),
        ({"dataset": dataset, "items": [{"features": [1.0], "label": 0}]}, "items[0].features"),
        ({"dataset": dataset, "items": [{"values": {"a": 1.0}, "label": 0}]}, "items[0].features"),
        ({"dataset": dataset, "items": [{**items[0], "label": "seven"}]}, "items[0].label"),
        (
            {
                "dataset": dataset,
                "items": [{"features": [1.0, 2.0, 3.0], "values": {"a": 1}, "label": 0}],
            },
            "items[0].features",
        ),
        ({"dataset": dataset, "items": [{"label": 0}]}, "items[0].features"),
        (
            {"dataset": dataset, "items": [{"features": [1.0, "x", 3.0], "label": 0}]},
            "items[0].features[1]",
        ),
        (
            {"dataset": dataset, "items": [{"features": [1.0, float("inf"), 3.0], "label": 0}]},
            "items[0].features[1]",
        ),
        ({"dataset": dataset, "items": [{**items[0], "t": "2026-11-01T10:00:00"}]}, "items[0].t"),
        ({"dataset": dataset, "items": []}, "items"),
        ({"dataset": "../etc", "items": items[:1]}, "dataset"),
        ({"dataset": dataset, "items": items[:1], "extra": True}, "extra"),
    ]
    for body, field in refusals:
        r = await fleet.client.post(
            "/api/v1/samples",
            content=json.dumps(body),
            headers={**ml, "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["field"] == field, (body, r.json())

    # Another dataset may have another shape: named values with class names.
    named = [
        {"values": {"temp": 21.5, "hum": 0.4}, "label": "ok"},
        {"values": {"hum": 0.9, "temp": 30.0}, "label": "hot"},
    ]
    r = await fleet.client.post(
        "/api/v1/samples", json={"dataset": "hvac", "items": named}, headers=ml
    )
    assert r.status_code == 201 and r.json() == {"accepted": 2, "total": 2}

    r = await fleet.client.post(
        "/api/v1/samples", json={"dataset": dataset, "items": items[:2]}, headers=ml
    )
    assert r.json() == {"accepted": 2, "total": 7}

    seen: list[dict[str, Any]] = []
    since = 0
    while True:
        r = await fleet.client.get(
            "/api/v1/samples",
            params={"dataset": dataset, "since_id": since, "limit": 3},
            headers=ml,
        )
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["items"]
        if page["next"] is None:
            break
        since = page["next"]
    assert len(seen) == 7
    assert [s["features"] for s in seen] == [i["features"] for i in items + items[:2]]
    assert [s["label"] for s in seen] == [0, 1, 2, 0, 1, 0, 1]
    assert seen[0]["device"] == "nano-1" and seen[0]["t"] == "2026-11-01T10:00:00Z"
    ids = [s["id"] for s in seen]
    assert ids == sorted(ids) and len(set(ids)) == 7
    r = await fleet.client.get("/api/v1/samples", params={"dataset": "hvac"}, headers=ml)
    assert [s["values"] for s in r.json()["items"]] == [n["values"] for n in named]
    assert [s["label"] for s in r.json()["items"]] == ["ok", "hot"]
    audit = [a for a in fleet.runtime.store.audit_log(limit=1000) if a.action == "samples.submit"]
    assert [(a.target, a.after["accepted"]) for a in audit] == [
        ("dataset:digits/field", 2),
        ("dataset:hvac", 2),
        ("dataset:digits/field", 5),
    ]
    for params in (
        {"dataset": "a b"},
        {"dataset": dataset, "limit": 0},
        {"dataset": dataset, "since_id": -1},
    ):
        r = await fleet.client.get("/api/v1/samples", params=params, headers=ml)
        assert r.status_code == 422, params
