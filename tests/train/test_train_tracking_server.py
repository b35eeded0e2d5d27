"""Tracking against a real `mlflow server` over HTTP (any tracking URI works, not only SQLite)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tinyops.train.tracking import RunTracker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the server to answer its health endpoint
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer /health within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_run_params_metrics_dataset_and_artifacts_over_http(
    mlflow_server: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    tracker = RunTracker(mlflow_server, experiment="remote", project_dir=tmp_path)
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.array([0, 1, 0, 1, 0, 1])
    artifact = tmp_path / "int8.tflite"
    artifact.write_bytes(b"TFL3 stand-in bytes for an artifact upload")
    with tracker.start(run_name="over-http") as run:
        run.log_params({"model.template": "mlp"})
        run.log_metrics({"loss": 0.5}, step=0)
        run.log_metrics({"loss": 0.25}, step=1)
        run.log_dataset("ab" * 32, {"modality": "table"}, x, y)
        run.log_artifact(artifact, "tflite")
        run_id = run.run_id
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    got = client.get_run(run_id)
    assert got.data.params == {"model.template": "mlp"}
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [0.5, 0.25]
    assert got.inputs.dataset_inputs[0].dataset.digest == ("ab" * 32)[:36]
    listed = [a.path for a in client.list_artifacts(run_id, "tflite")]
    assert listed == ["tflite/int8.tflite"]
    downloaded = Path(client.download_artifacts(run_id, "tflite/int8.tflite", str(tmp_path)))
    assert downloaded.read_bytes() == artifact.read_bytes()
