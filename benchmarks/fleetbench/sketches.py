"""Drift sketches stored per second (issue 4): one window of one device per request.

A release whose bundle carries a reference profile of 25 features (20 numeric in 10
quantile bins, 5 categorical), 10 classes and the confidence histogram is stored in a new
fleet of `DEVICES` devices that run it. wrk posts sketches (`POST /api/v1/device/sketches`,
a real body binned by the profile: 25 feature histograms, class counts, confidence
counts) round-robin over the devices, every window new, for a bounded time. The server
checks each against the profile and commits its window row before answering 202, so the
rate is the 202 answers per second; afterwards the rows in the database are counted and
must cover every answered sketch.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from fleetbench.harness import (
    HARDWARE,
    count_rows,
    fleet_server,
    postgres_database,
    prepare_fleet,
    run_wrk,
    write_tokens,
)

DEVICES: Final = 1_000
ROWS: Final = 480  # inferences per window in the body
NUMERIC: Final = 20
CATEGORICAL: Final = 5
CLASSES: Final = 10
DURATION_S: Final = 10
WARMUP_S: Final = 2
CONNECTIONS: Final = 32


def _profile_and_body() -> tuple[Any, str]:
    from tinyops.monitor.reference import build_reference_profile

    rng = np.random.default_rng(4)
    n = 20_000
    x = np.column_stack(
        [rng.normal(0, 1, (n, NUMERIC)), rng.integers(0, 4, (n, CATEGORICAL)).astype(float)]
    )
    names = [f"num_{j:02d}" for j in range(NUMERIC)] + [f"cat_{j}" for j in range(CATEGORICAL)]
    probs = rng.dirichlet(np.ones(CLASSES), size=n)
    profile = build_reference_profile(x, names, categorical=names[NUMERIC:], probabilities=probs)
    hist = profile.histograms(x[:ROWS] + 0.1, probabilities=probs[:ROWS])
    body = {
        "release": {"name": "kws", "version": "1.0.0"},
        "window": {"start": "__START__", "end": "__END__"},
        "count": ROWS,
        "histograms": hist.to_dict(),
    }
    return profile, json.dumps(body)


def _add_release(data_dir: Path, db_url: str | None, profile: Any, root: Path) -> None:
    """Store kws 1.0.0 for the benchmark board with the profile (as an upload would)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinyops.bundle.bundle import verify_bundle, write_bundle
    from tinyops.fleet.server import FleetSettings
    from tinyops.fleet.server.drift_service import bundle_monitoring
    from tinyops.fleet.store import Store
    from tinyops.monitor.policy import MonitoringPolicy, monitoring_files
    from tinyops.store.atomic import sha256_bytes

    key = Ed25519PrivateKey.generate()
    members = monitoring_files(profile, MonitoringPolicy())
    created = datetime.now(UTC).replace(microsecond=0)
    path = write_bundle(
        root,
        name="kws",
        version="1.0.0",
        target=HARDWARE,
        files={"model.tflite": b"\0" * 1024, **members},
        private_key=key,
        model={
            "input": {"shape": [1, NUMERIC + CATEGORICAL]},
            "output": {"shape": [1, CLASSES]},
        },
        created_at=created,
        expires_at=created + timedelta(days=365),
    )
    verified = verify_bundle(path, [key.public_key()])
    staged = root / "staged.tinybundle"
    shutil.copy(path, staged)
    data = path.read_bytes()
    settings = FleetSettings(data_dir=data_dir, db_url=db_url)
    store = Store(settings.database_url(), data_dir)
    try:
        store.add_release(
            staged,
            verified.manifest,
            sha256_bytes(data),
            len(data),
            "token:bench",
            datetime.now(UTC),
            monitoring=bundle_monitoring(verified.files),
        )
    finally:
        store.close()


def _run(label: str, db_url: str | None, root: Path) -> dict[str, Any]:
    profile, body = _profile_and_body()
    fleet = prepare_fleet(root / label, db_url, DEVICES)
    _add_release(fleet.data_dir, fleet.db_url, profile, root / f"{label}-bundle")
    tokens = write_tokens(fleet.device_tokens, root / f"{label}-tokens.txt")
    template = root / f"{label}-body.json"
    template.write_text(body)
    args = [str(tokens), str(template)]
    server = fleet_server(fleet.data_dir, fleet.db_url, root / f"{label}.log").start()
    try:
        warm = run_wrk(
            server.url, "sketches.lua", [*args, "0"], duration_s=WARMUP_S, connections=CONNECTIONS
        )
        cpu0 = server.cpu_seconds()
        result = run_wrk(
            server.url,
            "sketches.lua",
            [*args, "500000"],
            duration_s=DURATION_S,
            connections=CONNECTIONS,
        )
        cpu = server.cpu_seconds() - cpu0
    finally:
        server.stop()
    stored = count_rows(fleet.data_dir, fleet.db_url, "SELECT count(*) FROM sketch_windows")
    answered = warm.requests + result.requests
    rate = result.requests / result.duration_s
    return {
        "benchmark": f"drift sketches stored on {label} (25 features, 10 classes, "
        f"{len(body):,}-byte body), {CONNECTIONS} connections",
        "value": round(rate),
        "unit": "sketches/s",
        "goal": "(measured)",
        # Requests cut off by the end of a run got no answer but may have been stored.
        "ok": result.errors == 0
        and warm.errors == 0
        and answered <= stored <= answered + 2 * CONNECTIONS,
        "detail": f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, server CPU "
        f"{cpu / result.duration_s:.2f} cores, {stored:,} windows in the database for "
        f"{answered:,} answered 202; = {rate * 3600:,.0f} devices at one window an hour",
    }


def bench_sketches() -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyops-bench-sketches-") as tmp:
        root = Path(tmp)
        rows.append(_run("SQLite", None, root))
        with postgres_database() as pg_url:
            if pg_url is None:
                rows.append(
                    {
                        "benchmark": "drift sketches stored on PostgreSQL",
                        "value": "skipped",
                        "unit": "",
                        "goal": "(measured)",
                        "ok": False,
                        "detail": "PostgreSQL unreachable on 127.0.0.1:5432",
                    }
                )
            else:
                rows.append(_run("PostgreSQL", pg_url, root))
    return rows


if __name__ == "__main__":
    for row in bench_sketches():
        print(row)
