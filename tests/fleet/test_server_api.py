"""The fleet server over HTTP (in process, httpx ASGI transport): enrollment, check-in,
releases, deployments through a full phase progression, abort and rollback, downloads."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from tinyops.security.rollback import public_key_from_b64, verify_rollback_order

pytestmark = pytest.mark.anyio

BuildBundle = Callable[..., Path]
KWS = {"name": "kws", "target": "nano33ble"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _installed(version: str, path: Path | None = None) -> dict[str, Any]:
    return {"name": "kws", "version": version, "sha256": None if path is None else _sha(path)}


async def _fleet_with_releases(
    fleet: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey, *versions: str
) -> dict[str, Path]:
    await fleet.trust(release_key)
    paths = {}
    for version in versions:
        paths[version] = build_bundle(version)
        r = await fleet.upload(paths[version])
        assert r.status_code == 201, r.text
    return paths


# --- enrollment and check-in ---------------------------------------------------------------


async def test_enroll_checkin_and_token_rotation(fleet: Any) -> None:
    etk = await fleet.enrollment_token(max_uses=5)
    bad = await fleet.client.post(
        "/api/v1/device/enroll",
        json={"enrollment_token": etk, "device_id": "nano-1", "hardware": "toaster"},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "hardware"
    assert "nano33ble" in bad.json()["error"]["message"]
    wrong = await fleet.client.post(
        "/api/v1/device/enroll",
        json={"enrollment_token": "etk_" + "x" * 43, "device_id": "nano-1", "hardware": "pico"},
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["field"] == "enrollment_token"

    first = await fleet.enroll("nano-1", etk=etk, installed=_installed("1.0.0"))
    assert (
        base64.b64decode(first["server_key"])
        == fleet.runtime.server_key.public_key().public_bytes_raw()
    )
    answer = await fleet.checkin(first)
    assert answer == {
        "action": "none",
        "poll_interval_s": 300.0,
        "deployment_id": None,
        "release": None,
        "rollback": None,
        "deadline": None,
    }
    second = await fleet.enroll("nano-1", etk=etk, installed=_installed("1.0.0"))
    old = await fleet.client.post(
        "/api/v1/device/checkin", json={}, headers={"Authorization": first["Authorization"]}
    )
    assert old.status_code == 401
    assert old.headers["www-authenticate"] == "Bearer"
    await fleet.checkin(second, installed=_installed("1.0.1"))
    await fleet.runtime.flush()
    device = (await fleet.client.get("/api/v1/devices/nano-1", headers=fleet.admin)).json()
    assert device["installed"]["version"] == "1.0.1"
    assert [h["event"] for h in device["history"]] == ["reported", "enrolled"]
    assert device["health"] == {"uptime_s": 10, "resets": 0, "free_memory_bytes": 80_000}
    assert device["slot"] == {"active": "a", "state": "committed"}
    assert device["last_seen"] is not None


async def test_check_ins_are_written_behind_and_at_shutdown(fleet_runner: Any) -> None:
    from tinyops.fleet.store import Store

    settings, running = fleet_runner()
    async with running as fleet:
        device = await fleet.enroll("nano-1")
        await fleet.checkin(device)
        # Not written yet: check-ins are batched.
        assert fleet.runtime.store.get_device("nano-1").last_seen is None
        assert len(fleet.runtime.buffer) == 1
    # Shutting down wrote the batch.
    store = Store(settings.database_url(), settings.data_dir)
    try:
        record = store.get_device("nano-1")
    finally:
        store.close()
    assert record.last_seen is not None
    assert record.health == {"uptime_s": 10, "resets": 0, "free_memory_bytes": 80_000}


# --- releases -------------------------------------------------------------------------------


def _tamper(path: Path, member: str) -> Path:
    """Rewrite the bundle with one byte of `member` flipped; manifest and signature kept."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    data = bytearray(entries[member])
    data[len(data) // 2] ^= 0x01
    entries[member] = bytes(data)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            archive.writestr(name, entries[name])
    out = path.with_name("tampered-" + path.name)
    out.write_bytes(buffer.getvalue())
    return out


async def test_release_upload_verifies_every_check(
    fleet: Any,
    build_bundle: BuildBundle,
    release_key: Ed25519PrivateKey,
    stranger_key: Ed25519PrivateKey,
) -> None:
    good = build_bundle("1.2.0")
    untrusted = await fleet.upload(good)
    assert untrusted.status_code == 422 and untrusted.json()["error"]["code"] == "untrusted-key"
    await fleet.trust(release_key)

    created = await fleet.upload(good)
    assert created.status_code == 201, created.text
    release = created.json()
    assert release["sha256"] == _sha(good) and release["size"] == good.stat().st_size
    assert (release["name"], release["version"], release["target"]) == ("kws", "1.2.0", "nano33ble")
    again = await fleet.upload(good)
    assert again.status_code == 200 and again.json()["id"] == release["id"]

    tampered = await fleet.upload(_tamper(good, "model.tflite"))
    assert tampered.status_code == 422
    error = tampered.json()["error"]
    assert error["code"] == "invalid-bundle" and "model.tflite" in error["message"]
    assert "the uploaded bundle" in error["message"]

    foreign = await fleet.upload(build_bundle("1.3.0", key=stranger_key))
    assert foreign.status_code == 422
    assert foreign.json()["error"]["code"] == "invalid-signature"
    assert "not trusted" in foreign.json()["error"]["message"]

    expired = await fleet.upload(build_bundle("1.4.0", expired=True))
    assert expired.status_code == 422 and "expired" in expired.json()["error"]["message"]

    empty = await fleet.client.post("/api/v1/releases", content=b"", headers=fleet.admin)
    assert empty.status_code == 422
    junk = await fleet.client.post(
        "/api/v1/releases", content=b"PK\x03\x04junk", headers=fleet.admin
    )
    assert junk.status_code == 422 and junk.json()["error"]["code"] == "invalid-bundle"

    # The same name/version/target signed by another trusted key: other bytes, refused.
    await fleet.trust(stranger_key, name="second-key")
    clash = await fleet.upload(build_bundle("1.2.0", key=stranger_key))
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "immutable-version"

    history = (await fleet.client.get("/api/v1/releases?name=kws", headers=fleet.admin)).json()
    assert [r["version"] for r in history["releases"]] == ["1.2.0"]
    uploads = fleet.runtime.settings.data_dir / "uploads"
    assert not any(uploads.iterdir())
    assert len(list((fleet.runtime.settings.data_dir / "artifacts").iterdir())) == 1


# --- deployments --------------------------------------------------------------------------------


async def test_deployment_creation_errors(
    fleet: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    paths = await _fleet_with_releases(fleet, build_bundle, release_key, "1.0.0", "1.1.0")
    await fleet.trust(release_key)
    r = await fleet.upload(build_bundle("1.1.0", target="esp32-s3"))
    assert r.status_code == 201
    for i in range(3):
        await fleet.enroll(f"lab-{i}", installed=_installed("1.0.0", paths["1.0.0"]))

    release = {**KWS, "version": "1.1.0"}
    cases = [
        ({"release": {**KWS, "version": "9.9.9"}}, "release", "no release kws 9.9.9"),
        (
            {"release": release, "selector": {"hardware": "rpi4"}},
            "selector.hardware",
            "differs from the release's target",
        ),
        (
            {"release": release, "selector": {"tags": {"group": "moon"}}},
            "selector.tags",
            "group=moon",
        ),
        (
            {"release": {**KWS, "version": "1.1.0", "target": "esp32-s3"}},
            "selector.hardware",
            "no enrolled device has hardware 'esp32-s3'",
        ),
        (
            {"release": release, "phases": [{"percent": 50}, {"percent": 40}, {"percent": 100}]},
            "phases[1].percent",
            "not above",
        ),
        ({"release": release, "phases": [{"percent": 50}]}, "phases[0].percent", "must reach 100"),
        ({"release": release, "phases": []}, "phases", "at least 1"),
        ({"release": release, "max_failure_rate": 1.5}, "max_failure_rate", "less than or equal"),
        (
            {"release": release, "phases": [{"count": 1, "percent": 100}]},
            "phases[0]",
            "exactly one",
        ),
    ]
    for body, field, message in cases:
        r = await fleet.client.post("/api/v1/deployments", json=body, headers=fleet.admin)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["field"] == field, (body, r.json())
        assert message in r.json()["error"]["message"], (body, r.json())
    ok = await fleet.deploy(release)
    assert ok.status_code == 201
    busy = await fleet.deploy(release)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "devices-busy"
    listed = (await fleet.client.get("/api/v1/deployments", headers=fleet.admin)).json()
    assert [d["id"] for d in listed["deployments"]] == [ok.json()["id"]]


UPDATE = ("downloading", "downloaded", "installing", "trial", "success")


async def test_full_phase_progression_to_success(
    fleet_on_each_db: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    paths = await _fleet_with_releases(fleet, build_bundle, release_key, "1.0.0", "1.1.0")
    devices = {}
    for i in range(6):
        devices[f"lab-{i}"] = await fleet.enroll(
            f"lab-{i}", installed=_installed("1.0.0", paths["1.0.0"])
        )
    outsider = await fleet.enroll("field-0", tags={"group": "field"})
    r = await fleet.deploy(
        {**KWS, "version": "1.1.0"},
        selector={"tags": {"group": "lab"}},
        phases=[{"count": 1}, {"percent": 50}, {"percent": 100}],
        max_failure_rate=0.0,
    )
    assert r.status_code == 201, r.text
    deployment = r.json()
    assert deployment["status"] == "running" and deployment["device_count"] == 6
    assert [p["devices"] for p in deployment["phases"]] == [1, 2, 3]
    new_sha = _sha(paths["1.1.0"])

    updated: list[list[str]] = []
    for phase in range(3):
        offered = []
        for device_id, headers in devices.items():
            answer = await fleet.checkin(headers)
            if answer["action"] == "update":
                offered.append(device_id)
                assert answer["deployment_id"] == deployment["id"]
                assert answer["release"]["sha256"] == new_sha
                assert answer["release"]["target"] == "nano33ble"
                assert answer["rollback"] is None
                assert answer["poll_interval_s"] == 60.0
        already = {d for done in updated for d in done}
        offered = [d for d in offered if d not in already]
        assert len(offered) == [1, 2, 3][phase], (phase, offered)
        assert (await fleet.checkin(outsider))["action"] == "none"
        for device_id in offered:
            answer = await fleet.checkin(devices[device_id])
            got = await fleet.client.get(
                answer["release"]["url"],
                headers={"Authorization": devices[device_id]["Authorization"]},
            )
            assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == new_sha
            await fleet.report(devices[device_id], deployment["id"], *UPDATE)
        updated.append(offered)
        state = await fleet.deployment(deployment["id"])
        if phase < 2:
            assert state["status"] == "running" and state["open_phase"] == phase + 1
    final = await fleet.deployment(deployment["id"])
    assert final["status"] == "succeeded"
    assert [p["counts"]["success"] for p in final["phases"]] == [1, 2, 3]
    for device_id, headers in devices.items():
        assert (await fleet.checkin(headers))["action"] == "none"
        device = (
            await fleet.client.get(f"/api/v1/devices/{device_id}", headers=fleet.admin)
        ).json()
        assert device["installed"] == {"name": "kws", "version": "1.1.0", "sha256": new_sha}
        assert device["history"][0]["event"] == "updated"
        assert device["status"] == "active"
    outsider_record = (
        await fleet.client.get("/api/v1/devices/field-0", headers=fleet.admin)
    ).json()
    assert outsider_record["installed"] is None and outsider_record["history"] == []
    audit = (
        await fleet.client.get(
            f"/api/v1/audit?target=deployment:{deployment['id']}&limit=1000", headers=fleet.admin
        )
    ).json()["records"]
    actions = [a["action"] for a in audit]
    assert actions.count("deployment.open-phase") == 2
    assert actions[0] == "deployment.succeed" and actions[-1] == "deployment.create"
    assert audit[-1]["actor"] == "token:admin"
    assert actions.count("deployment.device-status") == 6 * len(UPDATE)


async def test_abort_rolls_back_the_reached_devices_and_nobody_else(
    fleet_on_each_db: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    fleet = fleet_on_each_db
    paths = await _fleet_with_releases(fleet, build_bundle, release_key, "1.0.0", "1.1.0")
    old_sha, new_sha = _sha(paths["1.0.0"]), _sha(paths["1.1.0"])
    devices = {
        f"lab-{i}": await fleet.enroll(f"lab-{i}", installed=_installed("1.0.0", paths["1.0.0"]))
        for i in range(8)
    }
    r = await fleet.deploy(
        {**KWS, "version": "1.1.0"},
        phases=[{"count": 3}, {"percent": 100}],
        max_failure_rate=0.0,
    )
    deployment = r.json()["id"]
    canaries = [d for d, h in devices.items() if (await fleet.checkin(h))["action"] == "update"]
    assert len(canaries) == 3
    committed, downloading, failing = canaries
    await fleet.report(devices[committed], deployment, *UPDATE)
    await fleet.report(devices[downloading], deployment, "downloading")
    r = await fleet.client.post(
        f"/api/v1/device/deployments/{deployment}/status",
        json={"status": "failure", "reason": "self-test failed: 3/8 golden vectors off"},
        headers={"Authorization": devices[failing]["Authorization"]},
    )
    assert r.status_code == 204
    state = await fleet.deployment(deployment)
    assert state["status"] == "aborted"
    assert "phase 0" in state["reason"] and "1 of 3 devices failed" in state["reason"]
    assert state["phases"][0]["counts"]["rollback-pending"] == 2
    assert state["phases"][1]["counts"]["pending"] == 5

    server_key = public_key_from_b64(devices[committed]["server_key"])
    for device_id in (committed, downloading):
        answer = await fleet.checkin(devices[device_id])
        assert answer["action"] == "update" and answer["deployment_id"] == deployment
        assert answer["release"]["version"] == "1.0.0" and answer["release"]["sha256"] == old_sha
        order = verify_rollback_order(
            server_key, answer["rollback"], device_id, old_sha, "1.0.0", datetime.now(UTC)
        )
        assert order["deployment_id"] == deployment
        auth = {"Authorization": devices[device_id]["Authorization"]}
        assert (await fleet.client.get(answer["release"]["url"], headers=auth)).status_code == 200
        new_id = state["release"]["id"]
        assert (
            await fleet.client.get(f"/api/v1/device/artifacts/{new_id}", headers=auth)
        ).status_code == 403
        await fleet.report(devices[device_id], deployment, "rolled-back")
        assert (await fleet.checkin(devices[device_id]))["action"] == "none"

    for device_id, headers in devices.items():
        record = (
            await fleet.client.get(f"/api/v1/devices/{device_id}", headers=fleet.admin)
        ).json()
        assert record["installed"]["version"] == "1.0.0", device_id
        if device_id == committed:
            assert [h["event"] for h in record["history"]] == ["rolled-back", "updated", "enrolled"]
            assert record["installed"]["sha256"] == old_sha
        else:
            assert [h["event"] for h in record["history"]] == ["enrolled"]
        if device_id not in canaries:
            # Never offered anything, never touched.
            assert (await fleet.checkin(headers))["action"] == "none"
    progress = fleet.runtime.store.deployment_progress(deployment)
    outside = [p for p in progress if p.device_id not in canaries]
    assert len(outside) == 5 and all(p.status == "pending" for p in outside)
    touched = {
        a["target"].rsplit("device:", 1)[1]
        for a in (
            await fleet.client.get(
                f"/api/v1/audit?target=deployment:{deployment}&action=deployment.device-status&limit=1000",
                headers=fleet.admin,
            )
        ).json()["records"]
    }
    assert touched == set(canaries)
    assert new_sha != old_sha


async def test_operator_actions_and_invalid_transitions(
    fleet: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    paths = await _fleet_with_releases(fleet, build_bundle, release_key, "1.0.0", "1.1.0")
    device = await fleet.enroll("lab-0", installed=_installed("1.0.0", paths["1.0.0"]))
    other = await fleet.enroll("field-0", tags={"group": "field"})
    deployment = (
        await fleet.deploy({**KWS, "version": "1.1.0"}, selector={"tags": {"group": "lab"}})
    ).json()["id"]
    base = f"/api/v1/deployments/{deployment}"
    paused = await fleet.client.post(f"{base}/pause", headers=fleet.admin)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert (await fleet.checkin(device))["action"] == "none"
    again = await fleet.client.post(f"{base}/pause", headers=fleet.admin)
    assert again.status_code == 409
    assert again.json()["error"]["allowed"] == ["running", "cancelled", "aborted"]
    await fleet.client.post(f"{base}/resume", headers=fleet.admin)
    assert (await fleet.checkin(device))["action"] == "update"

    status_url = f"/api/v1/device/deployments/{deployment}/status"
    auth = {"Authorization": device["Authorization"]}
    skip = await fleet.client.post(status_url, json={"status": "success"}, headers=auth)
    assert skip.status_code == 409
    assert skip.json()["error"] == {
        "code": "invalid-transition",
        "message": "device status cannot go from 'pending' to 'success': allowed next: "
        "'downloading', 'failure'",
        "field": "status",
        "allowed": ["downloading", "failure"],
    }
    foreign = await fleet.client.post(
        status_url,
        json={"status": "downloading"},
        headers={"Authorization": other["Authorization"]},
    )
    assert foreign.status_code == 403
    missing = await fleet.client.post(
        "/api/v1/device/deployments/999/status", json={"status": "downloading"}, headers=auth
    )
    assert missing.status_code == 404
    await fleet.report(device, deployment, *UPDATE)
    rolled = await fleet.client.post(f"{base}/rollback", headers=fleet.admin)
    assert rolled.status_code == 200
    assert rolled.json()["status"] == "aborted" and rolled.json()["reason"].startswith("operator")
    answer = await fleet.checkin(device)
    assert answer["rollback"] is not None and answer["release"]["version"] == "1.0.0"
    cancel = await fleet.client.post(f"{base}/cancel", headers=fleet.admin)
    assert cancel.status_code == 409 and cancel.json()["error"]["allowed"] == []
    assert (
        await fleet.client.post("/api/v1/deployments/999/pause", headers=fleet.admin)
    ).status_code == 404


# --- downloads --------------------------------------------------------------------------------


async def test_artifact_downloads_with_ranges(
    fleet: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    paths = await _fleet_with_releases(fleet, build_bundle, release_key, "1.1.0")
    device = await fleet.enroll("lab-0")
    bystander = await fleet.enroll("lab-1", tags={"group": "other"})
    await fleet.deploy({**KWS, "version": "1.1.0"}, selector={"tags": {"group": "lab"}})
    url = (await fleet.checkin(device))["release"]["url"]
    data = paths["1.1.0"].read_bytes()
    size = len(data)
    auth = {"Authorization": device["Authorization"]}

    full = await fleet.client.get(url, headers=auth)
    assert full.status_code == 200 and full.content == data
    digest = hashlib.sha256(data)
    assert full.headers["etag"] == f'"{digest.hexdigest()}"'
    assert full.headers["repr-digest"] == f"sha-256=:{base64.b64encode(digest.digest()).decode()}:"
    assert full.headers["accept-ranges"] == "bytes"
    assert int(full.headers["content-length"]) == size

    cases = {
        "bytes=0-9": (0, 9),
        "bytes=1000-": (1000, size - 1),
        "bytes=-5": (size - 5, size - 1),
        f"bytes=10-{size + 50}": (10, size - 1),
        "bytes=-99999999": (0, size - 1),
    }
    for header, (first, last) in cases.items():
        part = await fleet.client.get(url, headers={**auth, "Range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.content == data[first : last + 1]
    for header in (
        f"bytes={size}-",
        "bytes=9-3",
        "bytes=abc",
        "items=0-1",
        "bytes=0-1,5-6",
        "bytes=-0",
        "bytes=-",
    ):
        bad = await fleet.client.get(url, headers={**auth, "Range": header})
        assert bad.status_code == 416, header
        assert bad.headers["content-range"] == f"bytes */{size}"
        assert bad.json()["error"]["code"] == "range-not-satisfiable"
    etag = full.headers["etag"]
    cached = await fleet.client.get(url, headers={**auth, "If-None-Match": etag})
    assert cached.status_code == 304
    stale = await fleet.client.get(
        url, headers={**auth, "Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert stale.status_code == 200 and stale.content == data
    fresh = await fleet.client.get(url, headers={**auth, "Range": "bytes=0-9", "If-Range": etag})
    assert fresh.status_code == 206
    denied = await fleet.client.get(url, headers={"Authorization": bystander["Authorization"]})
    assert denied.status_code == 403
    assert (await fleet.client.get(url)).status_code == 401


# --- telemetry, commands, metrics, audit ------------------------------------------------------


async def test_telemetry_and_remote_commands(fleet: Any) -> None:
    device = await fleet.enroll("nano-1")
    other = await fleet.enroll("nano-2")
    auth = {"Authorization": device["Authorization"]}
    points = [
        {"t": "2026-11-27T10:00:00Z", "metric": "inference_latency_ms", "value": 3.4},
        {"t": "2026-11-27T10:00:01+01:00", "metric": "temperature_c", "value": 41.5},
    ]
    logs = [{"t": "2026-11-27T10:00:00Z", "level": "info", "message": "committed slot b"}]
    r = await fleet.client.post(
        "/api/v1/device/telemetry", json={"points": points, "logs": logs}, headers=auth
    )
    assert r.status_code == 202 and r.json() == {"accepted": 2, "logs": 1}
    stored = fleet.runtime.store.telemetry("nano-1", "temperature_c")
    assert stored[0].t == datetime(2026, 11, 27, 9, 0, 1, tzinfo=UTC) and stored[0].value == 41.5
    unknown = await fleet.client.post(
        "/api/v1/device/telemetry",
        json={"points": [{"t": "2026-11-27T10:00:00Z", "metric": "joy", "value": 1}]},
        headers=auth,
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "points[0].metric"
    too_many = await fleet.client.post(
        "/api/v1/device/telemetry", json={"points": [points[0]] * 10_001}, headers=auth
    )
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "points"

    created = await fleet.client.post(
        "/api/v1/devices/nano-1/commands",
        json={"kind": "fetch_logs", "args": {"lines": 20}},
        headers=fleet.admin,
    )
    assert created.status_code == 201
    command_id = created.json()["id"]
    listed = (await fleet.client.get("/api/v1/device/commands", headers=auth)).json()
    assert listed == {"commands": [{"id": command_id, "kind": "fetch_logs", "args": {"lines": 20}}]}
    assert (await fleet.client.get("/api/v1/device/commands", headers=auth)).json() == {
        "commands": []
    }
    result_url = f"/api/v1/device/commands/{command_id}/result"
    foreign = await fleet.client.post(
        result_url, json={"ok": True}, headers={"Authorization": other["Authorization"]}
    )
    assert foreign.status_code == 403
    done = await fleet.client.post(
        result_url, json={"ok": True, "output": {"lines": ["x"]}}, headers=auth
    )
    assert done.status_code == 204
    twice = await fleet.client.post(result_url, json={"ok": True}, headers=auth)
    assert twice.status_code == 409
    history = (
        await fleet.client.get("/api/v1/devices/nano-1/commands", headers=fleet.admin)
    ).json()
    assert history["commands"][0]["status"] == "done"
    assert history["commands"][0]["output"] == {"lines": ["x"]}
    unknown_kind = await fleet.client.post(
        "/api/v1/devices/nano-1/commands", json={"kind": "format_disk"}, headers=fleet.admin
    )
    assert unknown_kind.status_code == 422


async def test_metrics_exposition_parses(
    fleet: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    await _fleet_with_releases(fleet, build_bundle, release_key, "1.1.0")
    device = await fleet.enroll("lab-0")
    await fleet.enroll("pi-0", hardware="rpi4")
    deployment = (await fleet.deploy({**KWS, "version": "1.1.0"})).json()["id"]
    answer = await fleet.checkin(device)
    for _ in range(2):
        await fleet.checkin(device)
    content = await fleet.client.get(
        answer["release"]["url"], headers={"Authorization": device["Authorization"]}
    )
    await fleet.report(device, deployment, "downloading")
    for action in ("pause", "resume"):
        r = await fleet.client.post(
            f"/api/v1/deployments/{deployment}/{action}", headers=fleet.admin
        )
        assert r.status_code == 200
    assert (await fleet.client.get("/metrics")).status_code == 401
    r = await fleet.client.get("/metrics", headers=await fleet.token("viewer"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}

    def value(family: str, sample: str, **labels: str) -> float:
        return next(
            s.value
            for s in families[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert value("tinyops_device_checkins", "tinyops_device_checkins_total") == 3
    assert value("tinyops_artifact_downloads", "tinyops_artifact_downloads_total") == 1
    assert value("tinyops_artifact_download_bytes", "tinyops_artifact_download_bytes_total") == len(
        content.content
    )
    assert (
        value(
            "tinyops_deployment_device_transitions",
            "tinyops_deployment_device_transitions_total",
            status="downloading",
        )
        == 1
    )
    assert (
        value(
            "tinyops_devices",
            "tinyops_devices",
            status="updating",
            hardware="nano33ble",
            release="none",
        )
        == 1
    )
    assert (
        value(
            "tinyops_devices", "tinyops_devices", status="active", hardware="rpi4", release="none"
        )
        == 1
    )
    assert value("tinyops_deployments", "tinyops_deployments", status="running") == 1
    for status in ("paused", "running"):
        assert (
            value(
                "tinyops_deployment_status_transitions",
                "tinyops_deployment_status_transitions_total",
                status=status,
            )
            == 1
        )
    assert (
        value(
            "tinyops_deployment_phase_devices",
            "tinyops_deployment_phase_devices",
            deployment=str(deployment),
            phase="0",
            status="downloading",
        )
        == 1
    )
    assert (
        value(
            "tinyops_deployment_phase_progress_ratio",
            "tinyops_deployment_phase_progress_ratio",
            deployment=str(deployment),
        )
        == 0.0
    )
    assert families["tinyops_http_request_duration_seconds"].type == "histogram"
    routes = {
        s.labels.get("route") for s in families["tinyops_http_request_duration_seconds"].samples
    }
    assert "/api/v1/device/artifacts/{release_id}" in routes
    assert "/api/v1/device/checkin" in routes
    assert all(
        "{" in r or r in ("unmatched", "/metrics", "/healthz") or r.count("/") >= 2 for r in routes
    )


async def test_healthz_needs_no_credentials_and_openapi_lists_every_endpoint(fleet: Any) -> None:
    assert (await fleet.client.get("/healthz")).json() == {"status": "ok"}
    # Nothing else answers without credentials: not the OpenAPI document, and no /docs.
    assert (await fleet.client.get("/openapi.json")).status_code == 401
    assert (await fleet.client.get("/docs", headers=fleet.admin)).status_code == 404
    spec = (await fleet.client.get("/openapi.json", headers=fleet.admin)).json()
    paths = set(spec["paths"])
    expected = {
        "/api/v1/device/enroll",
        "/api/v1/device/checkin",
        "/api/v1/device/artifacts/{release_id}",
        "/api/v1/device/deployments/{deployment_id}/status",
        "/api/v1/device/telemetry",
        "/api/v1/device/commands",
        "/api/v1/device/commands/{command_id}/result",
        "/api/v1/releases",
        "/api/v1/deployments",
        "/api/v1/deployments/{deployment_id}",
        "/api/v1/deployments/{deployment_id}/pause",
        "/api/v1/deployments/{deployment_id}/resume",
        "/api/v1/deployments/{deployment_id}/cancel",
        "/api/v1/deployments/{deployment_id}/rollback",
        "/api/v1/devices",
        "/api/v1/devices/{device_id}",
        "/api/v1/devices/{device_id}/commands",
        "/api/v1/enrollment-tokens",
        "/api/v1/tokens",
        "/api/v1/trusted-keys",
        "/api/v1/audit",
        "/metrics",
        "/healthz",
    }
    assert expected <= paths
    upload = spec["paths"]["/api/v1/releases"]["post"]
    assert "application/octet-stream" in upload["requestBody"]["content"]


async def test_an_update_offer_never_asks_for_a_longer_wait_than_an_idle_check_in(
    fleet_runner: Any, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    # The demo's setting: idle devices check in every second. The update interval (60 s by
    # default) used to win, and a device that had just committed stayed silent a minute.
    _, running = fleet_runner(poll_interval_s=1.0)
    async with running as fleet:
        await _fleet_with_releases(fleet, build_bundle, release_key, "1.0.0")
        device = await fleet.enroll("lab-0")
        assert (await fleet.checkin(device))["poll_interval_s"] == 1.0
        await fleet.deploy(KWS | {"version": "1.0.0"}, selector={"tags": {"group": "lab"}})
        offer = await fleet.checkin(device)
        assert (offer["action"], offer["poll_interval_s"]) == ("update", 1.0)
    # With the defaults (idle 300 s, updating 60 s) an updating device is asked back sooner.
    from tinyops.fleet.server import FleetSettings

    assert FleetSettings(data_dir=Path("fleet")).updating_poll_interval_s == 60.0
