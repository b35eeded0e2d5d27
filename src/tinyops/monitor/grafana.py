"""Grafana dashboards for a tinyops fleet, generated as JSON, with a provisioning folder.

Three dashboards, each a plain dict in Grafana's dashboard JSON model (schemaVersion
`SCHEMA_VERSION`), built by code so that every panel's query names a metric the server
really exposes on /metrics:

    tinyops-fleet      fleet overview: devices by status, hardware and release, check-ins,
                       telemetry, deployments and their phases, API latency
    tinyops-quality    model quality and drift: dataset drift share, drifted features,
                       per-feature drift scores, prediction and confidence drift,
                       accuracy against its reference (feedback labels)
    tinyops-hardware   hardware health: temperature, battery, free memory, resets,
                       inference latency against the board budget, devices offline,
                       crash loops

`write_provisioning(dir)` lays out what Grafana's file provisioning reads:

    DIR/datasources/prometheus.yaml    the Prometheus datasource, uid `DATASOURCE_UID`
    DIR/dashboards/provider.yaml       a file provider reading DIR/dashboards/json
    DIR/dashboards/json/*.json         the three dashboards

Every panel refers to the datasource by that uid (not by name), so the dashboards work
as provisioned and survive a rename. Templating variables (`$hardware`, `$release`,
`$device`) filter by regex and default to "All" (`.*`).

Metric names: the server's own (tinyops.fleet.server.metrics, `SERVER_METRICS`) and the
monitor's, those of the alert rules' catalogue (tinyops.monitor.alerts.catalogue), exported
with the `tinyops_` prefix (`MONITOR_METRICS`). `metric_names(expr)` finds the names an
expression uses, and `concrete_expr(expr)` replaces Grafana's variables with PromQL so
that a tool such as `promtool check rules` can parse it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from tinyops.monitor.alerts.catalogue import METRICS
from tinyops.monitor.series import EXPOSED_PREFIX
from tinyops.store.atomic import atomic_write_bytes

SCHEMA_VERSION: Final = 39
DATASOURCE_UID: Final = "tinyops-prometheus"
DATASOURCE_NAME: Final = "tinyops Prometheus"
DATASOURCE: Final[dict[str, str]] = {"type": "prometheus", "uid": DATASOURCE_UID}
DEFAULT_PROMETHEUS_URL: Final = "http://localhost:9090"
GRID_WIDTH: Final = 24
# A device that has not checked in for this long counts as offline (seconds); the same
# default as the `device-offline` alert rule.
OFFLINE_AFTER_S: Final = 900

# Series the fleet server exposes itself (tinyops.fleet.server.metrics), as Prometheus
# stores them: counters with `_total`, the latency histogram as `_bucket`/`_sum`/`_count`.
SERVER_METRICS: Final[frozenset[str]] = frozenset(
    {
        "tinyops_device_checkins_total",
        "tinyops_artifact_downloads_total",
        "tinyops_artifact_download_bytes_total",
        "tinyops_deployment_device_transitions_total",
        "tinyops_deployment_status_transitions_total",
        "tinyops_deployment_decisions_total",
        "tinyops_telemetry_points_total",
        "tinyops_http_request_duration_seconds_bucket",
        "tinyops_http_request_duration_seconds_sum",
        "tinyops_http_request_duration_seconds_count",
        "tinyops_devices",
        "tinyops_deployments",
        "tinyops_deployment_phase_devices",
        "tinyops_deployment_phase_progress_ratio",
    }
)
# The monitor's metrics (hardware and drift sources; the alert rules' catalogue), with the
# prefix /metrics adds.
MONITOR_METRICS: Final[frozenset[str]] = frozenset(EXPOSED_PREFIX + name for name in METRICS)
KNOWN_METRICS: Final = SERVER_METRICS | MONITOR_METRICS

_METRIC = re.compile(r"\btinyops_[a-z0-9_]+\b")
_GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
# What Grafana's built-in interval variables stand for when an expression is checked.
_BUILTIN_VALUES: Final = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """The tinyops metric names an expression reads (every one starts with tinyops_)."""
    return set(_METRIC.findall(expr))


def concrete_expr(expr: str) -> str:
    """`expr` with Grafana's variables replaced: intervals by durations, ours by `.*`."""
    return _GRAFANA_VARIABLE.sub(lambda m: _BUILTIN_VALUES.get(m.group(1), ".*"), expr)


# --- building blocks ------------------------------------------------------------------------


class _Layout:
    """Places panels left to right in rows of 24 columns; assigns unique ids."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0
        self._row_h = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self._x + w > GRID_WIDTH:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self._x, "y": self._y}
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def row(self, title: str) -> None:
        """A full-width row header (collapsed=false: its panels follow it)."""
        if self._x:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self._x, self._y, self._row_h = 0, self._y + 1, 0


def _target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {
        "refId": ref,
        "datasource": dict(DATASOURCE),
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if instant:
        target["format"] = "table"
    return target


def _panel(
    kind: str,
    title: str,
    targets: Sequence[dict[str, Any]],
    *,
    unit: str = "short",
    description: str = "",
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    options: Mapping[str, Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "thresholds": {
            "mode": "absolute",
            "steps": [{"value": v, "color": c} for v, c in thresholds],
        },
        "color": {"mode": "thresholds" if kind in ("stat", "gauge") else "palette-classic"},
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": dict(DATASOURCE),
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": dict(options or {}),
    }


def _timeseries(title: str, *targets: dict[str, Any], **kw: Any) -> dict[str, Any]:
    options = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return _panel("timeseries", title, targets, options=options, **kw)


def _stat(title: str, expr: str, **kw: Any) -> dict[str, Any]:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return _panel("stat", title, [_target(expr)], options=options, **kw)


def _bargauge(title: str, expr: str, legend: str, **kw: Any) -> dict[str, Any]:
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "gradient",
        "showUnfilled": True,
    }
    return _panel("bargauge", title, [_target(expr, legend)], options=options, **kw)


def _table(title: str, expr: str, **kw: Any) -> dict[str, Any]:
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    panel = _panel("table", title, [_target(expr, instant=True)], options=options, **kw)
    # One row per series, its labels as columns, without Prometheus' bookkeeping columns.
    panel["transformations"] = [
        {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}
    ]
    return panel


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": dict(DATASOURCE),
        "query": {"query": query, "refId": f"{name}-variable"},
        "definition": query,
        "refresh": 2,  # on time range change
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def _dashboard(
    uid: str,
    title: str,
    description: str,
    layout: _Layout,
    variables: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tinyops"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "type": "dashboards",
                "tags": ["tinyops"],
                "title": "tinyops",
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "tooltip": "",
                "url": "",
                "targetBlank": False,
            }
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": list(variables)},
        "panels": layout.panels,
    }


# --- the dashboards -------------------------------------------------------------------------

HW = 'hardware=~"$hardware"'
REL = 'release=~"$release"'


def fleet_overview() -> dict[str, Any]:
    """Devices, check-ins, telemetry, deployments and API latency."""
    lay = _Layout()
    lay.row("Devices")
    lay.add(_stat("Devices", f"sum(tinyops_devices{{{HW}}})"), 4, 4)
    lay.add(
        _stat(
            "Active",
            f'sum(tinyops_devices{{status="active",{HW}}})',
            thresholds=((None, "green"),),
        ),
        4,
        4,
    )
    lay.add(
        _stat(
            "Updating",
            f'sum(tinyops_devices{{status="updating",{HW}}})',
            thresholds=((None, "blue"),),
        ),
        4,
        4,
    )
    lay.add(
        _stat(
            "Rollback pending",
            f'sum(tinyops_devices{{status="rollback-pending",{HW}}})',
            thresholds=((None, "green"), (1, "orange")),
        ),
        4,
        4,
    )
    lay.add(
        _stat(
            "Offline",
            f"count(tinyops_device_last_seen_seconds{{{HW}}} > {OFFLINE_AFTER_S}) or vector(0)",
            description=f"Devices without a check-in for more than {OFFLINE_AFTER_S} s.",
            thresholds=((None, "green"), (1, "red")),
        ),
        4,
        4,
    )
    lay.add(
        _stat(
            "Running deployments",
            'sum(tinyops_deployments{status="running"}) or vector(0)',
        ),
        4,
        4,
    )
    lay.add(
        _timeseries(
            "Devices by status",
            _target(f"sum by (status) (tinyops_devices{{{HW}}})", "{{status}}"),
        ),
        12,
        8,
    )
    lay.add(
        _bargauge(
            "Devices by release",
            f"sum by (release) (tinyops_devices{{{HW}}})",
            "{{release}}",
        ),
        6,
        8,
    )
    lay.add(
        _bargauge("Devices by hardware", "sum by (hardware) (tinyops_devices)", "{{hardware}}"),
        6,
        8,
    )
    lay.row("Traffic")
    lay.add(
        _timeseries(
            "Check-ins per second",
            _target("sum(rate(tinyops_device_checkins_total[$__rate_interval]))", "check-ins"),
            unit="reqps",
        ),
        8,
        8,
    )
    lay.add(
        _timeseries(
            "Telemetry points per second",
            _target("sum(rate(tinyops_telemetry_points_total[$__rate_interval]))", "points"),
            unit="short",
        ),
        8,
        8,
    )
    lay.add(
        _timeseries(
            "Artifact downloads",
            _target(
                "sum(rate(tinyops_artifact_download_bytes_total[$__rate_interval]))", "bytes/s"
            ),
            unit="Bps",
        ),
        8,
        8,
    )
    lay.add(
        _timeseries(
            "API latency p50 / p99 by route",
            _target(
                "histogram_quantile(0.5, sum by (le, route) "
                "(rate(tinyops_http_request_duration_seconds_bucket[$__rate_interval])))",
                "p50 {{route}}",
            ),
            _target(
                "histogram_quantile(0.99, sum by (le, route) "
                "(rate(tinyops_http_request_duration_seconds_bucket[$__rate_interval])))",
                "p99 {{route}}",
            ),
            unit="s",
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "API errors per second (4xx, 5xx)",
            _target(
                "sum by (status) (rate(tinyops_http_request_duration_seconds_count"
                '{status=~"[45].."}[$__rate_interval]))',
                "{{status}}",
            ),
            unit="reqps",
        ),
        12,
        8,
    )
    lay.row("Deployments")
    lay.add(
        _bargauge("Deployments by status", "sum by (status) (tinyops_deployments)", "{{status}}"),
        6,
        8,
    )
    lay.add(
        _table(
            "Phase progress (share of devices in success)",
            "tinyops_deployment_phase_progress_ratio",
            unit="percentunit",
        ),
        9,
        8,
    )
    lay.add(
        _timeseries(
            "Device outcomes in deployments",
            _target(
                "sum by (status) (rate(tinyops_deployment_device_transitions_total"
                "[$__rate_interval]))",
                "{{status}}",
            ),
        ),
        9,
        8,
    )
    lay.add(
        _timeseries(
            "Deployment decisions (rules and operators)",
            _target(
                "sum by (action) (increase(tinyops_deployment_decisions_total[$__rate_interval]))",
                "{{action}}",
            ),
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Devices per phase and status",
            _target(
                "sum by (deployment, phase, status) (tinyops_deployment_phase_devices)",
                "#{{deployment}} phase {{phase}} {{status}}",
            ),
        ),
        12,
        8,
    )
    return _dashboard(
        "tinyops-fleet",
        "tinyops · Fleet overview",
        "Devices by status, hardware and release; check-ins, telemetry, deployments.",
        lay,
        [_variable("hardware", "Hardware", "label_values(tinyops_devices, hardware)")],
    )


def model_quality() -> dict[str, Any]:
    """Drift of inputs, predictions and confidence, and accuracy from feedback labels."""
    lay = _Layout()
    lay.row("Model quality")
    lay.add(
        _stat(
            "Accuracy",
            f"tinyops_model_accuracy{{{REL}}}",
            unit="percentunit",
            thresholds=((None, "red"), (0.8, "orange"), (0.9, "green")),
            description="From feedback labels (performance drift).",
        ),
        6,
        5,
    )
    lay.add(
        _stat(
            "Accuracy drop vs reference",
            f"tinyops_model_accuracy_reference{{{REL}}} - on (release) "
            f"tinyops_model_accuracy{{{REL}}}",
            unit="percentunit",
            thresholds=((None, "green"), (0.05, "orange"), (0.1, "red")),
        ),
        6,
        5,
    )
    lay.add(
        _stat(
            "Devices with dataset drift",
            f'count(tinyops_dataset_drift_share{{{REL},device=~"$device",device!=""}} >= 0.5)'
            " or vector(0)",
            description="Evidently's rule: at least half of the features drift.",
            thresholds=((None, "green"), (1, "red")),
        ),
        6,
        5,
    )
    lay.add(
        _stat(
            "Drifted features (device-level series)",
            f'sum(tinyops_feature_drifted{{{REL},device=~"$device",device!=""}}) or vector(0)',
            thresholds=((None, "green"), (1, "orange")),
        ),
        6,
        5,
    )
    lay.add(
        _timeseries(
            "Accuracy and its reference",
            _target(f"tinyops_model_accuracy{{{REL}}}", "{{release}}"),
            _target(f"tinyops_model_accuracy_reference{{{REL}}}", "{{release}} reference"),
            unit="percentunit",
            minimum=0,
            maximum=1,
        ),
        24,
        8,
    )
    lay.row("Data drift")
    lay.add(
        _timeseries(
            "Dataset drift share by device",
            _target(
                f'tinyops_dataset_drift_share{{{REL},device=~"$device",device!=""}}',
                "{{device}} ({{release}})",
            ),
            unit="percentunit",
            minimum=0,
            maximum=1,
            thresholds=((None, "green"), (0.5, "red")),
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Dataset drift share by group",
            _target(f'tinyops_dataset_drift_share{{{REL},group!=""}}', "{{group}} ({{release}})"),
            unit="percentunit",
            minimum=0,
            maximum=1,
        ),
        12,
        8,
    )
    lay.add(
        _table(
            "Drifted features now",
            f'tinyops_feature_drifted{{{REL},device=~"$device"}} == 1',
        ),
        12,
        9,
    )
    lay.add(
        _timeseries(
            "Feature drift score",
            _target(
                f'tinyops_feature_drift_score{{{REL},device=~"$device",device!=""}}',
                "{{device}} {{feature}} ({{method}})",
            ),
        ),
        12,
        9,
    )
    lay.row("Prediction and confidence drift")
    lay.add(
        _timeseries(
            "Prediction drift",
            _target(
                f'tinyops_prediction_drift_score{{{REL},device=~"$device",device!=""}}',
                "{{device}} ({{release}})",
            ),
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Confidence drift",
            _target(
                f'tinyops_confidence_drift_score{{{REL},device=~"$device",device!=""}}',
                "{{device}} ({{release}})",
            ),
        ),
        12,
        8,
    )
    return _dashboard(
        "tinyops-quality",
        "tinyops · Model quality and drift",
        "Input, prediction and confidence drift per device and group; accuracy from "
        "feedback labels.",
        lay,
        [
            _variable("release", "Release", "label_values(tinyops_dataset_drift_share, release)"),
            _variable("device", "Device", "label_values(tinyops_dataset_drift_share, device)"),
        ],
    )


def hardware_health() -> dict[str, Any]:
    """Temperature, battery, memory, resets, latency against budget, liveness."""
    sel = f'{HW},{REL},device=~"$device"'
    lay = _Layout()
    lay.row("Now")
    lay.add(
        _stat(
            "Offline devices",
            f"count(tinyops_device_last_seen_seconds{{{sel}}} > {OFFLINE_AFTER_S}) or vector(0)",
            thresholds=((None, "green"), (1, "red")),
        ),
        6,
        4,
    )
    lay.add(
        _stat(
            "Crash loops (last hour)",
            'sum(tinyops_device_crash_loop{device=~"$device"}) or vector(0)',
            thresholds=((None, "green"), (1, "red")),
        ),
        6,
        4,
    )
    lay.add(
        _stat(
            "Hottest device",
            f"max(tinyops_device_temperature_celsius{{{sel}}})",
            unit="celsius",
            thresholds=((None, "green"), (70, "orange"), (85, "red")),
        ),
        6,
        4,
    )
    lay.add(
        _stat(
            "Lowest battery",
            f"min(tinyops_device_battery_ratio{{{sel}}})",
            unit="percentunit",
            thresholds=((None, "red"), (0.2, "orange"), (0.4, "green")),
        ),
        6,
        4,
    )
    lay.row("Per device")
    lay.add(
        _timeseries(
            "Temperature",
            _target(f"tinyops_device_temperature_celsius{{{sel}}}", "{{device}}"),
            unit="celsius",
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Battery",
            _target(f"tinyops_device_battery_ratio{{{sel}}}", "{{device}}"),
            unit="percentunit",
            minimum=0,
            maximum=1,
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Free memory",
            _target(f"tinyops_device_free_memory_bytes{{{sel}}}", "{{device}}"),
            unit="bytes",
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Resets (per hour)",
            _target(f"increase(tinyops_device_resets_total{{{sel}}}[1h])", "{{device}}"),
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Inference latency against the board budget",
            _target(f"tinyops_device_inference_latency_seconds{{{sel}}}", "{{device}}"),
            _target(
                "max by (hardware) (tinyops_device_latency_budget_seconds"
                f'{{{HW},device=~"$device"}})',
                "budget {{hardware}}",
            ),
            unit="s",
        ),
        12,
        8,
    )
    lay.add(
        _table(
            "Over the latency budget",
            f"tinyops_device_inference_latency_seconds{{{sel}}} > on (device, hardware) "
            "tinyops_device_latency_budget_seconds",
            unit="s",
        ),
        12,
        8,
    )
    lay.add(
        _table(
            "Seconds since last check-in",
            f"sort_desc(tinyops_device_last_seen_seconds{{{sel}}})",
            unit="s",
            thresholds=((None, "green"), (OFFLINE_AFTER_S, "red")),
        ),
        24,
        8,
    )
    return _dashboard(
        "tinyops-hardware",
        "tinyops · Hardware health",
        "Device telemetry: temperature, battery, memory, resets, latency against the board "
        "budget, liveness.",
        lay,
        [
            _variable(
                "hardware", "Hardware", "label_values(tinyops_device_last_seen_seconds, hardware)"
            ),
            _variable(
                "release", "Release", "label_values(tinyops_device_last_seen_seconds, release)"
            ),
            _variable("device", "Device", "label_values(tinyops_device_last_seen_seconds, device)"),
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard by file stem."""
    return {
        "fleet-overview": fleet_overview(),
        "model-quality": model_quality(),
        "hardware-health": hardware_health(),
    }


def panel_targets(dashboard: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of a dashboard."""
    return [(panel, target) for panel in dashboard["panels"] for target in panel.get("targets", [])]


# --- provisioning -----------------------------------------------------------------------------


def datasource_yaml(prometheus_url: str = DEFAULT_PROMETHEUS_URL) -> str:
    """Grafana datasource provisioning: the Prometheus that scrapes the server."""
    return (
        "# Grafana datasource provisioning for the tinyops dashboards (tinyops grafana export).\n"
        "# Point `url` at the Prometheus that scrapes the fleet server's /metrics.\n"
        "apiVersion: 1\n"
        "datasources:\n"
        f"  - name: {json.dumps(DATASOURCE_NAME)}\n"
        "    type: prometheus\n"
        f"    uid: {DATASOURCE_UID}\n"
        "    access: proxy\n"
        f"    url: {json.dumps(prometheus_url)}\n"
        "    isDefault: false\n"
        "    editable: false\n"
        "    jsonData:\n"
        "      httpMethod: POST\n"
        "      timeInterval: 15s\n"
    )


def provider_yaml(json_dir: str) -> str:
    """Grafana dashboard provisioning: a file provider over `json_dir`."""
    return (
        "# Grafana dashboard provisioning for the tinyops dashboards (tinyops grafana export).\n"
        "apiVersion: 1\n"
        "providers:\n"
        "  - name: tinyops\n"
        "    orgId: 1\n"
        "    folder: tinyops\n"
        "    type: file\n"
        "    disableDeletion: false\n"
        "    allowUiUpdates: false\n"
        "    updateIntervalSeconds: 60\n"
        "    options:\n"
        f"      path: {json.dumps(json_dir)}\n"
        "      foldersFromFilesStructure: false\n"
    )


def write_provisioning(
    directory: Path,
    *,
    prometheus_url: str = DEFAULT_PROMETHEUS_URL,
    dashboards_path: str | None = None,
) -> list[Path]:
    """Write the provisioning folder; the files written.

    `dashboards_path` is where Grafana will find the JSON files (the provider's
    `options.path`); by default the absolute path of DIR/dashboards/json, right when
    Grafana runs on this machine, to be set when the folder is mounted elsewhere (e.g.
    /etc/grafana/provisioning/dashboards/json in a container).
    """
    directory = Path(directory)
    json_dir = directory / "dashboards" / "json"
    files: dict[Path, bytes] = {
        directory / "datasources" / "prometheus.yaml": datasource_yaml(prometheus_url).encode(),
        directory / "dashboards" / "provider.yaml": provider_yaml(
            dashboards_path or str(json_dir.resolve())
        ).encode(),
    }
    for stem, dashboard in dashboards().items():
        files[json_dir / f"{stem}.json"] = (
            json.dumps(dashboard, indent=2, sort_keys=True) + "\n"
        ).encode()
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return list(files)


__all__ = [
    "DATASOURCE_UID",
    "KNOWN_METRICS",
    "MONITOR_METRICS",
    "SCHEMA_VERSION",
    "SERVER_METRICS",
    "concrete_expr",
    "dashboards",
    "fleet_overview",
    "hardware_health",
    "metric_names",
    "model_quality",
    "panel_targets",
    "write_provisioning",
]
