"""Telemetry points stored per second, in batches of 1,000 points per request.

wrk posts telemetry batches (`POINTS` points each, every batch a new stretch of time,
round-robin over `DEVICES` devices) to the fleet server for a bounded time. The server
answers 202 only once a batch is committed (group commit: the batches that arrive during
one write share the next transaction), so every point answered is a point stored: the
rate is the points of the 202 answers divided by the run's duration. Afterwards the
server is stopped and the rows are counted in the database, which must hold every
answered point.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

from fleetbench.harness import (
    count_rows,
    fleet_server,
    postgres_database,
    prepare_fleet,
    run_wrk,
    scrape,
    write_tokens,
)

DEVICES: Final = 1_000
POINTS: Final = 1_000
DURATION_S: Final = 10
WARMUP_S: Final = 2
CONNECTIONS: Final = 32
GOAL_PER_S: Final = 200_000


def _run(label: str, db_url: str | None, root: Path) -> dict[str, Any]:
    fleet = prepare_fleet(root / label, db_url, DEVICES)
    tokens = write_tokens(fleet.device_tokens, root / f"{label}-tokens.txt")
    args = [str(tokens), str(POINTS)]
    server = fleet_server(fleet.data_dir, fleet.db_url, root / f"{label}.log").start()
    try:
        warm = run_wrk(
            server.url, "telemetry.lua", args, duration_s=WARMUP_S, connections=CONNECTIONS
        )
        cpu0 = server.cpu_seconds()
        result = run_wrk(
            server.url, "telemetry.lua", args, duration_s=DURATION_S, connections=CONNECTIONS
        )
        cpu = server.cpu_seconds() - cpu0
        written = scrape(server.url, fleet.admin_token)["tinyops_telemetry_points_total"]
    finally:
        server.stop()
    stored = count_rows(fleet.data_dir, fleet.db_url, "SELECT count(*) FROM telemetry_points")
    answered = (warm.requests + result.requests) * POINTS
    rate = result.requests * POINTS / result.duration_s
    # Requests cut off by the end of a run got no answer but may have been stored (and
    # counted after the scrape).
    ok = result.errors == 0 and answered <= written <= stored and rate >= GOAL_PER_S
    return {
        "benchmark": f"telemetry points stored on {label}, batches of {POINTS:,}, "
        f"{CONNECTIONS} connections",
        "value": round(rate),
        "unit": "points/s",
        "goal": f"≥ {GOAL_PER_S:,} /s",
        "ok": ok,
        "detail": f"{result.requests / result.duration_s:.0f} batches/s, "
        f"p99 {result.p99_ms:.0f} ms per batch, server CPU {cpu / result.duration_s:.2f} "
        f"cores, {stored:,} rows in the database for {answered:,} points answered 202",
    }


def bench_telemetry() -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyops-bench-telemetry-") as tmp:
        root = Path(tmp)
        rows.append(_run("SQLite", None, root))
        with postgres_database() as pg_url:
            if pg_url is None:
                rows.append(
                    {
                        "benchmark": "telemetry points stored on PostgreSQL",
                        "value": "skipped",
                        "unit": "",
                        "goal": f"≥ {GOAL_PER_S:,} /s",
                        "ok": False,
                        "detail": "PostgreSQL unreachable on 127.0.0.1:5432",
                    }
                )
            else:
                rows.append(_run("PostgreSQL", pg_url, root))
    return rows


if __name__ == "__main__":
    for row in bench_telemetry():
        print(row)
