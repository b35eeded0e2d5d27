"""What every fleet benchmark needs: server processes, wrk, bulk enrollment, scratch databases.

Servers run as child processes exactly as a user runs them; the benchmark process only
prepares their database beforehand (through `tinyops.fleet.store.Store`, which is much
faster than enrolling 100,000 devices over HTTP) and reads their resident memory and CPU
time from /proc. Every wait here is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

BENCHMARKS: Final = Path(__file__).resolve().parent.parent
LUA: Final = Path(__file__).resolve().parent / "lua"
# Bounds on waiting for a child process, in seconds; never reached when all is well.
START_TIMEOUT_S: Final = 120.0
STOP_TIMEOUT_S: Final = 60.0
POLL_S: Final = 0.05
PG_HOST: Final = "127.0.0.1"
PG_PORT: Final = 5432
PG_USER: Final = "postgres"
# Devices enrolled per store transaction when preparing a fleet.
ENROLL_CHUNK: Final = 10_000
HARDWARE: Final = "nano33ble"
TAGS: Final = {"group": "bench"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A server child process, ready once `ready_path` answers 200."""

    def __init__(self, args: Sequence[str], log: Path, port: int, ready_path: str) -> None:
        self.args = list(args)
        self.log = log
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(BENCHMARKS), os.environ.get("PYTHONPATH")])
            ),
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{' '.join(self.args)} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(POLL_S)
        self.stop()
        raise SystemExit(f"{' '.join(self.args)} did not answer within {START_TIMEOUT_S} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS)."""
        return _status_kib(self.pid, "VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        """Largest resident set size so far (VmHWM)."""
        return _status_kib(self.pid, "VmHWM") * 1024

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        """SIGTERM (a clean shutdown: buffered writes are flushed); seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise SystemExit(f"{self.args[0]} did not stop within {STOP_TIMEOUT_S} s") from None
        return time.monotonic() - started

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


def fleet_server(
    data_dir: Path, db_url: str | None, log: Path, extra: Sequence[str] = ()
) -> Process:
    """`python -m tinyops.fleet.server` (what `tinyops serve` runs) on a free port."""
    port = free_port()
    args = [sys.executable, "-m", "tinyops.fleet.server", "--data-dir", str(data_dir)]
    args += ["--port", str(port), *extra]
    if db_url is not None:
        args += ["--db", db_url]
    return Process(args, log, port, "/healthz")


def bare_server(log: Path) -> Process:
    """The bare FastAPI endpoint under the same uvicorn configuration."""
    port = free_port()
    return Process([sys.executable, "-m", "fleetbench.bare_app", str(port)], log, port, "/healthz")


# --- wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int
    """Non-2xx/3xx answers plus socket errors and timeouts."""
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.duration_s


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "wrk is not installed: `apt-get install wrk` (Debian package; `make bench` installs "
            "it when run as root)"
        )
    return path


def run_wrk(
    url: str,
    script: str,
    script_args: Sequence[str],
    *,
    duration_s: int,
    connections: int,
    threads: int = 1,
) -> WrkResult:
    """Run wrk for `duration_s` seconds with a Lua script of lua/; its `done` prints JSON."""
    args = [wrk_path(), "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s"]
    args += ["--timeout", "10s", "-s", str(LUA / script), url, "--", *script_args]
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = sum(data[k] for k in ("status", "connect", "read", "write", "timeout"))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


# --- preparing a fleet -----------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedFleet:
    data_dir: Path
    db_url: str | None
    admin_token: str
    device_tokens: list[str]


def prepare_fleet(
    data_dir: Path,
    db_url: str | None,
    devices: int,
    installed: tuple[str, str] | None = ("kws", "1.0.0"),
) -> PreparedFleet:
    """A new fleet database with an admin token and `devices` enrolled devices.

    Devices are enrolled through `Store.enroll_devices` (the store's bulk enrollment, the
    same rows and audit records as enrolling over HTTP). They state `installed`, which
    the benchmarks' check-ins report again, so check-ins are steady state.
    """
    from tinyops.fleet.server import FleetSettings, init_fleet
    from tinyops.fleet.store import Installed, NewDevice, Store
    from tinyops.security.audit import SERVER_ACTOR
    from tinyops.security.tokens import new_token

    settings = FleetSettings(data_dir=data_dir, db_url=db_url)
    admin = init_fleet(settings)
    assert admin is not None
    store = Store(settings.database_url(), data_dir)
    tokens: list[str] = []
    try:
        _etk, etk_hash = new_token("etk_")
        now = datetime.now(UTC)
        store.create_enrollment_token("bench", etk_hash, None, None, SERVER_ACTOR, now)
        release = None if installed is None else Installed(*installed)
        for start in range(0, devices, ENROLL_CHUNK):
            batch = []
            for i in range(start, min(devices, start + ENROLL_CHUNK)):
                token, digest = new_token("dev_")
                tokens.append(token)
                batch.append(NewDevice(f"bench-{i:07d}", HARDWARE, digest, TAGS, release))
            store.enroll_devices(enrollment_token_hash=etk_hash, devices=batch, now=now)
    finally:
        store.close()
    return PreparedFleet(data_dir, db_url, admin, tokens)


def write_tokens(tokens: Sequence[str], path: Path) -> Path:
    path.write_text("\n".join(tokens) + "\n")
    return path


def count_rows(data_dir: Path, db_url: str | None, sql: str) -> int:
    """One integer from the fleet database (read after the server stopped)."""
    from sqlalchemy import create_engine, text

    from tinyops.fleet.server import FleetSettings
    from tinyops.fleet.store.engine import normalize_url

    url = FleetSettings(data_dir=data_dir, db_url=db_url).database_url()
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def scrape(url: str, admin_token: str) -> dict[str, float]:
    """The server's unlabelled Prometheus samples (`name value`)."""
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    r.raise_for_status()
    samples = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            samples[name] = float(value)
    return samples


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A scratch PostgreSQL database on 127.0.0.1:5432 (dropped after), None if unreachable."""
    import psycopg

    def admin() -> Any:
        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True,
            connect_timeout=3,
        )  # fmt: skip

    try:
        connection = admin()
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT}: {exc}", file=sys.stderr)
        yield None
        return
    name = f"tinyops_bench_{uuid.uuid4().hex[:12]}"
    with connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with admin() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
