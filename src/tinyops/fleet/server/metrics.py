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

Gauges computed from the database at scrape time (so they are right after a restart):

    tinyops_devices{status,hardware,release}            enrolled devices
    tinyops_deployments{status}                         deployments per status
    tinyops_deployment_phase_devices{deployment,phase,status}   devices per status in each
                                                        phase of running/paused deployments
    tinyops_deployment_phase_progress_ratio{deployment,phase}   share of a phase's devices
                                                        in `success`
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tinyops.fleet.store import Store

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

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
