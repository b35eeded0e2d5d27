"""Device check-ins per second and p99 latency: bare FastAPI, SQLite, PostgreSQL.

The same wrk load (keep-alive connections from 127.0.0.1, each request the next device's
check-in with its own token, a 2 s warm-up then a measured run) goes first to the bare
FastAPI endpoint, then to the fleet server on SQLite and on PostgreSQL, each with
`DEVICES` enrolled devices whose check-ins report what they have installed (steady
state: an idle fleet polling). After each run the server is stopped and the database
must hold a `last_seen` for every device the load reached: the write-behind buffer did
its job.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

from fleetbench.harness import (
    PreparedFleet,
    WrkResult,
    bare_server,
    count_rows,
    fleet_server,
    postgres_database,
    prepare_fleet,
    run_wrk,
    scrape,
    write_tokens,
)

DEVICES: Final = 10_000
DURATION_S: Final = 10
WARMUP_S: Final = 2
CONNECTIONS: Final = 64
GOAL_PER_S: Final = 8_000
GOAL_P99_MS: Final = 50.0


def _load(url: str, tokens: Path) -> WrkResult:
    run_wrk(url, "checkin.lua", [str(tokens)], duration_s=WARMUP_S, connections=CONNECTIONS)
    return run_wrk(
        url, "checkin.lua", [str(tokens)], duration_s=DURATION_S, connections=CONNECTIONS
    )


def _fleet_run(fleet: PreparedFleet, tokens: Path, log: Path) -> dict[str, Any]:
    server = fleet_server(fleet.data_dir, fleet.db_url, log).start()
    try:
        cpu0 = server.cpu_seconds()
        result = _load(server.url, tokens)
        cpu = server.cpu_seconds() - cpu0
        answered = scrape(server.url, fleet.admin_token)["tinyops_device_checkins_total"]
    finally:
        server.stop()
    seen = count_rows(
        fleet.data_dir, fleet.db_url, "SELECT count(*) FROM devices WHERE last_seen IS NOT NULL"
    )
    return {"wrk": result, "server_cpu_s": cpu, "answered": answered, "last_seen": seen}


def bench_checkins() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tinyops-bench-checkin-") as tmp:
        root = Path(tmp)
        with bare_server(root / "bare.log") as bare:
            # The bare endpoint ignores the body and the token; the requests are the same.
            dummy = write_tokens(["dev_bare"], root / "bare-tokens.txt")
            ceiling = _load(bare.url, dummy)
        rows.append(
            {
                "benchmark": f"bare FastAPI endpoint, requests/s ({CONNECTIONS} connections)",
                "value": round(ceiling.per_second),
                "unit": "req/s",
                "goal": "ceiling (peer)",
                "ok": ceiling.errors == 0,
                "detail": f"p99 {ceiling.p99_ms:.1f} ms",
            }
        )
        runs: list[tuple[str, str | None, Path]] = [("SQLite", None, root / "sqlite")]
        with postgres_database() as pg_url:
            if pg_url is not None:
                runs.append(("PostgreSQL", pg_url, root / "postgresql"))
            else:
                rows.append(
                    {
                        "benchmark": "check-ins on PostgreSQL",
                        "value": "skipped",
                        "unit": "",
                        "goal": f"≥ {GOAL_PER_S} /s",
                        "ok": False,
                        "detail": "PostgreSQL unreachable on 127.0.0.1:5432",
                    }
                )
            for label, db_url, data_dir in runs:
                fleet = prepare_fleet(data_dir, db_url, DEVICES)
                tokens = write_tokens(fleet.device_tokens, root / f"{label}-tokens.txt")
                run = _fleet_run(fleet, tokens, root / f"{label}.log")
                result: WrkResult = run["wrk"]
                rate = result.per_second
                ok = (
                    result.errors == 0
                    and rate >= GOAL_PER_S
                    and result.p99_ms <= GOAL_P99_MS
                    and run["last_seen"] == min(DEVICES, run["answered"])
                )
                rows.append(
                    {
                        "benchmark": f"check-ins on {label}, {DEVICES:,} devices, "
                        f"{CONNECTIONS} connections",
                        "value": round(rate),
                        "unit": "/s",
                        "goal": f"≥ {GOAL_PER_S} /s, p99 ≤ {GOAL_P99_MS:g} ms",
                        "ok": ok,
                        "detail": f"p99 {result.p99_ms:.1f} ms, p50 {result.p50_ms:.2f} ms, "
                        f"{rate / ceiling.per_second:.2f}× bare FastAPI, "
                        f"{result.errors} errors, server CPU "
                        f"{run['server_cpu_s'] / result.duration_s:.2f} cores, "
                        f"last_seen written for {run['last_seen']:,} devices",
                        "ratio_to_bare": round(rate / ceiling.per_second, 3),
                        "p99_ms": round(result.p99_ms, 2),
                    }
                )
    return rows


if __name__ == "__main__":
    for row in bench_checkins():
        print(row)
