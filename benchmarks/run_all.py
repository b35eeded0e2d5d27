"""Benchmarks for the figures the issues name. Run with `make bench`.

Each benchmark runs the real command in a subprocess on this machine and reports wall
time and peak memory (the largest resident set of any child process, from getrusage).
Results are printed as a Markdown table and written to benchmarks/results/latest.json;
docs/benchmarks.md records them with the machine and the command.

The fleet benchmarks (issue 3) live in `fleetbench/` (see its docstring): check-ins and
telemetry under wrk load, server memory with 100,000 devices, the fleet simulator. They
need `wrk` (Debian package; `make bench` installs it when run as root), PostgreSQL on
127.0.0.1:5432 for the PostgreSQL rows, and ../shared/fixtures for the simulator.

    python benchmarks/run_all.py [--only foundation|drift|alerts|compile|fleet|checkin|telemetry|
                                          sketches|memory|simulation]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_alerts import bench_alerts
from bench_drift import bench_drift  # benchmarks/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent
TINYOPS = Path(sys.executable).parent / "tinyops"
DIGITS = REPO / "examples" / "digits"


def run_timed(args: list[str], cwd: Path) -> tuple[float, int, subprocess.CompletedProcess[str]]:
    """Wall seconds, peak RSS in bytes (of the child), and the completed process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    # ru_maxrss of children is a high-water mark over all children so far: only a rise
    # is attributable to this child, so benchmarks run the heaviest command first.
    return wall, max(peak_kb, before) * 1024, proc


def median_wall(args: list[str], runs: int) -> float:
    """Median wall seconds of `runs` runs of a command from the repository root."""
    return sorted(run_timed(args, REPO)[0] for _ in range(runs))[runs // 2]


def bench_demo() -> list[dict[str, Any]]:
    """`make demo` after install, on a fresh copy of examples/digits: the cold pipeline, then
    the fleet and monitoring half (monitor_demo.py: server, 20 simulated devices, drift
    alerts, retraining into a canary); warm pipeline re-runs with no change in between."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyops-bench-") as tmp:
        project = Path(tmp) / "digits"
        project.mkdir()
        for name in ("tinyops.yaml", "alerts.yaml", "monitor_demo.py"):
            shutil.copy(DIGITS / name, project / name)
        wall, _peak, proc = run_timed([str(TINYOPS), "run", ".", "--json"], project)
        record = json.loads(proc.stdout)
        stages = {s["name"]: s for s in record["stages"]}
        warm = []
        for _ in range(3):
            w, _peak, proc2 = run_timed([str(TINYOPS), "run", ".", "--json"], project)
            again = json.loads(proc2.stdout)
            assert all(s["cache_hit"] for s in again["stages"]), "warm run was not all cached"
            warm.append(w)
        monitor = [sys.executable, "monitor_demo.py", "--project", ".", "--work", f"{tmp}/work"]
        fleet_wall, peak, _proc = run_timed(monitor, project)
        total = wall + fleet_wall
        rows += [
            {
                "benchmark": "make demo, cold: pipeline + fleet and monitoring half",
                "value": round(total, 2),
                "unit": "s",
                "goal": "≤ 90 s",
                "ok": total <= 90,
                "detail": f"pipeline {wall:.1f} s, fleet half {fleet_wall:.1f} s",
            },
            {
                "benchmark": "demo pipeline alone, cold (digits, fresh project)",
                "value": round(wall, 2),
                "unit": "s",
                "goal": "",
                "ok": True,
            },
            {
                "benchmark": "make demo, peak memory (largest RSS of any process)",
                "value": round(peak / 2**20),
                "unit": "MiB",
                "goal": "≤ 2048 MiB",
                "ok": peak <= 2 * 2**30,
            },
            {
                "benchmark": "demo pipeline, warm re-run with no change (median of 3)",
                "value": round(sorted(warm)[1], 2),
                "unit": "s",
                "goal": "≤ 3 s",
                "ok": sorted(warm)[1] <= 3,
            },
        ]
        float_acc = stages["train"]["output"]["metrics"]["test_accuracy"]
        tflm_acc = stages["device-validate"]["output"]["accuracy"]
        rows.append(
            {
                "benchmark": "int8 accuracy on TFLM minus float accuracy (digits test split)",
                "value": round((tflm_acc - float_acc) * 100, 2),
                "unit": "points",
                "goal": "within ±1 point",
                "ok": abs(tflm_acc - float_acc) <= 0.01,
                "detail": f"float {float_acc:.4f}, int8 on TFLM {tflm_acc:.4f}",
            }
        )
        stage_times = {s["name"]: s["duration_s"] for s in record["stages"]}
        rows.append(
            {
                "benchmark": "cold run, seconds per stage",
                "value": stage_times,
                "unit": "s",
                "goal": "",
                "ok": True,
            }
        )
    return rows


def bench_import_reference() -> list[dict[str, Any]]:
    """How fast this machine is at what dominates the demo's fixed costs (a Python process
    importing TensorFlow with Keras 3): figures from different days compare through it."""
    med = median_wall([sys.executable, "-c", "import tensorflow"], runs=3)
    return [
        {
            "benchmark": "machine reference: `python -c 'import tensorflow'` (median of 3)",
            "value": round(med, 2),
            "unit": "s",
            "goal": "",
            "ok": True,
        }
    ]


def bench_help() -> list[dict[str, Any]]:
    med = median_wall([str(TINYOPS), "--help"], runs=5)
    return [
        {
            "benchmark": "`tinyops --help` start-up (median of 5)",
            "value": round(med, 3),
            "unit": "s",
            "goal": "well under 1 s",
            "ok": med < 1,
        }
    ]


PUBLISHED_TFLM_L4R5ZI_MS = {  # MLPerf Tiny v1.0, TFLM reference, NUCLEO-L4R5ZI @ 120 MHz
    "kws_ref_model.tflite": 181.9,
    "vww_96_int8.tflite": 600.6,
    "pretrainedResnet_quant.tflite": 704.0,
}


def bench_cost_model() -> list[dict[str, Any]]:
    """Estimated vs published latency on the MLPerf Tiny models (needs ../shared/fixtures)."""
    from tinyops.targets.catalog import load_board
    from tinyops.targets.profile import profile_tflite

    fixtures = REPO.parent / "shared" / "fixtures" / "mlperf-tiny"
    if not fixtures.is_dir():
        print(f"skipping cost-model comparison: {fixtures} not found", file=sys.stderr)
        return []
    board = load_board("nucleo-l4r5zi")
    rows = []
    for name, published in PUBLISHED_TFLM_L4R5ZI_MS.items():
        prof = profile_tflite((fixtures / name).read_bytes(), board)
        err = prof.latency_ms / published - 1
        rows.append(
            {
                "benchmark": f"latency estimate, {name} on nucleo-l4r5zi",
                "value": round(prof.latency_ms, 1),
                "unit": "ms",
                "goal": f"published {published} ms",
                "ok": abs(err) <= 0.15,
                "detail": f"{err:+.1%}",
            }
        )
    return rows


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def bench_compiler(inferences: int = 100) -> list[dict[str, Any]]:
    """The compiler on the five MLPerf Tiny models (benchmarks/bench_compile.py, which
    prints its full tables to stderr here): RAM share of TFLM's arena, flash against the
    .tflite, Cortex-M4 instructions, bit-exactness on the host and the emulated M4."""
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        out = Path(tmp) / "compile.json"
        proc = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "bench_compile.py"),
             "--inferences", str(inferences), "--json", str(out)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(proc.stdout, file=sys.stderr)
        if not out.exists():
            raise SystemExit(f"bench_compile.py failed ({proc.returncode}):\n{proc.stderr}")
        models = json.loads(out.read_text())["models"]
    rows: list[dict[str, Any]] = []
    for m in models:
        exact = m["mismatched_bytes"] == 0 and not m.get("qemu_mismatched_bytes")
        rows.append(
            {
                "benchmark": f"compiled {m['model']}: peak RAM vs TFLM arena",
                "value": round(100 * m["ram_vs_tflm"], 1),
                "unit": "%",
                "goal": "≤ 50 %",
                "ok": m["ram_vs_tflm"] <= 0.5 and exact,
            }
        )
        if m["elf_flash_bytes"] is not None:
            rows.append(
                {
                    "benchmark": f"compiled {m['model']}: flash (M4 ELF) vs .tflite + 8 KB",
                    "value": m["elf_flash_bytes"],
                    "unit": "bytes",
                    "goal": f"≤ {m['tflite_bytes'] + 8192:,}",
                    "ok": m["elf_flash_bytes"] <= m["tflite_bytes"] + 8192,
                }
            )
        if m.get("m4_instructions_o2") is not None:
            kws = m["model"].startswith("kws")
            rows.append(
                {
                    "benchmark": f"compiled {m['model']}: Cortex-M4 instructions (-O2)",
                    "value": m["m4_instructions_o2"],
                    "unit": "instructions",
                    "goal": "≤ 9.0 M" if kws else "measured",
                    "ok": m["m4_instructions_o2"] <= 9_000_000 if kws else exact,
                }
            )
    return rows


FLEET = ("checkin", "telemetry", "sketches", "memory", "simulation")


def fleet_benches() -> dict[str, Any]:
    """The fleet benchmarks by name (imported on demand)."""
    from fleetbench.checkin import bench_checkins
    from fleetbench.memory import bench_memory
    from fleetbench.simulation import bench_simulation
    from fleetbench.sketches import bench_sketches
    from fleetbench.telemetry import bench_telemetry

    return {
        "checkin": bench_checkins,
        "telemetry": bench_telemetry,
        "sketches": bench_sketches,
        "memory": bench_memory,
        "simulation": bench_simulation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmarks for the figures the issues name.")
    parser.add_argument(
        "--only",
        choices=("foundation", "drift", "alerts", "compile", "fleet", *FLEET),
        default=None,
    )
    only = parser.parse_args().only
    rows: list[dict[str, Any]] = []
    # The demo first: its peak memory is read from the high-water mark of all children.
    if only in (None, "foundation"):
        rows += bench_demo() + bench_import_reference() + bench_help() + bench_cost_model()
    if only in (None, "drift"):
        rows += bench_drift()
    if only in (None, "alerts"):
        rows += bench_alerts()
    if only in (None, "compile"):
        rows += bench_compiler()
    chosen = FLEET if only in (None, "fleet") else (only,) if only in FLEET else ()
    if chosen:
        benches = fleet_benches()
        for name in chosen:
            started = time.perf_counter()
            rows += benches[name]()
            print(f"fleet {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results = {"machine": machine(), "rows": rows}
    out = REPO / "benchmarks" / "results" / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}")
    print("| benchmark | value | goal | met |")
    print("| --- | --- | --- | --- |")
    for r in results["rows"]:
        value = r["value"]
        shown = (
            ", ".join(f"{k} {v:.2f}" for k, v in value.items())
            if isinstance(value, dict)
            else f"{value} {r['unit']}"
        )
        if r.get("detail"):
            shown += f" ({r['detail']})"
        print(f"| {r['benchmark']} | {shown} | {r['goal']} | {'yes' if r['ok'] else 'NO'} |")


if __name__ == "__main__":
    main()
