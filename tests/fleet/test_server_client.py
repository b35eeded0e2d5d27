"""`tinyops.fleet.client` against a real uvicorn server on a free port (in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinyops.fleet.client import (
    FleetClientError,
    create_deployment,
    deployment_action,
    deployment_status,
    upload_release,
)

BuildBundle = Callable[..., Path]
START_TIMEOUT_S = 30.0


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, admin token) of a fleet server running in this process."""
    import uvicorn

    from tinyops.fleet.server import FleetSettings, create_app, init_fleet

    settings = FleetSettings(data_dir=tmp_path / "fleet", evaluate_interval_s=3600)
    token = init_fleet(settings)
    assert token is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _setup(url: str, token: str, key: Ed25519PrivateKey) -> None:
    admin = {"Authorization": f"Bearer {token}"}
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    r = httpx.post(
        f"{url}/api/v1/trusted-keys",
        json={"name": "ci", "public_key_pem": pem.decode()},
        headers=admin,
    )
    assert r.status_code == 201
    etk = httpx.post(f"{url}/api/v1/enrollment-tokens", json={"name": "lab"}, headers=admin).json()[
        "token"
    ]
    for i in range(4):
        r = httpx.post(
            f"{url}/api/v1/device/enroll",
            json={
                "enrollment_token": etk,
                "device_id": f"lab-{i}",
                "hardware": "nano33ble",
                "tags": {"group": "lab"},
            },
        )
        assert r.status_code == 201


def test_client_uploads_deploys_and_acts(
    live_server: tuple[str, str], build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> None:
    url, token = live_server
    _setup(url, token, release_key)
    release = upload_release(url, token, build_bundle("1.2.0"))
    assert (release["name"], release["version"], release["target"]) == ("kws", "1.2.0", "nano33ble")
    assert upload_release(url, token, build_bundle("1.2.0"))["id"] == release["id"]

    deployment = create_deployment(
        url,
        token,
        "kws",
        "1.2.0",
        tags={"group": "lab"},
        phases="1,50%,100%",
        max_failure_rate=0.05,
    )
    assert deployment["status"] == "running" and deployment["device_count"] == 4
    assert [p["devices"] for p in deployment["phases"]] == [1, 1, 2]
    assert deployment_action(url, token, deployment["id"], "pause")["status"] == "paused"
    assert deployment_status(url, token, deployment["id"])["status"] == "paused"
    assert deployment_action(url, token, deployment["id"], "resume")["status"] == "running"
    assert deployment_action(url, token, deployment["id"], "cancel")["status"] == "cancelled"

    with pytest.raises(FleetClientError) as info:
        deployment_action(url, token, deployment["id"], "resume")
    assert info.value.status == 409 and info.value.code == "invalid-transition"
    assert "'cancelled' to 'running'" in str(info.value)


@pytest.mark.parametrize(
    ("call", "status", "field"),
    [
        (lambda url, token: create_deployment(url, token, "kws", "9.9.9"), None, "release"),
        (
            lambda url, token: create_deployment(url, token, "kws", "1.0.0", phases="10%,5%"),
            None,
            "phases",
        ),
        (lambda url, token: deployment_status(url, token, 404), 404, None),
        (lambda url, token: deployment_status(url, "tok_" + "x" * 43, 1), 401, None),
        (
            lambda url, token: upload_release(url, token, Path("/nonexistent.tinybundle")),
            None,
            None,
        ),
        (lambda url, token: deployment_status("http://127.0.0.1:9", token, 1), None, None),
    ],
)
def test_client_errors_carry_the_servers_reason(
    live_server: tuple[str, str], call: Any, status: int | None, field: str | None
) -> None:
    url, token = live_server
    with pytest.raises(FleetClientError) as info:
        call(url, token)
    assert info.value.status == status
    assert info.value.field == field
    assert str(info.value)
