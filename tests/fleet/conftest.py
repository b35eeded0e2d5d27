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

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ci_env import skip_or_fail
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_inprocess import Fleet, fleet_settings, running_fleet

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "mlperf-tiny"
KWS_MODEL = "kws_ref_model.tflite"
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
# Golden vectors per bundle: enough for a self-test, small enough to keep bundles ~60 KB.
GOLDEN_COUNT = 2


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
