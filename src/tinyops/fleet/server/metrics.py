"""Prometheus metrics of the fleet server, in its own registry (nothing process-global).

Counters (incremented as things happen):

    tinyops_device_checkins_total                       check-ins answered
    tinyops_artifact_downloads_total                    artifact responses (200 and 206)
    tinyops_artifact_download_bytes_total               artifact bytes sent
    tinyops_deployment_device_transitions_total{status} device statuses entered in a
                                                        deployment (reported, or
                                                        rollback-pending set by an abort)
    tinyops_deployment_status_transitions_total{status} deployment statuses entered (running
                                                        on resume, paused, cancelled,
                                                        aborted, succeeded)
    tinyops_deployment_decisions_total{action}          changes made to deployments by the
                                                        rules (open-phase, abort, succeed) or
                                                        operators (pause, resume, cancel,
                                                        rollback)
    tinyops_telemetry_points_total                      telemetry points stored
    tinyops_http_request_duration_seconds{method,route,status}   latency histogram; `route`
                                                        is the route template (bounded),
                                                        'unmatched' for unknown paths

Gauges computed from the database at scrape time (so they are right after a restart),
with those of every MetricSource added by `add_source` (e.g. drift_source.py's, as
tinyops_feature_drifted{release,device,feature} and so on):

    tinyops_devices{status,hardware,release}            enrolled devices
    tinyops_deployments{status}                         deployments per status
    tinyops_deployment_phase_devices{deployment,phase,status}   devices per status in each
                                                        phase of running/paused deployments
    tinyops_deployment_phase_progress_ratio{deployment,phase}   share of a phase's devices
                                                        in `success`
    tinyops_device_*{device,hardware,release}           hardware and liveness per device
                                                        (hardware_source.py)
    tinyops_alerts_firing{rule,severity}                alerts firing per rule (alerting.py)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tinyops.fleet.store import Store
from tinyops.monitor.series import EXPOSED_PREFIX, MetricSource, Sample

# Seconds; check-ins take well under a millisecond, uploads can take seconds.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class _StoreCollector(Collector):
    """Gauges read from the store when Prometheus scrapes."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        # Registering must not query the database.
        return []

    def collect(self) -> Iterator[Metric]:
        devices = GaugeMetricFamily(
            "tinyops_devices",
            "Enrolled devices by status, hardware and installed release (name@version).",
            labels=["status", "hardware", "release"],
        )
        for status, hardware, release, count in self._store.device_counts():
            devices.add_metric([status, hardware, release], count)
        yield devices

        deployments = GaugeMetricFamily(
            "tinyops_deployments", "Deployments by status.", labels=["status"]
        )
        for status, count in sorted(self._store.deployment_status_counts().items()):
            deployments.add_metric([status], count)
        yield deployments

        phase_devices = GaugeMetricFamily(
            "tinyops_deployment_phase_devices",
            "Devices per status in each phase of running and paused deployments.",
            labels=["deployment", "phase", "status"],
        )
        totals: dict[tuple[str, str], int] = defaultdict(int)
        successes: dict[tuple[str, str], int] = defaultdict(int)
        for deployment, phase, status, count in self._store.live_deployment_counts():
            key = (str(deployment), str(phase))
            phase_devices.add_metric([*key, status], count)
            totals[key] += count
            if status == "success":
                successes[key] += count
        yield phase_devices

        progress = GaugeMetricFamily(
            "tinyops_deployment_phase_progress_ratio",
            "Share of a phase's devices that reached success (running/paused deployments).",
            labels=["deployment", "phase"],
        )
        for key, total in sorted(totals.items()):
            progress.add_metric(list(key), successes[key] / total if total else 0.0)
        yield progress


class _SourceCollector(Collector):
    """Gauges from a MetricSource (tinyops.monitor.series), computed at scrape time:
    each metric becomes `tinyops_<metric>` with the union of its samples' label names."""

    def __init__(self, source: MetricSource) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from datetime import UTC, datetime

        if hasattr(self._source, "collect_frames"):
            yield from self._collect_frames(datetime.now(UTC))
            return
        by_metric: dict[str, list[Sample]] = defaultdict(list)
        for sample in self._source.collect(datetime.now(UTC)):
            by_metric[sample.metric].append(sample)
        for name, description in self._source.metrics().items():
            samples = by_metric.get(name, [])
            labels = sorted({label for s in samples for label in s.labels})
            family = GaugeMetricFamily(EXPOSED_PREFIX + name, description, labels=labels)
            for s in samples:
                family.add_metric([s.labels.get(label, "") for label in labels], s.value)
            yield family

    def _collect_frames(self, now: Any) -> Iterator[Metric]:
        # Sources with many series (HardwareSource: one per device and metric) hand over
        # frames, label rows and a value array, instead of one Sample object per series.
        frames: dict[str, list[Any]] = defaultdict(list)
        for frame in self._source.collect_frames(now):  # type: ignore[attr-defined]
            frames[frame.metric].append(frame)
        for name, description in self._source.metrics().items():
            parts = frames.get(name, [])
            labels = sorted({label for f in parts for label in f.label_names})
            family = GaugeMetricFamily(EXPOSED_PREFIX + name, description, labels=labels)
            for f in parts:
                position = [f.label_names.index(x) if x in f.label_names else -1 for x in labels]
                for row, value in zip(f.rows, f.values.tolist(), strict=True):
                    family.add_metric([row[p] if p >= 0 else "" for p in position], value)
            yield family


class _AlertsCollector(Collector):
    """tinyops_alerts_firing{rule,severity}: alerts firing now, per rule (0 included)."""

    def __init__(self, counts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._counts = counts

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tinyops_alerts_firing",
            "Alerts firing now, per alert rule (docs/alerts.md).",
            labels=["rule", "severity"],
        )
        for (rule, severity), count in sorted(self._counts().items()):
            family.add_metric([rule, severity], count)
        yield family


class FleetMetrics:
    """The server's registry and the instruments the request handlers update."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.checkins = Counter(
            "tinyops_device_checkins", "Device check-ins answered.", registry=self.registry
        )
        self.downloads = Counter(
            "tinyops_artifact_downloads",
            "Release artifact responses (full and partial).",
            registry=self.registry,
        )
        self.download_bytes = Counter(
            "tinyops_artifact_download_bytes",
            "Release artifact bytes sent.",
            registry=self.registry,
        )
        self.transitions = Counter(
            "tinyops_deployment_device_transitions",
            "Device statuses entered in deployments.",
            ["status"],
            registry=self.registry,
        )
        self.deployment_transitions = Counter(
            "tinyops_deployment_status_transitions",
            "Deployment statuses entered.",
            ["status"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "tinyops_deployment_decisions",
            "Changes made to deployments, by rule or operator action.",
            ["action"],
            registry=self.registry,
        )
        self.telemetry_points = Counter(
            "tinyops_telemetry_points", "Telemetry points stored.", registry=self.registry
        )
        self.request_seconds = Histogram(
            "tinyops_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))

    def add_source(self, source: MetricSource) -> None:
        """Expose a MetricSource's samples at every scrape, under `tinyops_<metric>`."""
        self.registry.register(_SourceCollector(source))

    def add_alerts(self, counts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Expose `tinyops_alerts_firing{rule,severity}` from `counts()` at every scrape."""
        self.registry.register(_AlertsCollector(counts))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
