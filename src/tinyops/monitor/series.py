"""Metric samples: the common currency of alert rules, /metrics and the dashboards.

Everything the server knows about the fleet that an alert rule may test — hardware
telemetry, device liveness, drift, model quality — is turned into samples of named
metrics with labels, the Prometheus data model: one `Sample` per (metric, label set) at
evaluation time. A `MetricSource` produces the samples of the metrics it owns; the alert
evaluator (tinyops.monitor.alerts) reads the union of all sources, and the server exposes
the same names on /metrics with the `tinyops_` prefix, so a rule exported to Prometheus
means the same thing there.

Metric names follow Prometheus' conventions: snake_case, base units in the name
(`_celsius`, `_bytes`, `_seconds`, `_ratio`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

METRIC_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
LABEL_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# Prefix of every metric the server exposes on /metrics.
EXPOSED_PREFIX = "tinyops_"


@dataclass(frozen=True)
class Sample:
    """One value of `metric` for one label set (e.g. device="nano-01", feature="f3")."""

    metric: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0

    def __post_init__(self) -> None:
        if not METRIC_NAME.match(self.metric):
            raise ValueError(f"metric name {self.metric!r} is not snake_case [a-z_][a-z0-9_]*")
        for name in self.labels:
            if not LABEL_NAME.match(name):
                raise ValueError(f"label name {name!r} of {self.metric} is not snake_case")
        # A frozen mapping: samples are dictionary keys in the evaluator's state.
        object.__setattr__(self, "labels", dict(sorted(self.labels.items())))

    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """The series identity: metric name and sorted labels."""
        return self.metric, tuple(self.labels.items())

    def __hash__(self) -> int:
        return hash((self.key(), self.value))


class MetricSource(Protocol):
    """Produces the current samples of the metrics it owns."""

    def metrics(self) -> Mapping[str, str]:
        """The metric names this source produces, each with a one-line description."""
        ...

    def collect(self, now: datetime) -> Iterable[Sample]:
        """Every sample as of `now` (timezone-aware UTC)."""
        ...
