"""`HardwareSource`: the fleet's hardware and liveness metrics, read from the fleet store.

One sample per enrolled (not decommissioned) device and metric, labelled
{device, hardware, release} with release = 'name@version' of the installed release
('none' without one), the spelling of the server's `tinyops_devices` gauge:

    device_temperature_celsius        latest `temperature_c` telemetry point
    device_battery_ratio              latest `battery_v`, as (v − empty) / (full − empty)
                                      clipped to 0..1 (default a Li-ion cell: 3.0 V empty,
                                      4.2 V full; a linear approximation of its curve)
    device_free_memory_bytes          latest `free_memory_bytes`
    device_resets_total               latest `resets_total`
    device_uptime_seconds             latest `uptime_s`
    device_inference_latency_seconds  latest `inference_latency_ms` / 1000
    device_latency_budget_seconds     {device, hardware}: the installed release's
                                      manifest `measured.latency_ms` / 1000, the latency it
                                      was measured at on its target when its budget gate
                                      passed (the budget itself is a project setting the
                                      bundle does not carry)
    device_latency_budget_ratio       latency / budget, where both are known
    device_last_seen_seconds          now − last check-in (enrollment if none yet)
    device_crash_loop                 {device}: 1 when the device reported a deployment
                                      `failure` whose reason is the agent's crash-loop
                                      revert ("crash loop: N boots on trial ...") within
                                      `crash_loop_window_s` (1 h), else 0

Telemetry is read incrementally: the first collection takes the newest point of each
(device, metric) in one GROUP BY; later ones read only the rows stored since (by id, the
primary key), so a collection costs the devices query (one row per device) plus the
points that arrived in between, not the whole history. This relies on telemetry ids
becoming visible in order, which holds with one server process per database (its
telemetry writer commits one batch at a time, the runtime's assumption anyway). The
newest value per (device, metric) is kept in memory (a float per device and metric).

Thread-safe: the alert loop and /metrics scrapes may collect at the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
from sqlalchemy import Engine, and_, func, select

from tinyops.fleet.store import Store
from tinyops.fleet.store import schema as t
from tinyops.fleet.store.engine import make_engines
from tinyops.monitor.alerts.catalogue import METRICS
from tinyops.monitor.alerts.evaluate import MetricFrame
from tinyops.monitor.series import Sample

# Telemetry metric (what the agent sends, tinyops.fleet.agent.messages.MetricName) → the
# catalogue metric it feeds and the factor to its base unit.
TELEMETRY: Final[Mapping[str, tuple[str, float]]] = {
    "temperature_c": ("device_temperature_celsius", 1.0),
    "free_memory_bytes": ("device_free_memory_bytes", 1.0),
    "resets_total": ("device_resets_total", 1.0),
    "uptime_s": ("device_uptime_seconds", 1.0),
    "inference_latency_ms": ("device_inference_latency_seconds", 0.001),
    "battery_v": ("device_battery_ratio", 1.0),  # converted to a ratio below
}
# The reason the agent reports when it reverts a crash-looping trial
# (tinyops.fleet.agent.state.on_boot).
CRASH_LOOP_REASON_PREFIX: Final = "crash loop"
DEVICE_LABELS: Final = ("device", "hardware", "release")
PRODUCED: Final = (
    "device_temperature_celsius",
    "device_battery_ratio",
    "device_free_memory_bytes",
    "device_resets_total",
    "device_uptime_seconds",
    "device_inference_latency_seconds",
    "device_latency_budget_seconds",
    "device_latency_budget_ratio",
    "device_last_seen_seconds",
    "device_crash_loop",
)


class HardwareSource:
    """A MetricSource (tinyops.monitor.series) over the fleet store's devices and telemetry."""

    def __init__(
        self,
        engine: Engine,
        *,
        battery_empty_v: float = 3.0,
        battery_full_v: float = 4.2,
        crash_loop_window_s: float = 3600.0,
    ) -> None:
        if battery_full_v <= battery_empty_v:
            raise ValueError("battery_full_v must be above battery_empty_v")
        self._engine = engine
        self.battery_empty_v = battery_empty_v
        self.battery_full_v = battery_full_v
        self.crash_loop_window = timedelta(seconds=crash_loop_window_s)
        self._lock = threading.Lock()
        self._latest: dict[str, dict[str, float]] = {metric: {} for metric in TELEMETRY}
        self._watermark: int | None = None
        self._budgets: dict[int, float | None] = {}
        self._owned = False

    @classmethod
    def for_store(cls, store: Store, **options: Any) -> HardwareSource:
        """A source with its own read connections to `store`'s database."""
        source = cls(make_engines(store.url).read, **options)
        source._owned = True
        return source

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()

    def metrics(self) -> Mapping[str, str]:
        return {name: METRICS[name].help for name in PRODUCED}

    def collect(self, now: datetime) -> list[Sample]:
        return [s for frame in self.collect_frames(now) for s in frame.samples()]

    # --- reading --------------------------------------------------------------------------

    def collect_frames(self, now: datetime) -> list[MetricFrame]:
        """Every metric of this source as of `now`, one frame per metric."""
        with self._lock, self._engine.connect() as connection:
            devices = connection.execute(
                select(
                    t.Device.id,
                    t.Device.hardware,
                    t.Device.installed_name,
                    t.Device.installed_version,
                    t.Device.installed_release_id,
                    t.Device.last_seen,
                    t.Device.enrolled_at,
                ).where(t.Device.status != "decommissioned")
            ).all()
            self._read_telemetry(connection)
            self._read_budgets(connection, {d.installed_release_id for d in devices})
            crashed = set(
                connection.execute(
                    select(t.DeploymentDevice.device_id).where(
                        and_(
                            t.DeploymentDevice.status == "failure",
                            t.DeploymentDevice.reason.startswith(CRASH_LOOP_REASON_PREFIX),
                            t.DeploymentDevice.updated_at >= now - self.crash_loop_window,
                        )
                    )
                ).scalars()
            )
            latest = {metric: dict(values) for metric, values in self._latest.items()}
        return self._frames(devices, latest, crashed, now)

    def _read_telemetry(self, connection: Any) -> None:
        """Bring `_latest` up to the newest stored telemetry point."""
        points = t.TelemetryPoint
        wanted = points.metric.in_(list(TELEMETRY))
        if self._watermark is None:
            top = connection.execute(select(func.max(points.id))).scalar()
            if top is None:
                self._watermark = 0
                return
            newest = (
                select(func.max(points.id))
                .where(wanted, points.id <= top)
                .group_by(points.device_id, points.metric)
            )
            rows = connection.execute(
                select(points.device_id, points.metric, points.value).where(points.id.in_(newest))
            )
            for device_id, metric, value in rows:
                self._latest[metric][device_id] = value
            self._watermark = int(top)
            return
        rows = connection.execute(
            select(points.id, points.device_id, points.metric, points.value)
            .where(points.id > self._watermark, wanted)
            .order_by(points.id)
        ).all()
        for _id, device_id, metric, value in rows:
            self._latest[metric][device_id] = value
        if rows:
            self._watermark = int(rows[-1][0])

    def _read_budgets(self, connection: Any, release_ids: set[int | None]) -> None:
        """Latency budgets of releases not seen before (a release never changes)."""
        missing = [r for r in release_ids if r is not None and r not in self._budgets]
        if not missing:
            return
        for release_id, manifest in connection.execute(
            select(t.Release.id, t.Release.manifest).where(t.Release.id.in_(missing))
        ):
            measured = (manifest or {}).get("measured") or {}
            latency_ms = measured.get("latency_ms")
            self._budgets[release_id] = (
                float(latency_ms) / 1000.0
                if isinstance(latency_ms, int | float) and latency_ms > 0
                else None
            )

    def _frames(
        self,
        devices: Sequence[Any],
        latest: dict[str, dict[str, float]],
        crashed: set[str],
        now: datetime,
    ) -> list[MetricFrame]:
        rows: list[tuple[str, str, str]] = []
        seen_at = np.empty(len(devices), dtype=np.float64)
        for i, d in enumerate(devices):
            release = (
                "none" if d.installed_name is None else f"{d.installed_name}@{d.installed_version}"
            )
            rows.append((d.id, d.hardware, release))
            seen_at[i] = (d.last_seen or d.enrolled_at).timestamp()
        frames = [
            MetricFrame(
                "device_last_seen_seconds",
                DEVICE_LABELS,
                rows,
                np.maximum(now.timestamp() - seen_at, 0.0),
            ),
            MetricFrame(
                "device_crash_loop",
                ("device",),
                [(row[0],) for row in rows],
                np.fromiter((row[0] in crashed for row in rows), dtype=np.float64, count=len(rows)),
            ),
        ]
        latency: dict[str, float] = {}
        for telemetry_metric, (metric, factor) in TELEMETRY.items():
            values = latest[telemetry_metric]
            picked = [(row, values[row[0]]) for row in rows if row[0] in values]
            if not picked:
                continue
            array = np.fromiter((v for _r, v in picked), dtype=np.float64, count=len(picked))
            if telemetry_metric == "battery_v":
                span = self.battery_full_v - self.battery_empty_v
                array = np.clip((array - self.battery_empty_v) / span, 0.0, 1.0)
            else:
                array = array * factor
            if telemetry_metric == "inference_latency_ms":
                latency = {r[0]: float(v) for (r, _), v in zip(picked, array, strict=True)}
            frames.append(MetricFrame(metric, DEVICE_LABELS, [r for r, _v in picked], array))
        budget_rows: list[tuple[str, str]] = []
        budgets: list[float] = []
        ratio_rows: list[tuple[str, str, str]] = []
        ratios: list[float] = []
        for row, d in zip(rows, devices, strict=True):
            budget = self._budgets.get(d.installed_release_id)
            if budget is None:
                continue
            budget_rows.append((row[0], row[1]))
            budgets.append(budget)
            if row[0] in latency:
                ratio_rows.append(row)
                ratios.append(latency[row[0]] / budget)
        if budget_rows:
            frames.append(
                MetricFrame(
                    "device_latency_budget_seconds",
                    ("device", "hardware"),
                    budget_rows,
                    np.asarray(budgets, dtype=np.float64),
                )
            )
        if ratio_rows:
            frames.append(
                MetricFrame(
                    "device_latency_budget_ratio",
                    DEVICE_LABELS,
                    ratio_rows,
                    np.asarray(ratios, dtype=np.float64),
                )
            )
        return frames
