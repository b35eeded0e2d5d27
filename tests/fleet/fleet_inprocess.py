"""The fleet server in process: its app served through httpx's ASGI transport, with helpers
to enroll devices, upload releases and deploy. Fixtures in conftest.py build on it; tests
that start a server themselves import from here (not from `conftest`, whose module name
several conftest files share).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Fleet:
    """A fleet server app served in process through httpx's ASGI transport, with helpers."""

    def __init__(self, client: Any, runtime: Any, admin_token: str) -> None:
        self.client = client
        self.runtime = runtime
        self.admin = {"Authorization": f"Bearer {admin_token}"}

    async def token(self, role: str, name: str | None = None) -> dict[str, str]:
        """Headers carrying a new API token with `role`."""
        r = await self.client.post(
            "/api/v1/tokens",
            json={"name": name or f"{role}-token", "role": role},
            headers=self.admin,
        )
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    async def trust(self, key: Ed25519PrivateKey, name: str = "release-ci") -> None:
        r = await self.client.post(
            "/api/v1/trusted-keys",
            json={"name": name, "public_key_pem": public_pem(key)},
            headers=self.admin,
        )
        assert r.status_code in (200, 201), r.text

    async def enrollment_token(self, **body: Any) -> str:
        r = await self.client.post(
            "/api/v1/enrollment-tokens", json={"name": "lab", **body}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    async def enroll(
        self,
        device_id: str,
        *,
        hardware: str = "nano33ble",
        tags: dict[str, str] | None = None,
        installed: dict[str, Any] | None = None,
        etk: str | None = None,
    ) -> dict[str, str]:
        """Enroll a device; the headers carrying its token (`server_key` in ['server_key'])."""
        r = await self.client.post(
            "/api/v1/device/enroll",
            json={
                "enrollment_token": etk or await self.enrollment_token(),
                "device_id": device_id,
                "hardware": hardware,
                "tags": tags if tags is not None else {"group": "lab"},
                "installed": installed,
            },
        )
        assert r.status_code == 201, r.text
        body = r.json()
        return {"Authorization": f"Bearer {body['device_token']}", "server_key": body["server_key"]}

    async def upload(self, path: Path, headers: dict[str, str] | None = None) -> Any:
        return await self.client.post(
            "/api/v1/releases",
            content=path.read_bytes(),
            headers={**(headers or self.admin), "Content-Type": "application/octet-stream"},
        )

    async def checkin(self, device: dict[str, str], installed: Any = "absent") -> dict[str, Any]:
        body: dict[str, Any] = {
            "slot": {"active": "a", "state": "committed"},
            "health": {"uptime_s": 10, "resets": 0, "free_memory_bytes": 80_000},
        }
        if installed != "absent":
            body["installed"] = installed
        r = await self.client.post("/api/v1/device/checkin", json=body, headers=_auth(device))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def report(self, device: dict[str, str], deployment: int, *statuses: str) -> None:
        for status in statuses:
            r = await self.client.post(
                f"/api/v1/device/deployments/{deployment}/status",
                json={"status": status},
                headers=_auth(device),
            )
            assert r.status_code == 204, r.text

    async def deploy(self, release: dict[str, str], **body: Any) -> Any:
        return await self.client.post(
            "/api/v1/deployments", json={"release": release, **body}, headers=self.admin
        )

    async def deployment(self, deployment_id: int) -> dict[str, Any]:
        r = await self.client.get(f"/api/v1/deployments/{deployment_id}", headers=self.admin)
        assert r.status_code == 200, r.text
        return dict(r.json())


def _auth(headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": headers["Authorization"]}


def fleet_settings(data_dir: Path, db_url: str | None = None, **overrides: Any) -> Any:
    from tinyops.fleet.server import FleetSettings

    # The background evaluator and check-in writer run once at start, then only when a
    # test calls them (runtime.evaluate_running(), runtime.flush()): deterministic tests.
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "db_url": db_url,
        "poll_interval_s": 300,
        "update_poll_interval_s": 60,
        "evaluate_interval_s": 3600,
        "flush_interval_s": 3600,
    }
    return FleetSettings(**(fields | overrides))


@asynccontextmanager
async def running_fleet(settings: Any) -> AsyncIterator[Fleet]:
    import httpx

    from tinyops.fleet.server import create_app, init_fleet

    admin_token = init_fleet(settings)
    assert admin_token is not None
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fleet") as client:
            yield Fleet(client, app.state.runtime, admin_token)
