"""`DriftSource`: drift and model quality as metric samples, for alert rules and /metrics.

A `MetricSource` (tinyops.monitor.series) over the drift store. At each collection it
reads, per (device, release), the device's latest complete window (every stored window is
complete: a device sends it when the window has ended) that ended at most
`STALE_WINDOWS` policy windows ago, so a device that stopped reporting stops being
judged instead of repeating its last verdict forever. A verdict needs
`DriftConfig.min_count` inferences: when the latest window holds fewer, the device's
earlier windows of the release are added, newest first, up to `DriftConfig.max_windows`
windows; a device still short of it gets no drift series (a distance on a few dozen
inferences is sampling noise, and would fire alerts on healthy devices).
Series (release = "name@version"):

    feature_drift_score{release,device,feature,method}   the statistic (a p-value for
                                                          ks/chisquare/z, else a distance)
    feature_drifted{release,device,feature}              1 when the feature drifted, else 0
    dataset_drift_share{release,device}                  share of drifted features
    prediction_drift_score{release,device}               statistic of the class distribution
    confidence_drift_score{release,device}               statistic of the confidence histogram
    prediction_drifted{release,device}                   1/0 verdicts of those two
    confidence_drifted{release,device}
    ... the same per tag group, with group="key:value" instead of device: the latest
        windows of the group's devices summed (tag keys: FleetSettings.drift_group_tags)
    model_accuracy{release}                              accuracy of the predictions labeled
                                                          through /api/v1/feedback, over
                                                          windows of the last day
    model_accuracy_reference{release}                    the policy's reference_accuracy
    model_accuracy_drop{release}                         reference minus labeled accuracy

Cardinality is bounded: per-device feature series (devices × features) are all emitted
up to `max_device_feature_series` (default 10,000); above it only the drifted features'
series are, so a large healthy fleet exposes few. Groups: at most `max_groups_per_tag`
values per tag key and release (by sorted value). Device-level series are one per device
and release, like `tinyops_devices`.

Reports are cached by window id (a stored window never changes), so a scrape recomputes
only the windows that arrived since the last one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from tinyops.fleet.server.drift_service import DriftService, Monitored, merge_windows
from tinyops.fleet.store import FleetError
from tinyops.fleet.store.drift_store import WindowRow
from tinyops.monitor.drift import DriftReport
from tinyops.monitor.series import Sample

log = logging.getLogger("tinyops.fleet.server")

# A device's latest window counts while it ended at most this many policy windows ago.
STALE_WINDOWS: Final = 3
# Look back this far for windows at all (the largest policy window is 7 days).
MAX_LOOKBACK: Final = timedelta(days=3 * 7)
ACCURACY_LOOKBACK: Final = timedelta(days=1)

METRICS: Final[Mapping[str, str]] = {
    "feature_drift_score": "Drift statistic per feature of the latest window (p-value for "
    "ks/chisquare/z, else a distance).",
    "feature_drifted": "1 when the feature drifted in the latest window, else 0.",
    "dataset_drift_share": "Share of the features that drifted in the latest window.",
    "prediction_drift_score": "Drift statistic of the predicted-class distribution.",
    "confidence_drift_score": "Drift statistic of the confidence histogram.",
    "prediction_drifted": "1 when the predicted-class distribution drifted, else 0.",
    "confidence_drifted": "1 when the confidence histogram drifted, else 0.",
    "model_accuracy": "Accuracy of the predictions labeled through feedback (last day).",
    "model_accuracy_reference": "The release's reference accuracy (its monitoring policy).",
    "model_accuracy_drop": "Reference accuracy minus the accuracy on feedback labels.",
}


class DriftSource:
    """Drift metric samples from the latest windows (see the module docstring)."""

    def __init__(
        self,
        service: DriftService,
        group_tags: Sequence[str] = ("group",),
        *,
        max_device_feature_series: int = 10_000,
        max_groups_per_tag: int = 100,
    ) -> None:
        self.service = service
        self.group_tags = tuple(group_tags)
        self.max_device_feature_series = max_device_feature_series
        self.max_groups_per_tag = max_groups_per_tag
        # Reports by the ids of the windows they judge (stored windows never change).
        self._reports: dict[tuple[int, ...], DriftReport | None] = {}

    def metrics(self) -> Mapping[str, str]:
        return METRICS

    def collect(self, now: datetime) -> Iterable[Sample]:
        store = self.service.store
        rows: list[tuple[Monitored, WindowRow]] = []
        for row in store.drift.latest_windows(now - MAX_LOOKBACK):
            monitored = self.service.monitored_by_id(row.release_id)
            if monitored is None:
                continue
            stale = timedelta(seconds=STALE_WINDOWS * monitored.policy.window_s)
            if row.window_end >= now - stale:
                rows.append((monitored, row))

        reports: dict[tuple[int, ...], DriftReport | None] = {}
        judged: list[tuple[Monitored, WindowRow, tuple[int, ...]]] = []
        for monitored, row in rows:
            merged = self._enough(monitored, row, now)
            if merged is None:
                continue
            key = tuple(w.id for w in merged)
            if key not in self._reports:
                self._reports[key] = self._report(monitored, merged)
            reports[key] = self._reports[key]
            judged.append((monitored, row, key))
        self._reports = reports  # forget window sets that are no longer anyone's latest

        samples: list[Sample] = []
        n_series = sum(len(r.features) for r in reports.values() if r is not None)
        only_drifted = n_series > self.max_device_feature_series
        for monitored, row, key in judged:
            report = reports[key]
            if report is not None:
                labels = {"release": monitored.label, "device": row.device_id}
                samples += _report_samples(report, labels, only_drifted)
        samples += self._group_samples(rows)
        samples += self._accuracy_samples(rows, now)
        return samples

    def _enough(
        self, monitored: Monitored, latest: WindowRow, now: datetime
    ) -> list[WindowRow] | None:
        """The latest window plus as many earlier ones as `min_count` needs (None when the
        device has not made that many inferences within `max_windows` windows)."""
        config = self.service.config_for(monitored)
        if latest.count >= config.min_count:
            return [latest]
        if config.max_windows <= 1:
            return None
        earlier = self.service.store.drift.windows_before(
            latest.device_id,
            latest.release_id,
            latest.window_start + timedelta(microseconds=1),
            now - MAX_LOOKBACK,
            config.max_windows - 1,
        )
        merged, total = [latest], latest.count
        for window in earlier:
            merged.append(window)
            total += window.count
            if total >= config.min_count:
                return merged
        return None

    def _report(self, monitored: Monitored, rows: Sequence[WindowRow]) -> DriftReport | None:
        merged = merge_windows(monitored, rows)
        if merged is None:
            return None
        try:
            # judge: the KS test on the windows' raw samples where the profile allows it.
            return self.service.judge(monitored, merged)[0]
        except FleetError as exc:
            log.warning("drift of %s not computed: %s", monitored.label, exc)
            return None

    def _group_samples(self, rows: Sequence[tuple[Monitored, WindowRow]]) -> list[Sample]:
        if not self.group_tags or not rows:
            return []
        tags = self.service.store.drift.device_tags(sorted({r.device_id for _, r in rows}))
        groups: dict[tuple[str, str, str], list[WindowRow]] = defaultdict(list)
        first: dict[str, Monitored] = {}
        for monitored, row in rows:
            # Releases of one name@version on several boards share one label: their
            # windows are summed when their profiles are the same (the first one's).
            base = first.setdefault(monitored.label, monitored)
            if base.release.profile != monitored.release.profile:
                continue
            for key in self.group_tags:
                value = tags.get(row.device_id, {}).get(key)
                if value is not None:
                    groups[(monitored.label, key, value)].append(row)
        samples: list[Sample] = []
        kept: dict[tuple[str, str], int] = defaultdict(int)
        for (label, key, value), group_rows in sorted(groups.items()):
            if kept[(label, key)] >= self.max_groups_per_tag:
                continue
            kept[(label, key)] += 1
            if sum(r.count for r in group_rows) < self.service.config_for(first[label]).min_count:
                continue  # too few inferences in the group's latest windows for a verdict
            report = self._report(first[label], group_rows)
            if report is not None:
                labels = {"release": label, "group": f"{key}:{value}"}
                samples += _report_samples(report, labels, False)
        return samples

    def _accuracy_samples(
        self, rows: Sequence[tuple[Monitored, WindowRow]], now: datetime
    ) -> list[Sample]:
        store = self.service.store
        labeled: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        reference: dict[str, float] = {}
        for release_id, (n, k) in store.drift.accuracy_by_release(now - ACCURACY_LOOKBACK).items():
            monitored = self.service.monitored_by_id(release_id)
            if monitored is None:
                continue
            labeled[monitored.label][0] += n
            labeled[monitored.label][1] += k
            if monitored.extras.reference_accuracy is not None:
                reference[monitored.label] = monitored.extras.reference_accuracy
        for monitored, _row in rows:
            if monitored.extras.reference_accuracy is not None:
                reference[monitored.label] = monitored.extras.reference_accuracy
        samples = [
            Sample("model_accuracy", {"release": label}, k / n)
            for label, (n, k) in sorted(labeled.items())
            if n
        ]
        samples += [
            Sample("model_accuracy_reference", {"release": label}, value)
            for label, value in sorted(reference.items())
        ]
        # Performance drift as one number a rule can compare with a constant.
        samples += [
            Sample("model_accuracy_drop", {"release": label}, reference[label] - k / n)
            for label, (n, k) in sorted(labeled.items())
            if n and label in reference
        ]
        return samples


def _report_samples(
    report: DriftReport, labels: Mapping[str, str], only_drifted: bool
) -> list[Sample]:
    samples = []
    for f in report.features:
        if only_drifted and not f.drifted:
            continue
        samples.append(
            Sample(
                "feature_drift_score",
                {**labels, "feature": f.feature, "method": f.method},
                f.statistic,
            )
        )
        samples.append(
            Sample("feature_drifted", {**labels, "feature": f.feature}, float(f.drifted))
        )
    samples.append(Sample("dataset_drift_share", labels, report.drift_share))
    for name, row in (("prediction", report.prediction), ("confidence", report.confidence)):
        if row is not None:
            samples.append(Sample(f"{name}_drift_score", labels, row.statistic))
            samples.append(Sample(f"{name}_drifted", labels, float(row.drifted)))
    return samples
