"""Server memory (resident set) with 100,000 enrolled devices, and with none.

The devices are enrolled through the store (bulk enrollment, before the server starts);
the server then loads every credential into its in-memory directory, as it does at any
start. A sample of the devices checks in (wrk, a few seconds), the check-in buffer is
written, and the server's RSS (VmRSS) and peak RSS (VmHWM) are read from /proc. The
same is done for an empty fleet in the same run: the difference, divided by the device
count, is what one device costs the server.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Final

from fleetbench.harness import fleet_server, prepare_fleet, run_wrk, write_tokens

DEVICES: Final = 100_000
SAMPLE: Final = 1_000
LOAD_S: Final = 3
GOAL_MIB: Final = 300
MIB: Final = 2**20
# The server writes buffered check-ins every second: wait for one write after the load.
SETTLE_S: Final = 1.5


def _measure(root: Path, devices: int) -> dict[str, Any]:
    started = time.perf_counter()
    fleet = prepare_fleet(root / f"fleet-{devices}", None, devices)
    enroll_s = time.perf_counter() - started
    sample = fleet.device_tokens[:: max(1, devices // SAMPLE)][:SAMPLE] or ["dev_none"]
    tokens = write_tokens(sample, root / f"sample-{devices}.txt")
    started = time.perf_counter()
    server = fleet_server(fleet.data_dir, None, root / f"server-{devices}.log").start()
    try:
        ready_s = time.perf_counter() - started
        result = run_wrk(
            server.url, "checkin.lua", [str(tokens)], duration_s=LOAD_S, connections=16
        )
        time.sleep(SETTLE_S)
        rss, peak = server.rss_bytes(), server.peak_rss_bytes()
    finally:
        server.stop()
    return {
        "rss": rss,
        "peak": peak,
        "enroll_s": enroll_s,
        "ready_s": ready_s,
        "checkins": result.requests,
        "errors": result.errors if devices else 0,
    }


def bench_memory() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="tinyops-bench-memory-") as tmp:
        root = Path(tmp)
        empty = _measure(root, 0)
        full = _measure(root, DEVICES)
    per_device = (full["rss"] - empty["rss"]) / DEVICES
    return [
        {
            "benchmark": f"server RSS with {DEVICES:,} enrolled devices (after check-ins "
            f"from {SAMPLE:,} of them)",
            "value": round(full["rss"] / MIB),
            "unit": "MiB",
            "goal": f"≤ {GOAL_MIB} MiB",
            "ok": full["rss"] <= GOAL_MIB * MIB and full["errors"] == 0,
            "detail": f"peak {full['peak'] / MIB:.0f} MiB; empty fleet {empty['rss'] / MIB:.0f} "
            f"MiB, so {per_device:.0f} bytes per device; start-up with {DEVICES:,} devices "
            f"{full['ready_s']:.1f} s, bulk enrollment {full['enroll_s']:.1f} s",
        }
    ]


if __name__ == "__main__":
    for row in bench_memory():
        print(row)
