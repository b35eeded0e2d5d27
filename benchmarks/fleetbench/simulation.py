"""The fleet simulator driving devices through a 4-phase rollout: wall time and CPU.

A real server process (SQLite) and, in this process, `FleetSimulator`: every device is
a real agent (enrollment, polling, download, signature and hash checks, A/B install, the
bundle's golden-vector self-test on LiteRT) talking HTTP to the server. The release is
the MLPerf Tiny keyword-spotting model (int8, read in place from
../shared/fixtures/mlperf-tiny) with two golden vectors, signed by a fixed test key, as
in the test suite. The deployment has four phases (1 %, 10 %, 50 %, 100 %) with the
default success threshold, and must end `succeeded` with every device on the release.

Measured per fleet size: enrollment time (devices power on spread over one poll
interval), the rollout's wall time from creating the deployment until it is settled,
and the CPU seconds the simulator process and the server process used for it. Both share
the machine's two cores, so the wall time is bounded by their sum as much as by the poll
intervals.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np

from fleetbench.harness import BENCHMARKS, fleet_server

FIXTURES: Final = BENCHMARKS.parent.parent / "shared" / "fixtures" / "mlperf-tiny"
KWS_MODEL: Final = "kws_ref_model.tflite"
# Fleet sizes of `make bench`, smallest first: the scaling shows in the rows. Larger
# fleets run separately (`python -m fleetbench.simulation 3000`); 10,000 is out of reach
# of the simulator on two cores (docs/benchmarks.md says why).
SIZES: Final = (1_000, 2_000)
# Check-ins per second the whole fleet makes while idle. Each device polls every
# devices / POLL_RATE seconds (6.7 s for 1,000 devices, 13.3 s for 2,000), so that the
# simulator, one Python process, keeps up (each poll is two requests: check-in and
# commands); updating devices poll 4 times as often. A phase opens when the previous one
# has succeeded, and its devices notice at their next poll: the poll interval, not the
# work, sets much of the wall time.
POLL_RATE: Final = 150.0
# HTTP connections of the simulator to the server (httpx's pool scans its queue of
# waiting requests on every request: a small pool with thousands waiting is quadratic).
CONNECTIONS: Final = 512
PHASES: Final = [{"percent": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}]
# Bounds, in seconds, on enrolling and on the rollout (never reached when all is well).
ENROLL_TIMEOUT_S: Final = 300.0
ROLLOUT_TIMEOUT_S: Final = 600.0
GOLDEN_COUNT: Final = 2
RELEASE_KEY_SEED: Final = bytes(range(32, 64))


def build_kws_bundle(out_dir: Path, version: str) -> Path:
    """A signed .tinybundle of the KWS model with golden vectors computed by LiteRT."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinyops.bundle.bundle import write_bundle
    from tinyops.bundle.golden import GoldenVectors
    from tinyops.bundle.manifest import TensorSpec

    model = (FIXTURES / KWS_MODEL).read_bytes()
    interpreter = Interpreter(
        model_content=model,
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
    created = datetime(2026, 1, 1, tzinfo=UTC)
    return write_bundle(
        out_dir,
        name="kws",
        version=version,
        target="nano33ble",
        files={"model.tflite": model, **golden.to_files()},
        private_key=Ed25519PrivateKey.from_private_bytes(RELEASE_KEY_SEED),
        model={
            "input": TensorSpec.from_details(in_detail).model_dump(),
            "output": TensorSpec.from_details(out_detail).model_dump(),
            "ops": [],
            "variant": "int8",
        },
        measured={"arena_bytes": 24_000, "latency_ms": 12.0},
        created_at=created,
        expires_at=created + timedelta(days=3650),
    )


class _Admin:
    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        with self.lock:
            r = self.client.request(method, path, **kwargs)
        if r.status_code >= 400:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text}")
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.text

    def enrolled(self) -> int:
        """Devices the server counts (its Prometheus gauge, one GROUP BY)."""
        text = self("GET", "/metrics")
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("tinyops_devices{")
        )


def _rollout(devices: int, bundle: Path, root: Path, poll_rate: float) -> dict[str, Any]:
    poll_s = round(devices / poll_rate, 1)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinyops.fleet.simulator import FleetSimulator, deployment_settled

    key = Ed25519PrivateKey.from_private_bytes(RELEASE_KEY_SEED).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    extra = ["--init", "--poll-interval", str(poll_s), "--update-poll-interval", str(poll_s / 4)]
    server = fleet_server(root / f"fleet-{devices}", None, root / f"server-{devices}.log", extra)
    log = root / f"server-{devices}.log"
    server.start()
    try:
        token = log.read_text().split("tok_", 1)[1].split()[0]
        token = "tok_" + token
        admin = _Admin(server.url, token)
        admin("POST", "/api/v1/trusted-keys", json={"name": "ci", "public_key_pem": pem})
        admin("POST", "/api/v1/releases", content=bundle.read_bytes())
        etk = admin("POST", "/api/v1/enrollment-tokens", json={"name": "sim"})["token"]
        sim = FleetSimulator(
            server.url,
            etk,
            devices,
            hardware="nano33ble",
            trusted_keys=[key],
            tags={"group": "bench"},
            seed=7,
            poll_interval_s=poll_s,
            prefix="sim",
            max_connections=CONNECTIONS,
        )
        result = asyncio.run(_drive(sim, admin, server, token, devices, deployment_settled))
    finally:
        server.stop()
    return {**result, "poll_s": poll_s}


async def _drive(
    sim: Any, admin: _Admin, server: Any, token: str, devices: int, settled: Any
) -> dict[str, Any]:
    async def api(method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(admin, method, path, **kwargs)

    async def enrolled(_sim: Any) -> bool:
        return await asyncio.to_thread(admin.enrolled) == devices

    started = time.monotonic()
    async with sim:
        await sim.wait(enrolled, timeout_s=ENROLL_TIMEOUT_S, check_every_s=2.0)
        enroll_s = time.monotonic() - started
        sim_cpu0, server_cpu0, t0 = time.process_time(), server.cpu_seconds(), time.monotonic()
        body = {
            "release": {"name": "kws", "version": "1.0.0", "target": "nano33ble"},
            "selector": {"tags": {"group": "bench"}},
            "phases": PHASES,
        }
        deployment = (await api("POST", "/api/v1/deployments", json=body))["id"]
        await sim.wait(
            settled(server.url, token, deployment), timeout_s=ROLLOUT_TIMEOUT_S, check_every_s=1.0
        )
        wall = time.monotonic() - t0
        sim_cpu = time.process_time() - sim_cpu0
        server_cpu = server.cpu_seconds() - server_cpu0
        status = await api("GET", f"/api/v1/deployments/{deployment}")
        summary = sim.summary()
    return {
        "devices": devices,
        "enroll_s": enroll_s,
        "wall_s": wall,
        "sim_cpu_s": sim_cpu,
        "server_cpu_s": server_cpu,
        "status": status["status"],
        "phase_devices": [p["devices"] for p in status["phases"]],
        "versions": summary.versions,
    }


def bench_simulation(
    sizes: tuple[int, ...] = SIZES, poll_rate: float = POLL_RATE
) -> list[dict[str, Any]]:
    if not (FIXTURES / KWS_MODEL).is_file():
        print(
            f"skipping the simulator benchmark: {FIXTURES / KWS_MODEL} not found", file=sys.stderr
        )
        return []
    # Thousands of agents: their log lines stay in each device's own log.
    logging.getLogger("tinyops.fleet.agent").setLevel(logging.CRITICAL)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyops-bench-sim-") as tmp:
        root = Path(tmp)
        bundle = build_kws_bundle(root / "bundles", "1.0.0")
        for devices in sizes:
            run = _rollout(devices, bundle, root, poll_rate)
            ok = run["status"] == "succeeded" and run["versions"] == {"1.0.0": devices}
            rows.append(
                {
                    "benchmark": f"simulator: {devices:,} devices through a 4-phase rollout "
                    "(1/10/50/100 %)",
                    "value": round(run["wall_s"], 1),
                    "unit": "s",
                    "goal": "measured (wall time and CPU)",
                    "ok": ok,
                    "detail": f"simulator CPU {run['sim_cpu_s']:.0f} s, server CPU "
                    f"{run['server_cpu_s']:.0f} s, phases {run['phase_devices']}, "
                    f"enrollment {run['enroll_s']:.0f} s, poll {run['poll_s']:g} s (updating "
                    f"{run['poll_s'] / 4:g} s), deployment {run['status']}",
                    "devices": devices,
                    "sim_cpu_s": round(run["sim_cpu_s"], 1),
                    "server_cpu_s": round(run["server_cpu_s"], 1),
                }
            )
            print(f"simulation, {devices} devices: {rows[-1]['detail']}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the fleet simulator benchmark alone")
    parser.add_argument("sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--poll-rate", type=float, default=POLL_RATE, help="idle polls/s")
    args = parser.parse_args()
    for row in bench_simulation(tuple(args.sizes), args.poll_rate):
        print(row, flush=True)
