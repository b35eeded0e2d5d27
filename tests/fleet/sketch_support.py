"""A stub fleet server that also takes drift sketches, and monitored bundles, for tests.

`serve_with_sketches()` runs the stub fleet server of test_agent_support (FastAPI on
uvicorn, 127.0.0.1) with one more route, `POST /api/v1/device/sketches`, that records what
arrives or fails as the test scripts. `monitored_bundle` signs the tiny int8 model of
test_agent_support with the two monitoring members (features column_00..03, two classes).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# At module level: FastAPI resolves the handlers' annotations here.
from fastapi import FastAPI, Request
from test_agent_support import FleetStub, make_app, make_bundle

from tinyops.monitor.policy import MonitoringPolicy, monitoring_files
from tinyops.monitor.reference import ReferenceProfile, build_reference_profile

WINDOW_S = 600  # NOW (10:00:00) is on a window edge: windows 10:00–10:10, 10:10–10:20, ...


@dataclass
class SketchStub:
    stub: FleetStub
    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    """The device id of each received sketch (from its token)."""
    failures: list[int] = field(default_factory=list)
    """HTTP statuses the next sketch requests answer with, one per request."""


@contextlib.contextmanager
def serve_with_sketches() -> Iterator[SketchStub]:
    import uvicorn
    from fastapi.responses import JSONResponse

    stub = FleetStub()
    app: FastAPI = make_app(stub)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server_state = SketchStub(stub, f"http://127.0.0.1:{sock.getsockname()[1]}")

    @app.post("/api/v1/device/sketches")
    async def sketches(request: Request) -> Any:
        header = request.headers.get("authorization", "")
        if header.removeprefix("Bearer ") not in stub.tokens:
            return JSONResponse({"error": {"code": "unauthorized", "message": "no"}}, 401)
        if server_state.failures:
            status = server_state.failures.pop(0)
            return JSONResponse(
                {"error": {"code": "scripted", "message": "scripted", "field": "count"}}, status
            )
        server_state.received.append(await request.json())
        server_state.devices.append(stub.tokens[header.removeprefix("Bearer ")])
        return JSONResponse({"accepted": True, "window_id": len(server_state.received)}, 202)

    config = uvicorn.Config(app, log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield server_state
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()


def reference_profile() -> ReferenceProfile:
    # The tiny model's input is 4 values: 'columns' summaries, features column_00..03.
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 1.0, size=(2000, 4))
    probs = rng.dirichlet([2.0, 1.0], size=2000)
    return build_reference_profile(x, [f"column_{j:02d}" for j in range(4)], probabilities=probs)


def monitored_bundle(out: Path, version: str, *, samples: int = 0) -> Path:
    policy = MonitoringPolicy(
        window_s=WINDOW_S, summaries="columns", max_samples_per_window=samples
    )
    return make_bundle(out, version, extra=monitoring_files(reference_profile(), policy))
