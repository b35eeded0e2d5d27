"""A real Prometheus scrapes a real fleet server's /metrics with an API token and runs the
exported rules: the target is up, a device's temperature is queryable, and the alert the
device's telemetry breaks fires in Prometheus, as it does in the server's own alert loop
(GET /api/v1/alerts, `tinyops alerts list`). Needs the Debian package `prometheus`; skips
without it, fails under CI=true."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from fleet_process import Server

from tinyops.monitor.alerts.promexport import export_yaml
from tinyops.monitor.alerts.rules import parse_rules

# Bounds on waiting for the real processes, in seconds; never reached when all is well.
WAIT_S = 90.0
POLL_S = 0.2
T = TypeVar("T")

RULES = """
groups:
  - name: hardware
    rules:
      - name: DeviceHot
        metric: device_temperature_celsius
        condition: "> 70"
        severity: critical
        annotations: {summary: "{{ $labels.device }} at {{ $value }} °C"}
      - name: DeviceOffline
        metric: device_last_seen_seconds
        condition: "> 900"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], log: Path | None = None) -> T:
    """Poll `probe` until it returns something; fail naming `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            result, last = None, exc
        if result is not None:
            return result
        time.sleep(POLL_S)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})\n{tail}")


@pytest.fixture
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        reason = "prometheus not found (Debian package prometheus: apt-get install prometheus)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " (CI=true: this must not be skipped)")
        pytest.skip(reason)
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES)
    srv = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        ["--alert-rules", str(rules), "--alert-interval", "0.5"],
    )
    token = srv.start(init=True)
    assert token is not None
    try:
        yield srv, token
    finally:
        srv.stop()


def test_prometheus_scrapes_metrics_and_fires_the_exported_rule(
    tmp_path: Path, prometheus_binary: str, server: tuple[Server, str]
) -> None:
    srv, token = server
    admin = {"Authorization": f"Bearer {token}"}
    r = httpx.post(
        f"{srv.url}/api/v1/enrollment-tokens", json={"name": "lab"}, headers=admin, timeout=10
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{srv.url}/api/v1/device/enroll",
        json={"enrollment_token": r.json()["token"], "device_id": "hot-1", "hardware": "rpi4"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    device = {"Authorization": f"Bearer {r.json()['device_token']}"}
    now = datetime.now(UTC).isoformat()
    r = httpx.post(
        f"{srv.url}/api/v1/device/telemetry",
        json={"points": [{"t": now, "metric": "temperature_c", "value": 91.5}]},
        headers=device,
        timeout=10,
    )
    assert r.status_code == 202, r.text

    # Prometheus: the exported rules, /metrics scraped every second with the token.
    (tmp_path / "rules.yml").write_text(export_yaml(parse_rules(RULES)))
    credentials = tmp_path / "token"
    credentials.write_text(token)
    credentials.chmod(0o600)
    target = srv.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "tinyops",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
                "authorization": {"type": "Bearer", "credentials_file": str(credentials)},
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        prometheus = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def target_up() -> dict[str, Any] | None:
            assert prometheus.poll() is None, log.read_text()[-3000:]
            targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            up = [t for t in targets if t["health"] == "up"]
            return up[0] if up else None

        up = wait_for("the tinyops target to be up", target_up, log)
        assert up["labels"]["job"] == "tinyops"
        assert up["scrapeUrl"] == f"{srv.url}/metrics"

        def temperature() -> dict[str, Any] | None:
            query = {"query": 'tinyops_device_temperature_celsius{device="hot-1"}'}
            result = httpx.get(f"{api}/query", params=query, timeout=5).json()["data"]["result"]
            return result[0] if result else None

        sample = wait_for("the device's temperature in Prometheus", temperature, log)
        assert sample["metric"]["hardware"] == "rpi4"
        assert sample["metric"]["release"] == "none"
        assert float(sample["value"][1]) == 91.5

        def firing() -> list[dict[str, Any]] | None:
            alerts = httpx.get(f"{api}/alerts", timeout=5).json()["data"]["alerts"]
            hot = [a for a in alerts if a["state"] == "firing"]
            return hot or None

        (alert,) = wait_for("DeviceHot to fire in Prometheus", firing, log)
        assert alert["labels"]["alertname"] == "DeviceHot"
        assert alert["labels"]["device"] == "hot-1"
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["summary"] == "hot-1 at 91.5 °C"
        assert float(alert["value"]) == 91.5
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(timeout=30)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()

    # The server's own evaluation of the same rules agrees, on the API and in the CLI.
    def server_firing() -> list[dict[str, Any]] | None:
        r = httpx.get(f"{srv.url}/api/v1/alerts?state=firing", headers=admin, timeout=5)
        return r.json()["alerts"] or None

    (own,) = wait_for("DeviceHot to fire in the server", server_firing, srv.log)
    assert own["labels"]["device"] == "hot-1"
    assert own["summary"] == "hot-1 at 91.5 °C"
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinyops.cli.main",
            "alerts",
            "list",
            "--json",
            "--server",
            srv.url,
            "--token",
            token,
            "--state",
            "firing",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert [(a["rule"], a["labels"]["device"]) for a in listed] == [("DeviceHot", "hot-1")]
