"""Shared pieces of the agent tests: a tiny real int8 model, real signed bundles, keys, and a
small real fleet server (FastAPI on uvicorn, 127.0.0.1) that follows docs/device-protocol.md.

The model is one int8 FULLY_CONNECTED layer written with the TFLite flatbuffer schema, so
every golden value below is computed by hand. The tests in this file check the helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here
from numpy.typing import NDArray

from tinyops.bundle.bundle import write_bundle
from tinyops.bundle.golden import GoldenVectors
from tinyops.bundle.manifest import ModelInfo, TensorSpec
from tinyops.store.atomic import sha256_bytes

# Fixed seeds: keys (and so key ids and signatures) are the same on every run.
RELEASE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
SERVER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(50, 82)))
HARDWARE = "rpi4"
NOW = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)

# y = W x + b with int8 x (scale 0.5, zero point 0), int8 W (scale 0.25), int32 b (scale
# 0.5 * 0.25 = 0.125) and int8 y (scale 1.0, zero point 0).
WEIGHTS = [[1, 2, 3, 4], [-4, -3, -2, -1]]
BIAS = [0, 7]
# Inputs whose accumulators (in units of 0.125) are at least 0.25 away from a rounding tie:
# LiteRT rounds the requantization twice and TFLM once, so near a tie they may differ by 1.
GOLDEN_INPUTS = np.array([[[10, -10, 20, -20]], [[5, 9, -2, 6]], [[-7, 3, 8, 2]]], np.int8)
# Row 0: 0.125 * (10-20+60-80) = -3.75 -> -4;  0.125 * (5+18-6+24) = 5.125 -> 5;
#        0.125 * (-7+6+24+8) = 3.875 -> 4.
# Row 1: 0.125 * (-40+30-40+20 + 7) = -2.875 -> -3;  0.125 * (-20-27+4-6 + 7) = -5.25 -> -5;
#        0.125 * (28-9-16-2 + 7) = 1.0 -> 1.
GOLDEN_OUTPUTS = np.array([[[-4, -3]], [[5, -5]], [[4, 1]]], np.int8)


def tiny_fc_model(weights: list[list[int]] = WEIGHTS, bias: list[int] = BIAS) -> bytes:
    """A .tflite with one int8 FULLY_CONNECTED layer, input (1, n_in), output (1, n_out)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    w = np.asarray(weights, np.int8)
    b = np.asarray(bias, np.int32)
    n_out, n_in = w.shape

    def buffer(data: bytes | None = None) -> Any:
        buf = s.BufferT()
        if data is not None:
            buf.data = list(data)
        return buf

    def quant(scale: float, zero_point: int) -> Any:
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [scale], [zero_point]
        return q

    def tensor(name: str, shape: list[int], kind: int, buf: int, q: Any) -> Any:
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name, shape, kind, buf, q
        return t

    graph = s.SubGraphT()
    graph.name = "main"
    graph.tensors = [
        tensor("input", [1, n_in], s.TensorType.INT8, 1, quant(0.5, 0)),
        tensor("weights", [n_out, n_in], s.TensorType.INT8, 2, quant(0.25, 0)),
        tensor("bias", [n_out], s.TensorType.INT32, 3, quant(0.125, 0)),
        tensor("output", [1, n_out], s.TensorType.INT8, 4, quant(1.0, 0)),
    ]
    graph.inputs, graph.outputs = [0], [3]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    graph.operators = [op]
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 4
    model = s.ModelT()
    model.version, model.description = 3, "tinyops agent test model"
    model.buffers = [buffer(), buffer(), buffer(w.tobytes()), buffer(b.tobytes()), buffer()]
    model.subgraphs, model.operatorCodes = [graph], [code]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def litert_outputs(model: bytes, inputs: NDArray[np.int8]) -> NDArray[np.int8]:
    """Run each input (K, *shape) through LiteRT's reference kernels; (K, *out_shape)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=model,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    rows = []
    for x in inputs:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        rows.append(np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])))
    return np.stack(rows).astype(np.int8)


def golden_for(model: bytes, inputs: NDArray[np.int8], tolerance: int = 1) -> GoldenVectors:
    return GoldenVectors(inputs, litert_outputs(model, inputs), (0.5, 0), (1.0, 0), tolerance)


def make_bundle(
    out_dir: Path,
    version: str,
    *,
    name: str = "digits",
    target: str = HARDWARE,
    key: Ed25519PrivateKey = RELEASE_KEY,
    model: bytes | None = None,
    golden: GoldenVectors | None = None,
    created_at: datetime = NOW - timedelta(days=1),
    expires_at: datetime | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A real signed .tinybundle around the tiny model, golden vectors computed by LiteRT."""
    model = model if model is not None else tiny_fc_model()
    golden = golden if golden is not None else golden_for(model, GOLDEN_INPUTS)
    files = {"model.tflite": model, **golden.to_files(), **(extra or {})}
    info = ModelInfo(
        input=TensorSpec(shape=(1, 4), scale=0.5, zero_point=0),
        output=TensorSpec(shape=(1, 2), scale=1.0, zero_point=0),
        ops=["FULLY_CONNECTED"],
    )
    return write_bundle(
        out_dir,
        name=name,
        version=version,
        target=target,
        files=files,
        private_key=key,
        model=info,
        created_at=created_at,
        expires_at=expires_at or NOW + timedelta(days=365),
    )


def rezip(source: Path, dest: Path, replace: dict[str, bytes | None]) -> Path:
    """Copy a bundle's entries to `dest`, replacing (bytes) or dropping (None) some."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            if info.filename in replace:
                data = replace[info.filename]
                if data is None:
                    continue
                out.writestr(info, data)
            else:
                out.writestr(info, src.read(info))
    return dest


def offer_for(path: Path, release_id: int = 1, **overrides: Any) -> dict[str, Any]:
    """The release object of a check-in answer announcing the bundle at `path`."""
    data = path.read_bytes()
    name, version, target = _parts(path)
    offer = {
        "name": name,
        "version": version,
        "target": target,
        "url": f"/api/v1/device/artifacts/{release_id}",
        "size": len(data),
        "sha256": sha256_bytes(data),
    }
    return {**offer, **overrides}


def _parts(path: Path) -> tuple[str, str, str]:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    return manifest["name"], manifest["version"], manifest["target"]


# ---- a small real fleet server ---------------------------------------------------------

ALLOWED_NEXT = {
    None: {"downloading", "failure"},
    "downloading": {"downloading", "downloaded", "failure"},
    "downloaded": {"installing", "failure"},
    "installing": {"trial", "failure"},
    "trial": {"success", "failure"},
    # Set by the server (never reported) when it aborts a deployment that reached a device.
    "rollback-pending": {"rolled-back", "failure"},
}


@dataclass
class FleetStub:
    """State of the test server; tests script answers and read what devices sent."""

    enrollment_token: str = "etk_" + "e" * 43
    tokens: dict[str, str] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[int, bytes] = field(default_factory=dict)
    checkins: list[dict[str, Any]] = field(default_factory=list)
    enrollments: list[dict[str, Any]] = field(default_factory=list)
    reports: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    statuses: dict[tuple[str, int], str] = field(default_factory=dict)
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    commands: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    results: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    ranges: list[str | None] = field(default_factory=list)
    drop_after: list[int] = field(default_factory=list)
    """Byte counts after which the next downloads break the connection, one per download."""
    failures: list[int | None] = field(default_factory=list)
    """HTTP error statuses the next check-ins answer with, one per check-in (None: normal)."""
    ignore_range: bool = False
    server_key: Ed25519PrivateKey = SERVER_KEY

    def abort(self, device_id: str, deployment_id: int) -> None:
        """What the server does to a device the aborted deployment reached."""
        self.statuses[(device_id, deployment_id)] = "rollback-pending"

    def statuses_of(self, deployment_id: int) -> list[str]:
        return [body["status"] for dep, body in self.reports if dep == deployment_id]


def _error(status: int, code: str, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        {"error": {"code": code, "message": message, "field": None}}, status_code=status
    )


def make_app(stub: FleetStub) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from tinyops.security.rollback import public_key_to_b64

    app = FastAPI()

    def device(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        return stub.tokens.get(header.removeprefix("Bearer "))

    @app.post("/api/v1/device/enroll")
    async def enroll(request: Request) -> Any:
        body = await request.json()
        stub.enrollments.append(body)
        if body.get("enrollment_token") != stub.enrollment_token:
            return _error(401, "unauthorized", "enrollment_token is not valid")
        token = f"dev_{len(stub.tokens):043d}"
        for old, device_id in list(stub.tokens.items()):
            if device_id == body["device_id"]:
                del stub.tokens[old]
        stub.tokens[token] = body["device_id"]
        return JSONResponse(
            {
                "device_id": body["device_id"],
                "device_token": token,
                "poll_interval_s": 60,
                "server_key": public_key_to_b64(stub.server_key.public_key()),
            },
            status_code=201,
        )

    @app.post("/api/v1/device/checkin")
    async def checkin(request: Request) -> Any:
        device_id = device(request)
        if device_id is None:
            return _error(401, "unauthorized", "device token missing or not valid")
        failure = stub.failures.pop(0) if stub.failures else None
        if failure is not None:
            return _error(failure, "unavailable", "scripted failure")
        stub.checkins.append(await request.json())
        return stub.answers.get(device_id, {"action": "none", "poll_interval_s": 60})

    @app.get("/api/v1/device/artifacts/{release_id}")
    async def artifact(release_id: int, request: Request) -> Any:
        if device(request) is None:
            return _error(401, "unauthorized", "device token missing or not valid")
        data = stub.artifacts[release_id]
        header = request.headers.get("range")
        stub.ranges.append(header)
        start, status, extra = 0, 200, {}
        if header and not stub.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", header)
            if match is None or int(match[1]) >= len(data):
                return Response(status_code=416, headers={"Content-Range": f"bytes */{len(data)}"})
            start, status = int(match[1]), 206
            extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        cut = stub.drop_after.pop(0) if stub.drop_after else None

        async def stream() -> AsyncIterator[bytes]:
            if cut is None:
                yield body
                return
            yield body[:cut]
            await asyncio.sleep(0.05)
            raise ConnectionAbortedError("scripted connection drop")

        headers = {"Content-Length": str(len(body)), "ETag": f'"{sha256_bytes(data)}"', **extra}
        return StreamingResponse(
            stream(), status_code=status, headers=headers, media_type="application/octet-stream"
        )

    @app.post("/api/v1/device/deployments/{deployment_id}/status")
    async def status(deployment_id: int, request: Request) -> Any:
        device_id = device(request)
        if device_id is None:
            return _error(401, "unauthorized", "device token missing or not valid")
        body = await request.json()
        current = stub.statuses.get((device_id, deployment_id))
        allowed = ALLOWED_NEXT.get(current, set())
        if body["status"] not in allowed:
            return _error(409, "invalid_transition", f"{current} -> {body['status']}")
        stub.statuses[(device_id, deployment_id)] = body["status"]
        stub.reports.append((deployment_id, body))
        return Response(status_code=204)

    @app.post("/api/v1/device/telemetry")
    async def telemetry(request: Request) -> Any:
        if device(request) is None:
            return _error(401, "unauthorized", "device token missing or not valid")
        body = await request.json()
        stub.telemetry.append(body)
        return JSONResponse(
            {"accepted": len(body["points"]), "logs": len(body["logs"])}, status_code=202
        )

    @app.get("/api/v1/device/commands")
    async def commands(request: Request) -> Any:
        device_id = device(request)
        if device_id is None:
            return _error(401, "unauthorized", "device token missing or not valid")
        pending = stub.commands.pop(device_id, [])
        return {"commands": pending}

    @app.post("/api/v1/device/commands/{command_id}/result")
    async def result(command_id: int, request: Request) -> Any:
        if device(request) is None:
            return _error(401, "unauthorized", "device token missing or not valid")
        stub.results.append((command_id, await request.json()))
        return Response(status_code=204)

    return app


@dataclass
class LiveServer:
    url: str
    stub: FleetStub


@contextlib.contextmanager
def serve_stub() -> Iterator[LiveServer]:
    """The stub fleet server on a free port of 127.0.0.1, in a thread, while in the block."""
    import uvicorn

    stub = FleetStub()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(stub), log_level="critical", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", stub)
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        sock.close()


# ---- tests of the helpers ---------------------------------------------------------------


def test_tiny_model_matches_hand_computed_outputs() -> None:
    outputs = litert_outputs(tiny_fc_model(), GOLDEN_INPUTS)
    np.testing.assert_array_equal(outputs, GOLDEN_OUTPUTS)


def test_bundle_helper_writes_a_verifiable_bundle(tmp_path: Path) -> None:
    from tinyops.bundle.bundle import verify_bundle

    path = make_bundle(tmp_path, "1.0.0")
    verified = verify_bundle(path, [RELEASE_KEY.public_key()], now=NOW)
    assert (verified.manifest.name, verified.manifest.version) == ("digits", "1.0.0")
    golden = GoldenVectors.from_files(verified.files)
    np.testing.assert_array_equal(golden.outputs, GOLDEN_OUTPUTS)
    assert offer_for(path)["sha256"] == sha256_bytes(path.read_bytes())
