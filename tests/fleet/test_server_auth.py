"""Identity and access: tokens, the role matrix, and 401/403 on every endpoint."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinyops.security.audit import AuditAction, audit_record, device_actor, token_actor
from tinyops.security.roles import PERMISSIONS, Permission, PermissionDenied, Role, allows, require
from tinyops.security.tokens import bearer_token, hash_token, is_token, new_token

# --- tokens and roles (pure) -------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["dev_", "tok_", "etk_"])
def test_tokens_are_32_random_bytes_base64url_with_a_prefix(prefix: Any) -> None:
    token, digest = new_token(prefix)
    assert re.fullmatch(prefix + r"[A-Za-z0-9_-]{43}", token)
    raw = base64.urlsafe_b64decode(token[len(prefix) :] + "=")
    assert len(raw) == 32
    assert digest == hash_token(token) and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert is_token(token, prefix)
    assert new_token(prefix)[0] != token


def test_token_hash_and_shapes() -> None:
    # `printf tok_abc | sha256sum` (coreutils)
    assert (
        hash_token("tok_abc") == "26cfed5080d011f7069c952bf630b4d33f9e445d61bd5336760217f08a4c6339"
    )
    assert not is_token("tok_" + "a" * 42, "tok_")
    assert not is_token("dev_" + "a" * 43, "tok_")
    assert not is_token("tok_" + "a" * 42 + "!", "tok_")
    with pytest.raises(ValueError, match="prefix"):
        new_token("key_")  # type: ignore[arg-type]
    assert bearer_token("Bearer tok_x") == "tok_x"
    assert bearer_token("bearer   tok_x ") == "tok_x"
    assert bearer_token("Basic dXNlcg==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_the_permission_matrix_is_the_protocol_table() -> None:
    table = {
        Role.ADMIN: set(Permission),
        Role.ML_ENGINEER: {Permission.READ, Permission.UPLOAD_RELEASE, Permission.SUBMIT_DATA},
        Role.DEVOPS: {
            Permission.READ,
            Permission.MANAGE_DEPLOYMENTS,
            Permission.SEND_COMMANDS,
            Permission.MANAGE_DEVICES,
        },
        Role.RETRAINER: {
            Permission.READ,
            Permission.UPLOAD_RELEASE,
            Permission.MANAGE_DEPLOYMENTS,
        },
        Role.VIEWER: {Permission.READ},
    }
    assert {role: set(perms) for role, perms in PERMISSIONS.items()} == table
    require(Role.DEVOPS, Permission.MANAGE_DEPLOYMENTS)
    assert not allows(Role.ML_ENGINEER, Permission.MANAGE_DEPLOYMENTS)
    with pytest.raises(
        PermissionDenied, match="role 'viewer' lacks the permission 'upload-release'"
    ) as info:
        require(Role.VIEWER, Permission.UPLOAD_RELEASE)
    assert "admin, ml-engineer" in str(info.value)


def test_audit_records() -> None:
    at = datetime(2026, 11, 27, 10, tzinfo=UTC)
    record = audit_record(
        at, token_actor("ci"), AuditAction.RELEASE_UPLOAD, "release:3", None, {"version": "1.2.0"}
    )
    assert record.actor == "token:ci" and record.id is None
    assert device_actor("nano-1") == "device:nano-1"
    assert record.model_dump(mode="json")["at"] == "2026-11-27T10:00:00Z"
    with pytest.raises(ValueError):
        audit_record(datetime(2026, 1, 1), "server", AuditAction.DEPLOYMENT_ABORT, "deployment:1")


# --- over HTTP ------------------------------------------------------------------------------

MANAGEMENT: list[tuple[str, str, Any, Permission]] = [
    ("GET", "/api/v1/releases", None, Permission.READ),
    ("GET", "/api/v1/releases/{release_id}", None, Permission.READ),
    ("POST", "/api/v1/releases", b"not a bundle", Permission.UPLOAD_RELEASE),
    ("GET", "/api/v1/deployments", None, Permission.READ),
    (
        "POST",
        "/api/v1/deployments",
        {"release": {"name": "kws", "version": "9.0.0", "target": "nano33ble"}},
        Permission.MANAGE_DEPLOYMENTS,
    ),
    ("GET", "/api/v1/deployments/{deployment_id}", None, Permission.READ),
    ("POST", "/api/v1/deployments/{deployment_id}/pause", None, Permission.MANAGE_DEPLOYMENTS),
    ("POST", "/api/v1/deployments/{deployment_id}/resume", None, Permission.MANAGE_DEPLOYMENTS),
    ("POST", "/api/v1/deployments/{deployment_id}/cancel", None, Permission.MANAGE_DEPLOYMENTS),
    ("POST", "/api/v1/deployments/{deployment_id}/rollback", None, Permission.MANAGE_DEPLOYMENTS),
    ("GET", "/api/v1/devices", None, Permission.READ),
    ("GET", "/api/v1/devices/{device_id}", None, Permission.READ),
    ("POST", "/api/v1/devices/{device_id}/commands", {"kind": "reboot"}, Permission.SEND_COMMANDS),
    ("GET", "/api/v1/devices/{device_id}/commands", None, Permission.READ),
    ("POST", "/api/v1/devices/{device_id}/decommission", None, Permission.MANAGE_DEVICES),
    ("POST", "/api/v1/enrollment-tokens", {"name": "batch-7"}, Permission.MANAGE_DEVICES),
    ("POST", "/api/v1/tokens", {"name": "made", "role": "viewer"}, Permission.MANAGE_ACCESS),
    ("GET", "/api/v1/tokens", None, Permission.MANAGE_ACCESS),
    ("DELETE", "/api/v1/tokens/{name}", None, Permission.MANAGE_ACCESS),
    ("POST", "/api/v1/trusted-keys", "PEM", Permission.MANAGE_ACCESS),
    ("GET", "/api/v1/trusted-keys", None, Permission.READ),
    ("GET", "/api/v1/audit", None, Permission.READ),
    ("GET", "/metrics", None, Permission.READ),
    ("GET", "/api/v1/drift", None, Permission.READ),
    ("GET", "/api/v1/drift/devices", None, Permission.READ),
    ("GET", "/api/v1/drift/profile", None, Permission.READ),
    (
        "POST",
        "/api/v1/feedback",
        {
            "release": {"name": "kws", "version": "9.0.0"},
            "device": "nano-1",
            "items": [{"prediction_id": "p-1", "label": 0}],
        },
        Permission.SUBMIT_DATA,
    ),
    (
        "POST",
        "/api/v1/samples",
        {"dataset": "kws/field", "items": [{"features": [0.5], "label": 1}]},
        Permission.SUBMIT_DATA,
    ),
    ("GET", "/api/v1/samples", None, Permission.READ),
    ("GET", "/api/v1/logs", None, Permission.READ),
    ("GET", "/api/v1/devices/{device_id}/logs", None, Permission.READ),
    ("GET", "/api/v1/alerts", None, Permission.READ),
]
DEVICE_API: list[tuple[str, str, Any]] = [
    ("POST", "/api/v1/device/checkin", {}),
    ("GET", "/api/v1/device/artifacts/1", None),
    ("POST", "/api/v1/device/deployments/1/status", {"status": "downloading"}),
    ("POST", "/api/v1/device/telemetry", {"points": []}),
    ("POST", "/api/v1/device/sketches", {}),
    ("GET", "/api/v1/device/commands", None),
    ("POST", "/api/v1/device/commands/1/result", {"ok": True}),
]
PARAMS = {"release_id": "1", "deployment_id": "1", "device_id": "nano-1", "name": "nobody"}


async def _call(fleet: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    url = path.format(**PARAMS)
    if isinstance(body, bytes):
        return await fleet.client.request(method, url, content=body, headers=headers)
    if body == "PEM":
        body = {"name": "k", "public_key_pem": _pem()}
    return await fleet.client.request(method, url, json=body, headers=headers)


def _pem() -> str:
    from cryptography.hazmat.primitives import serialization

    key = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.mark.anyio
async def test_every_management_endpoint_checks_credentials_and_roles(fleet: Any) -> None:
    await fleet.enroll("nano-1")  # the device the endpoints name (admin decommissions it)
    device = await fleet.enroll("probe-1")  # the device whose token must get 403
    spec = (await fleet.client.get("/openapi.json", headers=fleet.admin)).json()
    documented = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if not path.startswith("/api/v1/device/") and path != "/healthz"
    }
    assert documented == {(m, p) for m, p, _, _ in MANAGEMENT}, "a new endpoint needs a row here"

    tokens = {role: await fleet.token(role.value, name=f"who-{role.value}") for role in Role}
    audit_before = len(fleet.runtime.store.audit_log(limit=1000))
    for method, path, body, needed in MANAGEMENT:
        for headers, expected in (
            ({}, 401),
            ({"Authorization": "Bearer tok_" + "A" * 43}, 401),
            ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401),
            ({"Authorization": device["Authorization"]}, 403),
        ):
            r = await _call(fleet, method, path, body, headers)
            assert r.status_code == expected, (method, path, headers, r.text)
            assert r.json()["error"]["code"] in ("unauthorized", "forbidden")
        for role, headers in tokens.items():
            r = await _call(fleet, method, path, body, headers)
            if allows(role, needed):
                assert r.status_code not in (401, 403), (role, method, path, r.text)
            else:
                assert r.status_code == 403, (role, method, path, r.text)
                assert needed.value in r.json()["error"]["message"]
    # Refused requests wrote nothing; the admin's allowed changes did.
    records = fleet.runtime.store.audit_log(limit=1000)
    actors = {r.actor for r in records[: len(records) - audit_before]}
    assert actors <= {
        "token:who-admin",
        "token:who-devops",
        "token:who-ml-engineer",
        "token:who-retrainer",
    }


@pytest.mark.anyio
async def test_device_api_accepts_only_device_tokens(fleet: Any) -> None:
    device = await fleet.enroll("nano-1")
    api = await fleet.token("admin", name="ops")
    for method, path, body in DEVICE_API:
        assert (await fleet.client.request(method, path, json=body)).status_code == 401, path
        wrong = {"Authorization": "Bearer dev_" + "B" * 43}
        assert (
            await fleet.client.request(method, path, json=body, headers=wrong)
        ).status_code == 401
        r = await fleet.client.request(method, path, json=body, headers=api)
        assert r.status_code == 403, (path, r.text)
    ok = await fleet.client.post(
        "/api/v1/device/checkin", json={}, headers={"Authorization": device["Authorization"]}
    )
    assert ok.status_code == 200
    # Decommissioned: the token stops working at once.
    r = await fleet.client.post("/api/v1/devices/nano-1/decommission", headers=fleet.admin)
    assert r.status_code == 200 and r.json()["status"] == "decommissioned"
    gone = await fleet.client.post(
        "/api/v1/device/checkin", json={}, headers={"Authorization": device["Authorization"]}
    )
    assert gone.status_code == 401


@pytest.mark.anyio
async def test_tokens_can_be_revoked_and_enrollment_tokens_expire(fleet: Any) -> None:
    ci = await fleet.token("ml-engineer", name="ci")
    assert (await fleet.client.get("/api/v1/releases", headers=ci)).status_code == 200
    listed = (await fleet.client.get("/api/v1/tokens", headers=fleet.admin)).json()["tokens"]
    assert {t["name"]: t["role"] for t in listed} == {"admin": "admin", "ci": "ml-engineer"}
    assert all("token" not in t for t in listed)
    assert (await fleet.client.delete("/api/v1/tokens/ci", headers=fleet.admin)).status_code == 204
    assert (await fleet.client.get("/api/v1/releases", headers=ci)).status_code == 401
    assert (await fleet.client.delete("/api/v1/tokens/ci", headers=fleet.admin)).status_code == 409
    duplicate = await fleet.client.post(
        "/api/v1/tokens", json={"name": "admin", "role": "viewer"}, headers=fleet.admin
    )
    assert duplicate.status_code == 409

    once = await fleet.enrollment_token(max_uses=1)
    await fleet.enroll("nano-1", etk=once)
    again = await fleet.client.post(
        "/api/v1/device/enroll",
        json={"enrollment_token": once, "device_id": "nano-2", "hardware": "nano33ble"},
    )
    assert again.status_code == 401 and "used 1 times" in again.json()["error"]["message"]
    audit = (
        await fleet.client.get("/api/v1/audit?action=token.revoke", headers=fleet.admin)
    ).json()
    assert [(r["actor"], r["target"]) for r in audit["records"]] == [("token:admin", "token:ci")]
    assert audit["records"][0]["before"] == {"revoked": False}
    assert audit["records"][0]["after"] == {"revoked": True}
