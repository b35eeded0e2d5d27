"""A fleet server as a real child process (`python -m tinyops.fleet.server`), for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

# Bounds on waiting for the real process, in seconds; never reached when all is well.
START_TIMEOUT_S = 60.0
POLL_S = 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m tinyops.fleet.server` as a child process."""

    def __init__(
        self, data_dir: Path, db_url: str | None, log: Path, extra_args: Sequence[str] = ()
    ) -> None:
        self.data_dir = data_dir
        self.db_url = db_url
        self.log = log
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, init: bool = False) -> str | None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "tinyops.fleet.server",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(port),
            "--evaluate-interval",
            "0.2",
            "--flush-interval",
            "0.2",
            "--update-poll-interval",
            "1",
        ]
        command += self.extra_args
        if self.db_url is not None:
            command += ["--db", self.db_url]
        if init:
            command.append("--init")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        token = None
        if init:
            assert self.proc.stdout is not None
            token = self.proc.stdout.readline().decode().strip()
            assert token.startswith("tok_"), (token, self.log.read_text())
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return token
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
        raise AssertionError(
            f"server did not answer within {START_TIMEOUT_S} s:\n{self.log.read_text()}"
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
