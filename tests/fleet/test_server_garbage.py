"""Bad input never gets a 500: garbage bodies, wrong types in every field, bad path and query
parameters, oversize bodies. Every refusal is a 4xx with the JSON error body."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

pytestmark = pytest.mark.anyio

GARBAGE_BODIES: list[bytes] = [
    b"",
    b"{",
    b"}",
    b"null",
    b"[]",
    b'"text"',
    b"12",
    b"true",
    b'{"unknown": 1}',
    b"\xff\xfe\x00\x01",
    b"[" * 5000 + b"]" * 5000,
    b'{"a": NaN}',
    b'{"a": 1e999}',
    b'{"a": "\\u0000"}',
    b'{"a": "\\ud800"}',
]
WRONG_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    2**70,
    1.5,
    -1e308,
    "",
    "x" * 5000,
    "nul\u0000byte",
    "lone \ud800 surrogate",
    "\u202eevil",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    [],
    [1, "a"],
    {},
    {"k": {"deep": [1]}},
]
PATH_VALUES = ["0", "-1", "99999999999999999999999", "abc", "%00", "a" * 300, "..", "nano-1"]
TIME = "2026-11-27T10:00:00Z"


def _pem() -> str:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _bodies(etk: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A well-formed body for every JSON endpoint: the starting point of the mutations."""
    installed = {"name": "kws", "version": "1.0.0", "sha256": "a" * 64}
    return {
        ("POST", "/api/v1/device/enroll"): {
            "enrollment_token": etk,
            "device_id": "fuzz-1",
            "hardware": "nano33ble",
            "tags": {"group": "lab"},
            "public_key": None,
            "installed": installed,
        },
        ("POST", "/api/v1/device/checkin"): {
            "installed": installed,
            "slot": {"active": "a", "state": "committed"},
            "health": {"uptime_s": 1, "resets": 0, "free_memory_bytes": 5},
        },
        ("POST", "/api/v1/device/deployments/{deployment_id}/status"): {
            "status": "downloading",
            "reason": "r",
            "version": "1.0.0",
        },
        ("POST", "/api/v1/device/telemetry"): {
            "points": [{"t": TIME, "metric": "uptime_s", "value": 1.0}],
            "logs": [{"t": TIME, "level": "info", "message": "m"}],
        },
        ("POST", "/api/v1/device/commands/{command_id}/result"): {"ok": True, "output": {"a": 1}},
        ("POST", "/api/v1/deployments"): {
            "release": {"name": "kws", "version": "1.0.0", "target": "nano33ble"},
            "selector": {
                "tags": {"group": "lab"},
                "hardware": "nano33ble",
                "installed_version": "0.9.0",
            },
            "phases": [
                {"percent": 50, "soak_s": 0, "success_threshold": 1, "max_failure_rate": 0.1},
                {"count": 100},
            ],
            "max_failure_rate": 0.05,
        },
        ("POST", "/api/v1/devices/{device_id}/commands"): {"kind": "reboot", "args": {"a": 1}},
        ("POST", "/api/v1/enrollment-tokens"): {"name": "x", "expires_in_s": 60, "max_uses": 3},
        ("POST", "/api/v1/tokens"): {"name": "fz", "role": "viewer"},
        ("POST", "/api/v1/trusted-keys"): {"name": "k", "public_key_pem": _pem()},
    }


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value (objects and lists included, not only scalars)."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _leaves(sub, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _leaves(sub, (*path, index))


def _mutated(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def _assert_clean(r: Any, what: object) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:500])
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) >= {"code", "message", "field"}, (what, error)
        assert isinstance(error["message"], str) and error["message"], (what, error)


@pytest.fixture
async def armed(
    fleet_on_each_db: Any,
) -> AsyncIterator[tuple[Any, dict[str, str], dict[str, str]]]:
    """The fleet (on SQLite, then PostgreSQL), device headers, admin headers."""
    device = await fleet_on_each_db.enroll("nano-1")
    yield fleet_on_each_db, {"Authorization": device["Authorization"]}, fleet_on_each_db.admin


async def test_garbage_bodies_on_every_endpoint(armed: Any) -> None:
    fleet, device, admin = armed
    spec = (await fleet.client.get("/openapi.json", headers=admin)).json()
    operations = [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]
    assert len(operations) >= 29
    for method, template in operations:
        url = template.format(
            release_id=1, deployment_id=1, command_id=1, device_id="nano-1", name="nobody"
        )
        headers = device if template.startswith("/api/v1/device/") else admin
        for body in GARBAGE_BODIES:
            for content_type in ("application/json", "application/octet-stream", "text/plain"):
                r = await fleet.client.request(
                    method, url, content=body, headers={**headers, "Content-Type": content_type}
                )
                _assert_clean(r, (method, url, body[:20], content_type))
        for value in PATH_VALUES:
            if "{" not in template:
                continue
            bad = template
            for name in ("release_id", "deployment_id", "command_id", "device_id", "name"):
                bad = bad.replace("{" + name + "}", value)
            r = await fleet.client.request(method, bad, json={}, headers=headers)
            _assert_clean(r, (method, bad))


async def test_wrong_values_in_every_field(armed: Any) -> None:
    fleet, device, admin = armed
    etk = await fleet.enrollment_token()
    for (method, template), body in _bodies(etk).items():
        url = template.format(deployment_id=1, command_id=1, device_id="nano-1")
        headers = device if template.startswith("/api/v1/device/") else admin
        if template == "/api/v1/device/enroll":
            headers = {}
        baseline = await fleet.client.request(method, url, json=body, headers=headers)
        _assert_clean(baseline, (url, "baseline"))
        for path in _leaves(body):
            for value in WRONG_VALUES:
                # ASCII-escaped JSON: a lone surrogate travels as \\ud800, as any client
                # may send it.
                r = await fleet.client.request(
                    method,
                    url,
                    content=json.dumps(_mutated(body, path, value)).encode(),
                    headers={**headers, "Content-Type": "application/json"},
                )
                _assert_clean(r, (url, path, repr(value)[:40]))
        unknown = await fleet.client.request(
            method, url, json={**body, "surprise": 1}, headers=headers
        )
        assert unknown.status_code == 422, (url, unknown.text)
        assert unknown.json()["error"]["field"] == "surprise"


async def test_garbage_queries(armed: Any) -> None:
    fleet, device, admin = armed
    urls = [
        "/api/v1/devices?status=zzz",
        "/api/v1/devices?limit=-1",
        "/api/v1/devices?limit=99999999999999999999",
        "/api/v1/devices?tag=nocolon",
        "/api/v1/devices?tag=:v",
        "/api/v1/devices?after=%00",
        "/api/v1/devices?hardware=%00",
        "/api/v1/audit?before_id=abc",
        "/api/v1/audit?before_id=99999999999999999999999",
        "/api/v1/audit?action=bogus",
        "/api/v1/audit?target=%00",
        "/api/v1/audit?actor=" + "a" * 500,
        "/api/v1/releases?name=%00",
        "/api/v1/releases?target=" + "x" * 500,
        "/api/v1/deployments?status=bogus",
    ]
    for url in urls:
        r = await fleet.client.get(url, headers=admin)
        assert 400 <= r.status_code < 500, (url, r.text)
        _assert_clean(r, url)
    ok = await fleet.client.get("/api/v1/devices?tag=group:lab&status=active", headers=admin)
    assert [d["id"] for d in ok.json()["devices"]] == ["nano-1"]
    wrong_method = await fleet.client.put("/api/v1/device/checkin", json={}, headers=device)
    assert (
        wrong_method.status_code == 405
        and wrong_method.json()["error"]["code"] == "method-not-allowed"
    )
    unknown = await fleet.client.get("/api/v2/anything", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not-found"


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def test_garbage_uploads(armed: Any, release_key: Ed25519PrivateKey) -> None:
    fleet, _, admin = armed
    await fleet.trust(release_key)
    manifest = json.dumps({"name": "kws", "version": "1.0.0"}).encode()
    uploads = [
        b"\x00" * 1000,
        b"PK\x05\x06" + b"\x00" * 18,
        _zip({"manifest.json": b"{", "manifest.sig": b"x" * 64}),
        _zip({"manifest.json": manifest, "manifest.sig": release_key.sign(manifest)}),
        _zip({"../evil": b"x", "manifest.json": manifest}),
        _zip({"model.tflite": b"TFL3"}),
    ]
    for data in uploads:
        r = await fleet.client.post("/api/v1/releases", content=data, headers=admin)
        assert r.status_code == 422, (data[:30], r.text)
        _assert_clean(r, data[:30])
    assert not any((fleet.runtime.settings.data_dir / "uploads").iterdir())


async def test_oversize_bodies_are_refused_before_and_while_reading(fleet_runner: Any) -> None:
    _, running = fleet_runner(max_body_bytes=1024, max_release_bytes=4096)
    async with running as fleet:
        device = await fleet.enroll("nano-1")
        auth = {"Authorization": device["Authorization"], "Content-Type": "application/json"}
        big = b'{"installed": null, "pad": "' + b"x" * 2000 + b'"}'
        declared = await fleet.client.post("/api/v1/device/checkin", content=big, headers=auth)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "body-too-large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 512

        streamed = await fleet.client.post("/api/v1/device/checkin", content=chunks(), headers=auth)
        assert streamed.status_code == 413 and "1024 bytes" in streamed.json()["error"]["message"]
        upload = await fleet.client.post(
            "/api/v1/releases", content=b"x" * 5000, headers=fleet.admin
        )
        assert upload.status_code == 413
        streamed_upload = await fleet.client.post(
            "/api/v1/releases", content=chunks(), headers=fleet.admin
        )
        assert streamed_upload.status_code == 413
        # A release body between the two limits is fine for the upload endpoint.
        small = await fleet.client.post(
            "/api/v1/releases", content=b"x" * 2000, headers=fleet.admin
        )
        assert small.status_code == 422
