"""The Grafana provisioning folder: dashboards valid in Grafana's dashboard JSON model, every
query valid PromQL (`promtool check rules`) naming metrics a real server exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tinyops.monitor.alerts.catalogue import METRICS
from tinyops.monitor.grafana import (
    DATASOURCE_UID,
    KNOWN_METRICS,
    SCHEMA_VERSION,
    concrete_expr,
    dashboards,
    metric_names,
    panel_targets,
    write_provisioning,
)

# Panel types of Grafana's core plugins that these dashboards may use.
CORE_PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "gauge"}
# Grafana's built-in variables an expression may use.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}
DASHBOARD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "uid": str,
    "title": str,
    "tags": list,
    "timezone": str,
    "editable": bool,
    "schemaVersion": int,
    "version": int,
    "time": dict,
    "templating": dict,
    "annotations": dict,
    "panels": list,
    "refresh": str,
}
START_TIMEOUT_S = 60.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `tinyops grafana export` writes (the real CLI, as a subprocess)."""
    folder = tmp_path_factory.mktemp("grafana") / "provisioning"
    r = subprocess.run(
        [sys.executable, "-m", "tinyops.cli.main", "grafana", "export", str(folder),
         "--prometheus-url", "http://prometheus:9090"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("wrote ") == 5
    return folder


def load_dashboards(folder: Path) -> dict[str, dict[str, Any]]:
    files = sorted((folder / "dashboards" / "json").glob("*.json"))
    return {f.stem: json.loads(f.read_text()) for f in files}


def test_provisioning_files_resolve_to_each_other(provisioned: Path) -> None:
    ds = yaml.safe_load((provisioned / "datasources" / "prometheus.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == DATASOURCE_UID
    assert source["url"] == "http://prometheus:9090" and source["access"] == "proxy"

    providers = yaml.safe_load((provisioned / "dashboards" / "provider.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    json_dir = Path(provider["options"]["path"])
    assert json_dir == (provisioned / "dashboards" / "json").resolve()
    assert sorted(p.name for p in json_dir.iterdir()) == [
        "fleet-overview.json",
        "hardware-health.json",
        "model-quality.json",
    ]
    # What is on disk is what the code builds.
    assert load_dashboards(provisioned) == json.loads(json.dumps(dashboards()))


def _overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_dashboards_follow_grafanas_json_model(provisioned: Path) -> None:
    boards = load_dashboards(provisioned)
    assert {b["uid"] for b in boards.values()} == {
        "tinyops-fleet",
        "tinyops-quality",
        "tinyops-hardware",
    }
    for stem, board in boards.items():
        for name, kind in DASHBOARD_FIELDS.items():
            assert isinstance(board.get(name), kind), (stem, name)
        assert board["schemaVersion"] == SCHEMA_VERSION
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"]), board["uid"]
        assert "id" not in board  # Grafana assigns database ids; provisioning must not.
        assert board["time"].keys() >= {"from", "to"}
        variables = {v["name"]: v for v in board["templating"]["list"]}
        for variable in variables.values():
            assert variable["type"] == "query"
            assert variable["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
            assert metric_names(variable["definition"]) <= KNOWN_METRICS

        panels = board["panels"]
        ids = [p["id"] for p in panels]
        assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), stem
        for panel in panels:
            where = f"{stem} panel {panel['id']} {panel.get('title')!r}"
            assert panel["type"] in CORE_PANEL_TYPES, where
            assert isinstance(panel["title"], str) and panel["title"], where
            grid = panel["gridPos"]
            assert set(grid) == {"h", "w", "x", "y"}, where
            assert all(isinstance(v, int) and v >= 0 for v in grid.values()), where
            assert grid["h"] >= 1 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, where
            if panel["type"] == "row":
                assert grid["w"] == 24 and grid["h"] == 1 and panel["panels"] == [], where
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, where
            assert panel["fieldConfig"].keys() == {"defaults", "overrides"}, where
            steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            assert steps[0]["value"] is None, where  # Grafana's base step
            targets = panel["targets"]
            assert targets, where
            refs = [t["refId"] for t in targets]
            assert len(set(refs)) == len(refs), where
            for target in targets:
                assert target["datasource"]["uid"] == DATASOURCE_UID, where
                assert isinstance(target["expr"], str) and target["expr"].strip(), where
                used = set(re.findall(r"\$\{?(\w+)\}?", target["expr"]))
                assert used <= set(variables) | BUILTIN_VARIABLES, (where, used)
        # No two panels share a cell of the grid.
        for i, a in enumerate(panels):
            for b in panels[i + 1 :]:
                assert not _overlaps(a["gridPos"], b["gridPos"]), (stem, a["id"], b["id"])


def test_queries_name_known_metrics_with_their_labels() -> None:
    used: set[str] = set()
    for board in dashboards().values():
        for panel, target in panel_targets(board):
            names = metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= KNOWN_METRICS, (panel["title"], names - KNOWN_METRICS)
            used |= names
            # Label matchers of a monitor metric use only the labels its series carry.
            for metric, matchers in re.findall(r"(tinyops_\w+)\{([^}]*)\}", target["expr"]):
                name = metric.removeprefix("tinyops_")
                if name in METRICS:
                    labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
                    assert labels <= set(METRICS[name].labels), (panel["title"], labels)
    # Every dashboard family shows up: the three cover hardware, drift and the server.
    for expected in (
        "tinyops_devices",
        "tinyops_device_checkins_total",
        "tinyops_http_request_duration_seconds_bucket",
        "tinyops_device_temperature_celsius",
        "tinyops_device_latency_budget_seconds",
        "tinyops_dataset_drift_share",
        "tinyops_feature_drifted",
        "tinyops_model_accuracy",
    ):
        assert expected in used, expected


def test_concrete_expr_replaces_grafana_variables() -> None:
    assert (
        concrete_expr('rate(x{d=~"$device",r=~"${release}"}[$__rate_interval])')
        == 'rate(x{d=~".*",r=~".*"}[5m])'
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server_metrics(tmp_path: Path) -> Iterator[str]:
    """The /metrics exposition of a real fleet server process (a fresh SQLite fleet)."""
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tinyops.fleet.server", "--data-dir", str(tmp_path / "fleet"),
             "--port", str(port), "--init"],
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        token = proc.stdout.readline().decode().strip()
        assert token.startswith("tok_"), log.read_text()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        yield r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_every_queried_metric_is_exposed_by_the_server(server_metrics: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    exposed: set[str] = set()
    for family in text_string_to_metric_families(server_metrics):
        exposed.add(family.name)
        exposed |= {s.name for s in family.samples}
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        exposed |= {family.name + s for s in suffixes.get(family.type, [])}
    used = {
        name
        for board in dashboards().values()
        for _, target in panel_targets(board)
        for name in metric_names(target["expr"])
    }
    assert used <= exposed, sorted(used - exposed)


def test_every_expr_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool not found (Debian package prometheus)"
        if in_ci():
            pytest.fail(reason + " (CI=true: this must not be skipped)")
        pytest.skip(reason)
    rules = []
    for stem, board in dashboards().items():
        for i, (_, target) in enumerate(panel_targets(board)):
            rules.append(
                {
                    "record": f"tinyops:{stem.replace('-', '_')}:{i}",
                    "expr": concrete_expr(target["expr"]),
                }
            )
    path = tmp_path / "panels.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana-panels", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout + r.stderr

    # And promtool does refuse a broken expression: the check above can fail.
    bad = tmp_path / "bad.rules.yml"
    bad.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"record": "x:y", "expr": "sum by (a (b)"}]}]}
        )
    )
    r = subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0


def test_write_provisioning_with_a_container_path(tmp_path: Path) -> None:
    written = write_provisioning(
        tmp_path / "p", dashboards_path="/etc/grafana/provisioning/dashboards/json"
    )
    assert len(written) == 5 and all(p.is_file() for p in written)
    provider = yaml.safe_load((tmp_path / "p" / "dashboards" / "provider.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == (
        "/etc/grafana/provisioning/dashboards/json"
    )
