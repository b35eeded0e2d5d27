"""`tinyops device inventory|exec|logs` as a user runs them: each a real subprocess, against a
real server process, with real device agents (`tinyops fleet simulate`, the same Agent code
a Linux device runs) answering the remote-debug commands."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server

TINYOPS = [sys.executable, "-m", "tinyops.cli.main"]
DEVICES = 3
# Bounds on waiting for real processes; never reached when all is well.
DEADLINE_S = 90.0


@dataclass
class Fleet:
    url: str
    env: dict[str, str]
    http: httpx.Client
    admin: dict[str, str]


def tinyops(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TINYOPS, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250", **fleet.env},
        timeout=300,
        check=False,
    )


def wait_for(what: str, check: object, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S} s\n{log.read_text()}"
        time.sleep(0.1)


@pytest.fixture
def fleet(tmp_path: Path, release_key: Ed25519PrivateKey) -> Iterator[Fleet]:
    """A server (devices poll every 0.5 s) and 3 simulated devices tagged group=lab."""
    log = tmp_path / "server.log"
    server = Server(tmp_path / "fleet", None, log, ["--poll-interval", "0.5"])
    token = server.start(init=True)
    assert token is not None
    admin = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(base_url=server.url, timeout=30)
    pub = tmp_path / "release.pub"
    pub.write_bytes(
        release_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    etk = http.post("/api/v1/enrollment-tokens", json={"name": "lab"}, headers=admin)
    assert etk.status_code == 201, etk.text
    sim_log = open(tmp_path / "simulate.log", "w")  # noqa: SIM115 - closed in teardown
    sim = subprocess.Popen(
        [*TINYOPS, "fleet", "simulate", "--server", server.url, "--token", token,
         "--enroll-token", etk.json()["token"], "--trusted-key", str(pub),
         "--devices", str(DEVICES), "--group", "lab", "--poll-interval", "0.5",
         "--duration", "600", "--json"],
        stdout=sim_log, stderr=sim_log, env={**os.environ},
    )  # fmt: skip
    fleet = Fleet(server.url, {"TINYOPS_SERVER": server.url, "TINYOPS_TOKEN": token}, http, admin)
    try:

        def enrolled() -> bool:
            r = http.get("/api/v1/devices", headers=admin)
            return len(r.json()["devices"]) == DEVICES

        wait_for("simulated devices enrolled", enrolled, tmp_path / "simulate.log")
        yield fleet
    finally:
        sim.terminate()
        sim.wait(timeout=30)
        sim_log.close()
        http.close()
        server.stop()


def test_inventory_lists_devices_with_filters(fleet: Fleet) -> None:
    r = tinyops(fleet, "device", "inventory", "--json")
    assert r.returncode == 0, r.stderr
    devices = json.loads(r.stdout)
    assert [d["id"] for d in devices] == [f"sim-{i:06d}" for i in range(DEVICES)]
    assert {d["hardware"] for d in devices} == {"nano33ble"}
    assert all(d["tags"] == {"group": "lab"} for d in devices)

    r = tinyops(fleet, "device", "inventory", "--tag", "group:lab", "--status", "active")
    assert r.returncode == 0, r.stderr
    assert f"devices ({DEVICES})" in r.stdout
    for i in range(DEVICES):
        assert f"sim-{i:06d}" in r.stdout
    assert "nano33ble" in r.stdout and "active" in r.stdout

    r = tinyops(fleet, "device", "inventory", "--tag", "group:elsewhere", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []
    r = tinyops(fleet, "device", "inventory", "--hardware", "esp32-s3", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []

    r = tinyops(fleet, "device", "inventory", "--tag", "nocolon")
    assert r.returncode == 2 and "--tag" in r.stderr and "Traceback" not in r.stderr
    r = tinyops(fleet, "device", "inventory", "--status", "sleepy")
    assert r.returncode == 1 and "422" in r.stderr and "status" in r.stderr


def test_exec_waits_for_the_device_result(fleet: Fleet) -> None:
    device = "sim-000001"
    r = tinyops(fleet, "device", "exec", device, "report_inventory", "--wait", "--json")
    assert r.returncode == 0, r.stderr
    command = json.loads(r.stdout)
    assert command["status"] == "done" and command["ok"] is True
    assert command["output"]["hardware"] == "nano33ble"

    r = tinyops(
        fleet, "device", "exec", device, "fetch_logs", "--arg", "lines=3", "--wait", "--json"
    )
    assert r.returncode == 0, r.stderr
    command = json.loads(r.stdout)
    assert command["args"] == {"lines": 3}  # typed: a JSON number, not the text "3"
    lines = command["output"]["lines"]
    assert 1 <= len(lines) <= 3
    # The device logged the command it ran before this one.
    assert any("report_inventory" in line["message"] for line in lines), lines

    # The device refuses a bad argument: the CLI shows why and exits 1.
    r = tinyops(fleet, "device", "exec", device, "set_log_level", "--arg", "level=loud", "--wait")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "failed on sim-000001" in r.stderr and "level" in r.stderr

    # Without --wait the command is only queued; it is recorded on the server.
    r = tinyops(fleet, "device", "exec", device, "run_self_test")
    assert r.returncode == 0 and "queued for sim-000001" in r.stdout, r.stderr
    listed = fleet.http.get(f"/api/v1/devices/{device}/commands", headers=fleet.admin)
    kinds = [c["kind"] for c in listed.json()["commands"]]
    assert kinds[0] == "run_self_test" and "report_inventory" in kinds

    r = tinyops(fleet, "device", "exec", device, "selfdestruct")
    assert r.returncode == 2 and "KIND" in r.stderr
    r = tinyops(fleet, "device", "exec", device, "reboot", "--arg", "=x")
    assert r.returncode == 2 and "--arg" in r.stderr
    r = tinyops(fleet, "device", "exec", "no-such-device", "reboot")
    assert r.returncode == 1 and "404" in r.stderr and "no-such-device" in r.stderr


def _telemetry_device(fleet: Fleet) -> dict[str, str]:
    etk = fleet.http.post("/api/v1/enrollment-tokens", json={"name": "x"}, headers=fleet.admin)
    r = fleet.http.post(
        "/api/v1/device/enroll",
        json={"enrollment_token": etk.json()["token"], "device_id": "probe", "hardware": "rpi4"},
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['device_token']}"}


def _send(fleet: Fleet, device: dict[str, str], lines: list[tuple[datetime, str, str]]) -> None:
    body = {
        "logs": [
            {"t": t.isoformat().replace("+00:00", "Z"), "level": lv, "message": m}
            for t, lv, m in lines
        ]
    }
    r = fleet.http.post("/api/v1/device/telemetry", json=body, headers=device)
    assert r.status_code == 202, r.text


def test_logs_filters_and_follow(fleet: Fleet, tmp_path: Path) -> None:
    probe = _telemetry_device(fleet)
    now = datetime.now(UTC).replace(microsecond=0)
    _send(
        fleet,
        probe,
        [
            (now - timedelta(hours=3), "error", "old disk error"),
            (now - timedelta(minutes=10), "info", "boot ok"),
            (now - timedelta(minutes=5), "warning", "Battery low"),
            (now - timedelta(minutes=1), "debug", "tick"),
        ],
    )
    r = tinyops(fleet, "device", "logs", "probe")
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert [line.split(maxsplit=2)[2] for line in out] == [
        "old disk error",
        "boot ok",
        "Battery low",
        "tick",
    ]
    assert out[2].split()[1] == "WARNING"

    def messages(*args: str) -> list[str]:
        r = tinyops(fleet, "device", "logs", "probe", "--json", *args)
        assert r.returncode == 0, r.stderr
        return [json.loads(line)["message"] for line in r.stdout.splitlines()]

    assert messages("--level", "warning") == ["old disk error", "Battery low"]
    assert messages("--since", "1h") == ["boot ok", "Battery low", "tick"]
    assert messages("--since", "1h", "--level", "info") == ["boot ok", "Battery low"]
    assert messages("--grep", "BATTERY") == ["Battery low"]
    assert messages("--until", "2h") == ["old disk error"]
    iso = (now - timedelta(minutes=6)).isoformat().replace("+00:00", "Z")
    assert messages("--since", iso) == ["Battery low", "tick"]
    assert messages("--limit", "2") == ["Battery low", "tick"]  # the newest two, in order

    r = tinyops(fleet, "device", "logs", "probe", "--level", "loud")
    assert r.returncode == 2 and "--level" in r.stderr
    r = tinyops(fleet, "device", "logs", "probe", "--since", "last tuesday")
    assert r.returncode == 2 and "--since" in r.stderr
    r = tinyops(fleet, "device", "logs", "ghost")
    assert r.returncode == 1 and "404" in r.stderr and "ghost" in r.stderr

    # --follow: the existing lines, then each new line once, as it is stored.
    follower = subprocess.Popen(
        [*TINYOPS, "device", "logs", "probe", "--follow", "--interval", "0.2", "--level",
         "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **fleet.env},
    )  # fmt: skip
    reader = LineReader(follower)
    try:
        got = reader.take(3)
        assert [g.split(maxsplit=2)[2] for g in got] == ["old disk error", "boot ok", "Battery low"]
        _send(fleet, probe, [(now, "debug", "hidden"), (now, "error", "sensor gone")])
        _send(fleet, probe, [(now, "info", "sensor back")])
        got = reader.take(2)
        assert [g.split(maxsplit=2)[2] for g in got] == ["sensor gone", "sensor back"]
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    # Nothing else arrived after the two lines: no repeats, and the debug line stayed out.
    assert reader.rest() == []


class LineReader:
    """The lines a child writes to stdout, collected by a thread (a pipe's buffer would
    hide lines from select())."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.proc = proc
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def take(self, count: int) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"only {got} within {DEADLINE_S} s") from None
            assert line is not None, ("follower exited", got, self.proc.wait())
            got.append(line)
        return got

    def rest(self) -> list[str]:
        """Every line up to the child's end (call after it was stopped)."""
        rest: list[str] = []
        while (line := self.lines.get(timeout=DEADLINE_S)) is not None:
            rest.append(line)
        return rest
