"""The metrics alert rules may name, with the labels their series carry.

A rules file is checked against this catalogue when it is loaded (`tinyops alerts check`
needs no server), so a misspelt metric or label is an error naming the line, never a rule
that silently matches nothing. The names are those of docs/alerts.md and of the metric
sources (tinyops.fleet.server.hardware_source, tinyops.fleet.server.drift_source); the
server exposes each on /metrics as `tinyops_<name>`.

A series carries a subset of its metric's labels: the drift metrics exist per device
(`device` set, no `group`) and per tag group (`group` set, no `device`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class MetricInfo:
    """One metric of the catalogue: its labels and what it measures."""

    labels: tuple[str, ...]
    help: str


_DEVICE = ("device", "hardware", "release")

METRICS: Final[Mapping[str, MetricInfo]] = {
    # --- hardware and liveness (HardwareSource, from telemetry and check-ins) --------------
    "device_temperature_celsius": MetricInfo(_DEVICE, "SoC temperature, °C (latest point)."),
    "device_battery_ratio": MetricInfo(
        _DEVICE, "Battery charge 0..1, from the reported battery voltage (latest point)."
    ),
    "device_free_memory_bytes": MetricInfo(_DEVICE, "Memory available, bytes (latest point)."),
    "device_resets_total": MetricInfo(
        _DEVICE, "Boots after the first one, as counted by the device (latest point)."
    ),
    "device_uptime_seconds": MetricInfo(_DEVICE, "Seconds since the device's agent booted."),
    "device_inference_latency_seconds": MetricInfo(
        _DEVICE, "One inference on the device, seconds (latest point)."
    ),
    "device_latency_budget_seconds": MetricInfo(
        ("device", "hardware"),
        "The inference latency the installed release was measured at for its target "
        "(manifest measured.latency_ms), seconds.",
    ),
    "device_latency_budget_ratio": MetricInfo(
        _DEVICE, "Latest inference latency divided by the release's latency budget."
    ),
    "device_last_seen_seconds": MetricInfo(
        _DEVICE, "Seconds since the device's last check-in (since enrollment if none)."
    ),
    "device_crash_loop": MetricInfo(
        ("device",), "1 when the device reverted a release for a crash loop in the last hour."
    ),
    # --- drift (DriftSource, per latest complete window) ------------------------------------
    "feature_drift_score": MetricInfo(
        ("release", "device", "group", "feature", "method"), "Drift statistic of a feature."
    ),
    "feature_drifted": MetricInfo(
        ("release", "device", "group", "feature"), "1 when the feature drifted, else 0."
    ),
    "dataset_drift_share": MetricInfo(
        ("release", "device", "group"), "Share of the features that drifted."
    ),
    "prediction_drift_score": MetricInfo(
        ("release", "device", "group"), "Drift statistic of the predicted classes."
    ),
    "confidence_drift_score": MetricInfo(
        ("release", "device", "group"), "Drift statistic of the confidence histogram."
    ),
    "prediction_drifted": MetricInfo(
        ("release", "device", "group"), "1 when the predicted classes drifted, else 0."
    ),
    "confidence_drifted": MetricInfo(
        ("release", "device", "group"), "1 when the confidence histogram drifted, else 0."
    ),
    # --- model quality (feedback labels) ----------------------------------------------------
    "model_accuracy": MetricInfo(("release",), "Accuracy on feedback labels (performance)."),
    "model_accuracy_reference": MetricInfo(
        ("release",), "Accuracy of the release on its test split, when it was built."
    ),
    "model_accuracy_drop": MetricInfo(
        ("release",),
        "Reference accuracy minus the accuracy on feedback labels (performance drift).",
    ),
}


def metric_names() -> list[str]:
    """Every metric a rule may name, sorted."""
    return sorted(METRICS)
