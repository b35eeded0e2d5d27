"""Shared fleet fixtures: a fresh database per test (SQLite and PostgreSQL), real bundles.

`db_url` is parametrized: every test that uses it runs once on SQLite (a file under the
test's tmp_path) and once on PostgreSQL (a database created on 127.0.0.1:5432 as user
postgres for this test alone and dropped after it). Without a reachable PostgreSQL the
second run skips with the reason, except under CI=true, where it fails.

Bundles are real: the MLPerf Tiny keyword-spotting model (int8, read in place from
../shared/fixtures/mlperf-tiny), with golden vectors computed by running it with LiteRT,
signed by a test key with `write_bundle`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "mlperf-tiny"
KWS_MODEL = "kws_ref_model.tflite"
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
# Golden vectors per bundle: enough for a self-test, small enough to keep bundles ~60 KB.
GOLDEN_COUNT = 2


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip with `reason`, or fail under CI=true (where every service must be present)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this must not be skipped)")
    pytest.skip(reason)


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test; dropped afterwards."""
    import psycopg

    try:
        admin = _pg_admin()
    except psycopg.OperationalError as exc:
        skip_or_fail(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {exc}")
        raise AssertionError("unreachable") from exc
    name = f"tinyops_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database URL of this test: SQLite file, then PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'fleet.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def kws_model() -> bytes:
    """The MLPerf Tiny KWS int8 .tflite, read in place (skip without the fixtures)."""
    path = FIXTURES / KWS_MODEL
    if not path.is_file():
        skip_or_fail(f"MLPerf Tiny fixture {path} not found")
    return path.read_bytes()


@pytest.fixture(scope="session")
def kws_payload(kws_model: bytes) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Bundle files (model + golden vectors from a real LiteRT run) and the model info."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from tinyops.bundle.golden import GoldenVectors
    from tinyops.bundle.manifest import TensorSpec

    interpreter = Interpreter(
        model_content=kws_model,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    in_detail = interpreter.get_input_details()[0]
    out_detail = interpreter.get_output_details()[0]
    rng = np.random.default_rng(7)
    inputs = rng.integers(-128, 128, size=(GOLDEN_COUNT, *in_detail["shape"]), dtype=np.int8)
    outputs = []
    for vector in inputs:
        interpreter.set_tensor(in_detail["index"], vector)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out_detail["index"]).copy())
    golden = GoldenVectors(
        inputs=inputs,
        outputs=np.stack(outputs).astype(np.int8),
        input_quant=in_detail["quantization"],
        output_quant=out_detail["quantization"],
        tolerance=1,
    )
    model = {
        "input": TensorSpec.from_details(in_detail).model_dump(),
        "output": TensorSpec.from_details(out_detail).model_dump(),
        "ops": [],
        "variant": "int8",
    }
    return {"model.tflite": kws_model, **golden.to_files()}, model


@pytest.fixture(scope="session")
def release_key() -> Ed25519PrivateKey:
    """The key CI signs releases with in these tests (fixed, so bundles are reproducible)."""
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))


@pytest.fixture(scope="session")
def stranger_key() -> Ed25519PrivateKey:
    """A key the fleet does not trust."""
    return Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))


def public_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


BuildBundle = Callable[..., Path]


@pytest.fixture(scope="session")
def build_bundle(
    tmp_path_factory: pytest.TempPathFactory,
    kws_payload: tuple[dict[str, bytes], dict[str, Any]],
    release_key: Ed25519PrivateKey,
) -> BuildBundle:
    """`build_bundle(version, target="nano33ble", key=release_key, expired=False, ...)`."""
    from tinyops.bundle.bundle import write_bundle

    files, model = kws_payload
    created = datetime(2026, 1, 1, tzinfo=UTC)

    def build(
        version: str,
        target: str = "nano33ble",
        *,
        name: str = "kws",
        key: Ed25519PrivateKey | None = None,
        expired: bool = False,
    ) -> Path:
        out = tmp_path_factory.mktemp("bundles")
        # Expired: a validity window that ended before any test runs.
        expires = created + timedelta(days=1) if expired else created + timedelta(days=3650)
        return write_bundle(
            out,
            name=name,
            version=version,
            target=target,
            files=files,
            private_key=key if key is not None else release_key,
            model=model,
            measured={"arena_bytes": 24_000, "latency_ms": 12.0},
            created_at=created,
            expires_at=expires,
        )

    return build


# --- a running fleet server, in process (ASGI) ------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A fleet server on SQLite."""
    async with running_fleet(fleet_settings(tmp_path / "fleet")) as running:
        yield running


@pytest.fixture
async def fleet_on_each_db(db_url: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    """A fleet server on SQLite, then on PostgreSQL."""
    async with running_fleet(fleet_settings(tmp_path / "fleet", db_url)) as running:
        yield running


@pytest.fixture
def fleet_runner(tmp_path: Path) -> Callable[..., tuple[Any, Any]]:
    """`settings, context = fleet_runner(**settings)`: run (and stop) a server yourself."""

    def make(**overrides: Any) -> tuple[Any, Any]:
        settings = fleet_settings(tmp_path / "fleet", **overrides)
        return settings, running_fleet(settings)

    return make
