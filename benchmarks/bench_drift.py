"""Drift on 100,000 and 1,000,000 rows × 25 features: tinyops against Evidently 0.7.23.

The same synthetic reference and current tables (20 numeric and 5 categorical features;
seven of them drift: a mean shift, a variance change, a scale change, a uniform shift, a
categorical shift, a binary shift and a new category) go through:

- tinyops: the reference profile of the reference table, the current table binned with it
  (what a device would send), and the drift statistics (`compute_drift`);
- Evidently: `Report([DataDriftPreset()]).run(current, reference)` on pandas DataFrames.

Each tool runs in its own subprocess, so that the peak resident set (getrusage, of that
process alone, including the tables it holds) is per tool. The time is the wall time of
the drift computation alone: data generated and libraries imported beforehand. The per-
column verdicts of the two are compared.

    python benchmarks/bench_drift.py                 # 100,000 and 1,000,000 rows
    python benchmarks/bench_drift.py --rows 100000   # one size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parent.parent

N_NUMERIC = 20
N_CATEGORICAL = 5
NUMERIC = [f"num_{i:02d}" for i in range(N_NUMERIC)]
CATEGORICAL = [f"cat_{i}" for i in range(N_CATEGORICAL)]
COLUMNS = NUMERIC + CATEGORICAL
DRIFTED = {"num_00", "num_01", "num_02", "num_03", "cat_0", "cat_2", "cat_4"}

# Evidently's speed and memory goals are relative: at least 20× faster, at most ¼ of its memory.
SPEEDUP_GOAL = 20.0
MEMORY_GOAL = 0.25


def make_tables(rows: int, seed: int = 2024) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Reference and current tables (rows × 25, float64), filled column by column."""
    rng = np.random.default_rng(seed)
    ref = np.empty((rows, len(COLUMNS)), dtype=np.float64)
    cur = np.empty((rows, len(COLUMNS)), dtype=np.float64)

    def both(j: int, reference: Any, current: Any) -> None:
        ref[:, j] = reference
        cur[:, j] = current

    both(0, rng.normal(0, 1, rows), rng.normal(0.5, 1, rows))  # mean shift, 0.5 std
    both(1, rng.normal(10, 2, rows), rng.normal(10, 3, rows))  # std × 1.5
    both(2, rng.exponential(1.0, rows), rng.exponential(1.5, rows))  # scale × 1.5
    both(3, rng.uniform(0, 1, rows), rng.uniform(0.15, 1.15, rows))  # shift by 0.15
    both(4, rng.lognormal(0, 0.5, rows), rng.lognormal(0, 0.5, rows))
    both(5, rng.normal(0, 1, rows), rng.normal(0.02, 1, rows))  # far below the threshold
    for j in range(6, N_NUMERIC):  # unchanged, of assorted shapes
        kind = j % 4
        if kind == 0:
            both(j, rng.normal(j, 1 + j / 10, rows), rng.normal(j, 1 + j / 10, rows))
        elif kind == 1:
            both(j, rng.gamma(2.0, 2.0, rows), rng.gamma(2.0, 2.0, rows))
        elif kind == 2:
            both(j, rng.beta(2.0, 5.0, rows), rng.beta(2.0, 5.0, rows))
        else:
            both(j, rng.poisson(6.0, rows), rng.poisson(6.0, rows))
    c = N_NUMERIC
    both(c, rng.choice(3, rows, p=[0.5, 0.3, 0.2]), rng.choice(3, rows, p=[0.3, 0.3, 0.4]))
    both(c + 1, rng.choice(5, rows), rng.choice(5, rows))
    both(c + 2, rng.random(rows) < 0.3, rng.random(rows) < 0.6)  # binary shift
    both(c + 3, rng.choice(8, rows), rng.choice(8, rows))
    p_new = [0.4, 0.3, 0.2, 0.1, 0.0]
    both(c + 4, rng.choice(5, rows, p=p_new), rng.choice(5, rows, p=[0.3, 0.2, 0.15, 0.1, 0.25]))
    return ref, cur


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is in KiB


def worker_tinyops(rows: int) -> dict[str, Any]:
    import scipy.special  # noqa: F401  (imported before timing, like Evidently's modules)

    from tinyops.monitor.drift import compute_drift
    from tinyops.monitor.reference import build_reference_profile

    ref, cur = make_tables(rows)
    rss_data = peak_rss_bytes()
    t0 = time.perf_counter()
    profile = build_reference_profile(ref, COLUMNS, categorical=CATEGORICAL)
    t1 = time.perf_counter()
    histograms = profile.histograms(cur)
    t2 = time.perf_counter()
    report = compute_drift(profile, histograms)
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "split": {"profile": t1 - t0, "binning": t2 - t1, "statistics": t3 - t2},
        "peak_rss": peak_rss_bytes(),
        "rss_after_data": rss_data,
        "verdicts": {r.feature: r.drifted for r in report.features},
        "methods": {r.feature: r.method for r in report.features},
        "statistics": {r.feature: r.statistic for r in report.features},
        "dataset_drift": report.dataset_drift,
    }


def worker_evidently(rows: int) -> dict[str, Any]:
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = make_tables(rows)

    def frame(a: NDArray[np.float64]) -> Any:
        data: dict[str, Any] = {c: a[:, j] for j, c in enumerate(COLUMNS)}
        for c in CATEGORICAL:
            data[c] = data[c].astype(np.int64)
        return pd.DataFrame(data)

    ref_df, cur_df = frame(ref), frame(cur)
    del ref, cur  # Evidently works on the DataFrames only
    rss_data = peak_rss_bytes()
    t0 = time.perf_counter()
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(cur_df, data_definition=definition),
        Dataset.from_pandas(ref_df, data_definition=definition),
    )
    result = snapshot.dict()
    t1 = time.perf_counter()
    verdicts = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
        for t in result["tests"]
        if t["id"] == "drift"
    }
    methods, statistics, share = {}, {}, 0.0
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            methods[config["column"]] = config["method"]
            statistics[config["column"]] = metric["value"]
        elif config["type"].endswith("DriftedColumnsCount"):
            share = metric["value"]["share"]
    return {
        "seconds": t1 - t0,
        "peak_rss": peak_rss_bytes(),
        "rss_after_data": rss_data,
        "verdicts": verdicts,
        "methods": methods,
        "statistics": statistics,
        "dataset_drift": share >= 0.5,
        "version": evidently.__version__,
    }


def run_worker(tool: str, rows: int) -> dict[str, Any]:
    """One tool on one size, in a fresh Python process; its JSON result."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", tool, "--rows", str(rows)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = wall
    return result


def evidently_available() -> str | None:
    """None when Evidently imports in this interpreter, else the reason it does not."""
    proc = subprocess.run(
        [sys.executable, "-c", "import evidently.presets"],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def bench_drift(sizes: tuple[int, ...] = (100_000, 1_000_000)) -> list[dict[str, Any]]:
    """Rows for benchmarks/run_all.py's table, one set per size."""
    missing = evidently_available()
    rows_out: list[dict[str, Any]] = []
    for rows in sizes:
        ours = run_worker("tinyops", rows)
        label = f"drift, {rows:,} rows × 25 features"
        split = ", ".join(f"{k} {v:.3f} s" for k, v in ours["split"].items())
        expected_ok = {c for c, d in ours["verdicts"].items() if d} == DRIFTED
        if missing is not None:
            print(f"Evidently unavailable ({missing}): tinyops only", file=sys.stderr)
            rows_out.append(
                {
                    "benchmark": f"{label}: tinyops time",
                    "value": round(ours["seconds"], 3),
                    "unit": "s",
                    "goal": "(no Evidently to compare with)",
                    "ok": expected_ok,
                    "detail": split,
                }
            )
            continue
        theirs = run_worker("evidently", rows)
        speedup = theirs["seconds"] / ours["seconds"]
        memory = ours["peak_rss"] / theirs["peak_rss"]
        differ = sorted(c for c in COLUMNS if ours["verdicts"][c] != theirs["verdicts"][c])
        rows_out += [
            {
                "benchmark": f"{label}: time, tinyops vs Evidently {theirs['version']}",
                "value": round(speedup, 1),
                "unit": "× faster",
                "goal": f"≥ {SPEEDUP_GOAL:.0f}× faster",
                "ok": speedup >= SPEEDUP_GOAL,
                "detail": f"tinyops {ours['seconds']:.3f} s ({split}), "
                f"Evidently {theirs['seconds']:.2f} s",
            },
            {
                "benchmark": f"{label}: peak memory (whole process, incl. the tables)",
                "value": round(memory, 3),
                "unit": "of Evidently's",
                "goal": f"≤ {MEMORY_GOAL}",
                "ok": memory <= MEMORY_GOAL,
                "detail": f"tinyops {ours['peak_rss'] / 2**20:.0f} MiB, "
                f"Evidently {theirs['peak_rss'] / 2**20:.0f} MiB",
            },
            {
                "benchmark": f"{label}: per-column verdicts equal to Evidently's",
                "value": len(COLUMNS) - len(differ),
                "unit": f"of {len(COLUMNS)}",
                "goal": "all, and the 7 drifted columns found",
                "ok": not differ
                and expected_ok
                and ours["dataset_drift"] == theirs["dataset_drift"],
                "detail": f"differ: {differ}"
                if differ
                else "drifted: " + ", ".join(sorted(c for c, d in ours["verdicts"].items() if d)),
            },
        ]
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="table size (repeatable)")
    parser.add_argument("--worker", choices=["tinyops", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the raw worker results")
    args = parser.parse_args()
    sizes = tuple(args.rows or (100_000, 1_000_000))
    if args.worker:
        work = worker_tinyops if args.worker == "tinyops" else worker_evidently
        print(json.dumps(work(sizes[0])))
        return
    if args.json:
        for rows in sizes:
            for tool in ("tinyops", "evidently"):
                print(json.dumps({"tool": tool, "rows": rows, **run_worker(tool, rows)}))
        return
    print("| benchmark | value | goal | met |")
    print("| --- | --- | --- | --- |")
    for r in bench_drift(sizes):
        shown = f"{r['value']} {r['unit']}" + (f" ({r['detail']})" if r.get("detail") else "")
        print(f"| {r['benchmark']} | {shown} | {r['goal']} | {'yes' if r['ok'] else 'NO'} |")


if __name__ == "__main__":
    main()
