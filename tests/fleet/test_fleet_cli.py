"""The fleet as a user drives it: `tinyops serve` and the management commands, each a real
subprocess, plus `tinyops fleet simulate` with a handful of devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

TINYOPS = [sys.executable, "-m", "tinyops.cli.main"]


def tinyops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TINYOPS, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [*TINYOPS, "serve", "--data-dir", str(tmp_path / "fleet"), "--port", str(port),
         "--poll-interval", "1"],
        stdout=subprocess.PIPE, stderr=log, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "first admin API token" in first, (first, (tmp_path / "serve.log").read_text())
        token = first.strip().split()[-1]
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "serve.log"
            ).read_text()
            time.sleep(0.05)
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_release_deploy_and_simulate_from_the_command_line(
    served: tuple[str, str],
    build_bundle: Callable[..., Path],
    release_key: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    url, token = served
    env = {"TINYOPS_SERVER": url, "TINYOPS_TOKEN": token}
    pub = tmp_path / "release.pub"
    pub.write_bytes(
        release_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    r = tinyops("fleet", "trust-key", str(pub), env=env)
    assert r.returncode == 0 and "trusted key" in r.stdout, r.stderr

    bundle = build_bundle("1.0.0")
    r = tinyops("release", "upload", str(bundle), env=env)
    assert r.returncode == 0, r.stderr
    assert "kws 1.0.0 for nano33ble" in r.stdout

    tampered = tmp_path / bundle.name
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    r = tinyops("release", "upload", str(tampered), env=env)
    assert r.returncode != 0 and "422" in r.stderr and "Traceback" not in r.stderr

    etk = tinyops("fleet", "enroll-token", "--name", "lab", env=env)
    assert etk.returncode == 0, etk.stderr
    enroll_token = etk.stdout.strip()
    assert enroll_token.startswith("etk_")

    # No device yet: a deployment has nobody to go to.
    r = tinyops("deploy", "create", "kws", "1.0.0", "--group", "lab", env=env)
    assert r.returncode != 0 and "422" in r.stderr, r.stderr

    sim_args = [
        "fleet", "simulate", "--enroll-token", enroll_token, "--trusted-key", str(pub),
        "--devices", "8", "--group", "lab", "--poll-interval", "1", "--json",
    ]  # fmt: skip
    # Power the devices on until they have all enrolled (deploy needs them), then deploy.
    r = tinyops(*sim_args, "--duration", "4", env=env)
    assert r.returncode != 0 and "did not finish within 4 s" in r.stderr
    r = tinyops(
        "deploy", "create", "kws", "1.0.0", "--group", "lab", "--phases", "25%,100%",
        "--max-failure", "10%", "--json", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    deployment = json.loads(r.stdout)["id"]

    r = tinyops(*sim_args, "--deployment", str(deployment), "--duration", "120", env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["versions"] == {"1.0.0": 8}
    assert summary["last_status"] == {"success": 8}

    r = tinyops("deploy", "status", str(deployment), "--json", env=env)
    status = json.loads(r.stdout)
    assert status["status"] == "succeeded"
    assert [p["devices"] for p in status["phases"]] == [2, 6]
    r = tinyops("deploy", "status", str(deployment), env=env)
    assert f"deployment {deployment} — succeeded" in r.stdout

    r = tinyops("deploy", "pause", str(deployment), env=env)
    assert r.returncode != 0 and "409" in r.stderr  # a finished deployment cannot pause
    r = tinyops("deploy", "status", "999", env=env)
    assert r.returncode != 0 and "404" in r.stderr

    r = tinyops("deploy", "create", "kws", "1.0.0", "--phases", "50%,40%", env=env)
    assert r.returncode != 0 and "phases[1].percent" in r.stderr
