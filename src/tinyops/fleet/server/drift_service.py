"""Drift on the server: sketch ingestion, merged histograms, drift reports, feedback, labels.

Devices send, per window, histograms in the bins of their release's reference profile
(docs/drift.md). The server

1. keeps each release's profile and policy (bundle members `monitoring/profile.json`
   and `monitoring/policy.json`, parsed at upload by `bundle_monitoring`);
2. checks every sketch against that profile (`check_sketch`: bin counts, totals, known
   features, class indices, the sampling limit) and stores it as one window row;
3. answers drift questions over any selection: the windows of a release within a time
   range, for one device, a tag group or the whole fleet, are summed bin by bin (the bins
   are shared, so histograms add up) and compared with the reference by
   `tinyops.monitor.drift.compute_drift`. Where the profile carries reference rows and the
   config asks for the Kolmogorov–Smirnov test, the raw samples of the selected windows
   (newest windows first, at most MAX_KS_SAMPLES) are its current side; with fewer than
   `DriftConfig.ks_min_samples` of them a feature gets the binned method instead;
4. takes ground-truth feedback for sampled predictions (performance drift: accuracy of the
   labeled predictions against the reference accuracy the policy states) and newly
   labeled samples for retraining.

Which statistic and threshold each feature gets: the release policy's optional `drift`
section if present, else the server's `--drift-config` file, else `DriftConfig()`
(Evidently's defaults).

Everything above the store is pure: `check_sketch`, `merge_windows` and `bundle_monitoring`
do no I/O. `DriftService` binds them to the store; the routers and the MQTT bridge call it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from tinyops.errors import DataError, ProjectError
from tinyops.fleet.server.drift_models import FeedbackIn, SamplesIn, SketchIn
from tinyops.fleet.store import Conflict, DeviceCredential, Invalid, NotFound, Store
from tinyops.fleet.store.drift_store import (
    FeedbackItem,
    LabeledItem,
    LabeledRecord,
    MonitoredRelease,
    SampleWrite,
    SketchWrite,
    WindowRow,
)
from tinyops.monitor.config import DriftConfig
from tinyops.monitor.drift import DriftReport, compute_drift
from tinyops.monitor.policy import (
    POLICY_MEMBER,
    PROFILE_MEMBER,
    MonitoringPolicy,
    monitoring_from_files,
)
from tinyops.monitor.reference import Histograms, NumericProfile, ReferenceProfile

# The drift API's time range when the request gives none: the last day.
DEFAULT_RANGE: Final = timedelta(days=1)
# Most raw samples one KS test reads (newest windows first): at 20,000 rows KS already
# detects a shift of a few hundredths of a standard deviation, and reading more costs
# time and memory for nothing.
MAX_KS_SAMPLES: Final = 20_000


# ---------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class PolicyExtras:
    """Optional keys of monitoring/policy.json beyond the contract's (server side only).

    `reference_accuracy` (0..1): the model's accuracy on held-out data, the baseline of
    performance drift. `drift`: a DriftConfig (methods and thresholds) for this release.
    """

    reference_accuracy: float | None = None
    drift: DriftConfig | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyExtras:
        where = f"bundle member {POLICY_MEMBER}"
        accuracy = data.get("reference_accuracy")
        if accuracy is not None and not (_number(accuracy) and 0 <= accuracy <= 1):
            raise DataError(f"{where}: 'reference_accuracy' must be a number in [0, 1]")
        drift = None
        if data.get("drift") is not None:
            try:
                drift = DriftConfig.model_validate(data["drift"])
            except ValueError as exc:
                raise DataError(f"{where}: 'drift' is not a valid drift config: {exc}") from exc
        return cls(None if accuracy is None else float(accuracy), drift)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def bundle_monitoring(files: Mapping[str, bytes]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The (profile, policy) JSON of a bundle's monitoring members; None without them.

    DataError naming the member when one is present without the other, is not JSON, or
    does not parse (`tinyops.monitor.policy.monitoring_from_files`, plus PolicyExtras).
    """
    if monitoring_from_files(files) is None:
        return None
    profile = json.loads(files[PROFILE_MEMBER])
    policy = json.loads(files[POLICY_MEMBER])
    PolicyExtras.from_dict(policy)
    return profile, policy


# ---------------------------------------------------------------------------- a profile, parsed


@dataclass(frozen=True)
class Monitored:
    """A release's parsed profile and policy, and the layout of its stored counts."""

    release: MonitoredRelease
    profile: ReferenceProfile
    policy: MonitoringPolicy
    extras: PolicyExtras

    @property
    def label(self) -> str:
        """'name@version', the release label of metrics and of the drift API."""
        return f"{self.release.name}@{self.release.version}"

    @property
    def n_classes(self) -> int | None:
        counts = self.profile.prediction_counts
        return None if counts is None else len(counts)

    def histograms(
        self, counts: Sequence[int] | np.ndarray, predictions: Any, confidence: Any
    ) -> Histograms:
        """Histograms from the stored layout (features concatenated in profile order)."""
        flat = np.asarray(counts, dtype=np.int64)
        features = {}
        offset = 0
        for feat in self.profile.features:
            features[feat.name] = flat[offset : offset + feat.n_bins]
            offset += feat.n_bins
        return Histograms(
            features=features,
            predictions=None if predictions is None else np.asarray(predictions, dtype=np.int64),
            confidence=None if confidence is None else np.asarray(confidence, dtype=np.int64),
        )


def parse_monitored(release: MonitoredRelease) -> Monitored:
    return Monitored(
        release,
        ReferenceProfile.from_dict(release.profile),
        MonitoringPolicy.from_dict(release.policy),
        PolicyExtras.from_dict(release.policy),
    )


# ---------------------------------------------------------------------------- sketches


def check_sketch(monitored: Monitored, device_id: str, body: SketchIn) -> SketchWrite:
    """The sketch as a store write, if it fits the profile; Invalid naming the field if not."""
    profile, policy = monitored.profile, monitored.policy
    if body.window.end <= body.window.start:
        raise Invalid(
            f"window.end ({body.window.end.isoformat()}) must be after window.start "
            f"({body.window.start.isoformat()})",
            field="window.end",
        )
    names = profile.feature_names
    unknown = [n for n in body.histograms.features if n not in names]
    if unknown:
        raise Invalid(
            f"histograms.features: unknown features {unknown}; the release's profile has "
            f"{list(names)}",
            field=f"histograms.features.{unknown[0]}",
        )
    missing = [n for n in names if n not in body.histograms.features]
    if missing:
        raise Invalid(
            f"histograms.features: features {missing} are missing (the profile has "
            f"{len(names)} features)",
            field="histograms.features",
        )
    flat: list[int] = []
    for feat in profile.features:
        where = f"histograms.features.{feat.name}"
        flat += _counts(body.histograms.features[feat.name], feat.n_bins, body.count, where)
    predictions = confidence = None
    if body.histograms.predictions is not None:
        if monitored.n_classes is None:
            raise Invalid(
                "histograms.predictions: the release's profile has no class distribution",
                field="histograms.predictions",
            )
        predictions = _counts(
            body.histograms.predictions, monitored.n_classes, body.count, "histograms.predictions"
        )
    if body.histograms.confidence is not None:
        if profile.confidence is None:
            raise Invalid(
                "histograms.confidence: the release's profile has no confidence histogram",
                field="histograms.confidence",
            )
        confidence = _counts(
            body.histograms.confidence,
            profile.confidence.n_bins,
            body.count,
            "histograms.confidence",
        )
    limit = policy.max_samples_per_window
    if len(body.samples) > limit:
        raise Invalid(
            f"samples: {len(body.samples)} raw samples, but the release's sampling policy "
            f"allows at most {limit} per window"
            + (" (no raw sample may leave the device)" if limit == 0 else ""),
            field="samples",
        )
    samples = []
    seen: set[str] = set()
    for i, sample in enumerate(body.samples):
        if len(sample.features) != len(names):
            raise Invalid(
                f"samples[{i}].features has {len(sample.features)} values; the profile has "
                f"{len(names)} features",
                field=f"samples[{i}].features",
            )
        if monitored.n_classes is not None and sample.prediction >= monitored.n_classes:
            raise Invalid(
                f"samples[{i}].prediction {sample.prediction} is not a class index "
                f"0..{monitored.n_classes - 1}",
                field=f"samples[{i}].prediction",
            )
        if sample.id is not None:
            if sample.id in seen:
                raise Invalid(
                    f"samples[{i}].id {sample.id!r} repeats within the sketch",
                    field=f"samples[{i}].id",
                )
            seen.add(sample.id)
        samples.append(SampleWrite(sample.id, sample.prediction, list(sample.features)))
    return SketchWrite(
        device_id=device_id,
        release_id=monitored.release.release_id,
        window_start=body.window.start,
        window_end=body.window.end,
        count=body.count,
        counts=flat,
        predictions=predictions,
        confidence=confidence,
        samples=samples,
    )


def _counts(counts: Sequence[int], n_bins: int, total: int, where: str) -> list[int]:
    if len(counts) != n_bins:
        raise Invalid(
            f"{where}: expected {n_bins} bin counts (the profile's bins), got {len(counts)}",
            field=where,
        )
    if sum(counts) != total:
        raise Invalid(
            f"{where}: the counts sum to {sum(counts)}, but the window has count {total} "
            "inferences",
            field=where,
        )
    return list(counts)


@dataclass(frozen=True)
class Merged:
    """The summed histograms of a selection of windows."""

    histograms: Histograms
    windows: int
    devices: int
    count: int
    window_ids: tuple[int, ...] = ()


def merge_windows(monitored: Monitored, rows: Sequence[WindowRow]) -> Merged | None:
    """Bin-wise sums of the windows (None for no rows); predictions and confidence summed
    over the windows that carry them."""
    if not rows:
        return None
    counts = np.asarray([r.counts for r in rows], dtype=np.int64).sum(axis=0)
    predictions = [r.predictions for r in rows if r.predictions is not None]
    confidence = [r.confidence for r in rows if r.confidence is not None]
    return Merged(
        histograms=monitored.histograms(
            counts,
            np.asarray(predictions, dtype=np.int64).sum(axis=0) if predictions else None,
            np.asarray(confidence, dtype=np.int64).sum(axis=0) if confidence else None,
        ),
        windows=len(rows),
        devices=len({r.device_id for r in rows}),
        count=sum(r.count for r in rows),
        window_ids=tuple(r.id for r in rows),
    )


def wants_ks(profile: ReferenceProfile, config: DriftConfig) -> bool:
    """Whether any numeric feature would get the KS test, given samples: the question
    that decides whether a selection's raw samples are worth reading."""
    if profile.samples is None:
        return False
    small = profile.rows <= config.small_reference_rows
    for feat in profile.features:
        if not isinstance(feat, NumericProfile):
            continue
        method = config.per_feature_method.get(feat.name) or config.numeric_method
        # 'auto' picks KS for a small reference (a feature binned by few values may still
        # be tested as categorical; reading the samples then costs a query, no more).
        if method == "ks" or (method == "auto" and small):
            return True
    return False


def drift_of(
    monitored: Monitored,
    merged: Merged,
    config: DriftConfig,
    current_samples: Sequence[Sequence[float]] = (),
) -> DriftReport | None:
    """The drift report of merged histograms; None when they hold no inference.

    An empty prediction or confidence histogram is left out rather than refused.
    `current_samples` (raw rows of the merged windows) give the KS test its current side
    when the profile carries reference rows; a feature given KS without enough of them
    gets the binned method (`compute_drift(..., binned_fallback=True)`).
    """
    hist = merged.histograms
    if merged.count == 0:
        return None
    if hist.predictions is not None and hist.predictions.sum() == 0:
        hist = Histograms(hist.features, None, hist.confidence)
    if hist.confidence is not None and hist.confidence.sum() == 0:
        hist = Histograms(hist.features, hist.predictions, None)
    reference = monitored.profile.sample_matrix()
    current = np.asarray(current_samples, dtype=np.float64) if len(current_samples) else None
    try:
        return compute_drift(
            monitored.profile,
            hist,
            config,
            reference_samples=None if current is None else reference,
            current_samples=None if reference is None else current,
            binned_fallback=True,
        )
    except (ProjectError, DataError) as exc:
        raise Conflict(
            f"drift of release {monitored.label} cannot be computed with the drift config in "
            f"effect: {exc}",
            code="drift-config",
        ) from exc


def parse_group(group: str) -> tuple[str, str]:
    key, sep, value = group.partition(":")
    if not sep or not key:
        raise Invalid(f"group {group!r}: expected tagkey:value, e.g. site:lab", field="group")
    return key, value


def parse_release(release: str) -> tuple[str, str]:
    name, sep, version = release.partition("@")
    if not sep or not name or not version:
        raise Invalid(
            f"release {release!r}: expected name@version, e.g. digits@1.0.0", field="release"
        )
    return name, version


def load_drift_config(path: Path) -> DriftConfig:
    """A DriftConfig from a YAML or JSON file; ProjectError naming the file when invalid.

    The file is either a DriftConfig itself or a tinyops project file, whose
    `monitoring.drift` is taken: the thresholds stay out of the signed bundle (changing
    one would otherwise need a new release version) and the server reads them from the
    project that made the releases.
    """
    import yaml
    from pydantic import ValidationError

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProjectError(f"drift config {path}: cannot read it: {exc}") from exc
    prefix: tuple[str, ...] = ()
    if isinstance(raw, dict) and "monitoring" in raw:
        monitoring = raw["monitoring"]
        raw = monitoring.get("drift") if isinstance(monitoring, dict) else monitoring
        prefix = ("monitoring", "drift")
    try:
        return DriftConfig.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in (*prefix, *first["loc"])) or "(top level)"
        raise ProjectError(f"drift config {path}: {where}: {first['msg']}") from exc


def _time_range(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The window [start, end] of a drift query: `end` defaults to now, `start` to a day
    before `end`; Invalid (422) naming the field when start is not before end, or when a
    default start would fall before year 1 (an `end` near datetime.min)."""
    end = end or now
    if start is None:
        try:
            start = end - DEFAULT_RANGE
        except OverflowError:
            raise Invalid(
                f"end {end.isoformat()} leaves no room for the default range of "
                f"{DEFAULT_RANGE.days} day before it: give start",
                field="end",
            ) from None
    if start >= end:
        raise Invalid("start must be before end", field="start")
    return start, end


# ---------------------------------------------------------------------------- the service


class DriftService:
    """Drift monitoring over the fleet store (thread-safe; called from worker threads)."""

    def __init__(self, store: Store, config: DriftConfig | None = None) -> None:
        self.store = store
        self.config = config
        # Parsed profiles by release id (releases are immutable).
        self._parsed: dict[int, Monitored] = {}
        self._release_ids: dict[tuple[str, str, str], int] = {}

    def config_for(self, monitored: Monitored) -> DriftConfig:
        """The release policy's drift config, else the server's, else the defaults."""
        return monitored.extras.drift or self.config or DriftConfig()

    def judge(self, monitored: Monitored, merged: Merged) -> tuple[DriftReport | None, int]:
        """The drift report of merged windows with the config in effect, and the number of
        raw samples its KS tests read (0 when no feature wants KS or none were sent)."""
        config = self.config_for(monitored)
        samples: list[list[float]] = []
        if merged.count and wants_ks(monitored.profile, config):
            samples = self.store.drift.sample_features(merged.window_ids, MAX_KS_SAMPLES)
        return drift_of(monitored, merged, config, samples), len(samples)

    def monitored(self, release: MonitoredRelease) -> Monitored:
        found = self._parsed.get(release.release_id)
        if found is None:
            found = parse_monitored(release)
            self._parsed[release.release_id] = found
        return found

    def monitored_by_id(self, release_id: int) -> Monitored | None:
        found = self._parsed.get(release_id)
        if found is not None:
            return found
        release = self.store.drift.release_monitoring(release_id)
        return None if release is None else self.monitored(release)

    # --- ingestion -----------------------------------------------------------------------

    def ingest(self, device: DeviceCredential, body: SketchIn, now: datetime) -> tuple[int, bool]:
        """Check and store a device's sketch; (window id, created). Nothing stored on error.

        (The server's request path checks with `check` and stores through the runtime's
        SketchWriter, which commits concurrent sketches together.)"""
        return self.store.drift.add_sketch(self.check(device, body), now)

    def check_cached(self, device: DeviceCredential, body: SketchIn) -> SketchWrite | None:
        """`check` without any database read, or None when that needs one (the release's
        id or profile is not cached yet): cheap enough for the event loop."""
        installed = device.installed
        if installed is not None and (installed.name, installed.version) == (
            body.release.name,
            body.release.version,
        ):
            release_id = self._release_ids.get((installed.name, installed.version, device.hardware))
            monitored = None if release_id is None else self._parsed.get(release_id)
            if monitored is None:
                return None
        return self.check(device, body)

    def check(self, device: DeviceCredential, body: SketchIn) -> SketchWrite:
        """A device's sketch as a store write, checked against its release's profile;
        Conflict (409) or Invalid (422) naming the field when it does not fit."""
        name, version = body.release.name, body.release.version
        installed = device.installed
        if installed is None or (installed.name, installed.version) != (name, version):
            runs = "no release" if installed is None else f"{installed.name} {installed.version}"
            raise Conflict(
                f"release {name} {version}: device {device.device_id!r} runs {runs} as far "
                "as the server knows; sketches are accepted for the installed release only",
                field="release",
                code="release-not-installed",
            )
        key = (name, version, device.hardware)
        release_id = self._release_ids.get(key)
        if release_id is None:
            record = self.store.find_release(name, version, device.hardware)
            if record is None:
                raise Conflict(
                    f"release {name} {version} for {device.hardware} was never uploaded to "
                    "this server: it has no reference profile to compare with",
                    field="release",
                    code="no-profile",
                )
            release_id = self._release_ids.setdefault(key, record.id)
        monitored = self.monitored_by_id(release_id)
        if monitored is None:
            raise Conflict(
                f"release {name} {version} has no reference profile (its bundle has no "
                "monitoring/profile.json): rebuild it with a current tinyops to monitor drift",
                field="release",
                code="no-profile",
            )
        return check_sketch(monitored, device.device_id, body)

    # --- reports -------------------------------------------------------------------------

    def releases(self, release: str, target: str | None) -> list[Monitored]:
        """The monitored releases `name@version` (one per target), sharing one profile."""
        name, version = parse_release(release)
        found = [
            self.monitored(r) for r in self.store.drift.monitored_releases(name, version, target)
        ]
        if not found:
            exists = any(
                r.version == version and (target is None or r.target == target)
                for r in self.store.list_releases(name)
            )
            if exists:
                raise Conflict(
                    f"release {release} has no reference profile (its bundle has no "
                    "monitoring/profile.json)",
                    field="release",
                    code="no-profile",
                )
            raise NotFound(f"no release {release}" + (f" for {target}" if target else ""))
        first = found[0].release.profile
        if any(m.release.profile != first for m in found[1:]):
            targets = ", ".join(m.release.target for m in found)
            raise Conflict(
                f"release {release} exists for {targets} with different reference profiles: "
                "choose one with ?target=",
                field="target",
            )
        return found

    def _selected(
        self,
        monitored: Sequence[Monitored],
        start: datetime,
        end: datetime,
        device: str | None,
        group: str | None,
    ) -> list[WindowRow]:
        rows = self.store.drift.windows([m.release.release_id for m in monitored], start, end)
        if device is not None:
            rows = [r for r in rows if r.device_id == device]
        if group is not None:
            key, value = parse_group(group)
            tags = self.store.drift.device_tags(sorted({r.device_id for r in rows}))
            rows = [r for r in rows if tags.get(r.device_id, {}).get(key) == value]
        return rows

    def report(
        self,
        release: str,
        *,
        target: str | None = None,
        device: str | None = None,
        group: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        now: datetime,
    ) -> dict[str, Any]:
        """Drift of a selection's merged windows against the release's reference."""
        if device is not None and group is not None:
            raise Invalid("give device or group, not both", field="group")
        start, end = _time_range(start, end, now)
        monitored = self.releases(release, target)
        first = monitored[0]
        rows = self._selected(monitored, start, end, device, group)
        merged = merge_windows(first, rows)
        report, n_samples = (None, 0) if merged is None else self.judge(first, merged)
        ids = [m.release.release_id for m in monitored]
        by_device = self.store.drift.accuracy_by_device(ids, start, end)
        selected_devices = {r.device_id for r in rows}
        labeled = correct = 0
        for d, (n, k) in by_device.items():
            if d in selected_devices:
                labeled, correct = labeled + n, correct + k
        return {
            "release": {
                "name": first.release.name,
                "version": first.release.version,
                "targets": [m.release.target for m in monitored],
            },
            "selection": {"device": device, "group": group},
            "window": {"start": start, "end": end},
            "windows": 0 if merged is None else merged.windows,
            "devices": 0 if merged is None else merged.devices,
            "count": 0 if merged is None else merged.count,
            "samples": n_samples,
            "report": None if report is None else report.to_dict(),
            "histograms": None if merged is None else merged.histograms.to_dict(),
            "performance": {
                "labeled": labeled,
                "correct": correct,
                "accuracy": correct / labeled if labeled else None,
                "reference_accuracy": first.extras.reference_accuracy,
            },
        }

    def device_verdicts(
        self,
        release: str,
        *,
        target: str | None = None,
        group: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        after: str | None = None,
        limit: int = 100,
        now: datetime,
    ) -> dict[str, Any]:
        """Per device of the selection: its merged windows' verdicts, one page by device id."""
        start, end = _time_range(start, end, now)
        monitored = self.releases(release, target)
        first = monitored[0]
        per_device: dict[str, list[WindowRow]] = defaultdict(list)
        for row in self._selected(monitored, start, end, None, group):
            per_device[row.device_id].append(row)
        device_ids = sorted(d for d in per_device if after is None or d > after)
        page = device_ids[:limit]
        out = []
        for device_id in page:
            merged = merge_windows(first, per_device[device_id])
            assert merged is not None
            report, _samples = self.judge(first, merged)
            out.append(_verdict(device_id, merged, report))
        return {
            "release": {"name": first.release.name, "version": first.release.version},
            "window": {"start": start, "end": end},
            "devices": out,
            "next_after": page[-1] if len(device_ids) > limit else None,
        }

    def profile(self, release: str, target: str | None) -> dict[str, Any]:
        monitored = self.releases(release, target)[0]
        return {
            "release": {"name": monitored.release.name, "version": monitored.release.version},
            "profile": monitored.release.profile,
            "policy": monitored.release.policy,
            "config": self.config_for(monitored).model_dump(mode="json"),
        }

    # --- feedback and labeled samples ----------------------------------------------------

    def feedback(self, body: FeedbackIn, actor: str, now: datetime) -> int:
        name, version = body.release.name, body.release.version
        monitored = self.releases(f"{name}@{version}", None)
        classes = monitored[0].n_classes
        if classes is not None:
            for i, item in enumerate(body.items):
                if item.label >= classes:
                    raise Invalid(
                        f"items[{i}].label {item.label} is not a class index 0..{classes - 1}",
                        field=f"items[{i}].label",
                    )
        items = [FeedbackItem(i.prediction_id, i.label) for i in body.items]
        return self.store.drift.add_feedback(
            [m.release.release_id for m in monitored], body.device, items, actor, now
        )

    def add_samples(self, body: SamplesIn, actor: str, now: datetime) -> tuple[int, int]:
        items = list(_labeled_items(body))
        accepted, total, _last = self.store.drift.add_samples(body.dataset, items, actor, now)
        return accepted, total

    def samples(
        self, dataset: str, since_id: int, limit: int
    ) -> tuple[list[LabeledRecord], int | None]:
        records = self.store.drift.samples(dataset, since_id, limit)
        return records, (records[-1].id if len(records) == limit else None)


def _verdict(device_id: str, merged: Merged, report: DriftReport | None) -> dict[str, Any]:
    return {
        "device": device_id,
        "windows": merged.windows,
        "count": merged.count,
        "dataset_drift": None if report is None else report.dataset_drift,
        "drift_share": None if report is None else report.drift_share,
        "drifted_features": [] if report is None else list(report.drifted_features),
        "prediction_drift": None
        if report is None or report.prediction is None
        else report.prediction.drifted,
        "confidence_drift": None
        if report is None or report.confidence is None
        else report.confidence.drifted,
    }


def _labeled_items(body: SamplesIn) -> Iterable[LabeledItem]:
    """The items, checked for one shape within the request (Invalid naming the item)."""
    first = body.items[0]
    for i, item in enumerate(body.items):
        if (item.features is None) == (item.values is None):
            raise Invalid(
                f"items[{i}]: give 'features' (a list of numbers) or 'values' (an object of "
                "named numbers), exactly one",
                field=f"items[{i}].features",
            )
        if item.features is not None and (
            first.features is None or len(item.features) != len(first.features)
        ):
            raise Invalid(
                f"items[{i}].features: every item of a request has as many features as items[0]",
                field=f"items[{i}].features",
            )
        if item.values is not None and (
            first.values is None or sorted(item.values) != sorted(first.values)
        ):
            raise Invalid(
                f"items[{i}].values: every item of a request names the same values as items[0]",
                field=f"items[{i}].values",
            )
        if isinstance(item.label, str) != isinstance(first.label, str):
            raise Invalid(
                f"items[{i}].label: class indices and class names do not mix in one dataset",
                field=f"items[{i}].label",
            )
        yield LabeledItem(
            features=None if item.features is None else list(item.features),
            values=None if item.values is None else dict(item.values),
            label=item.label,
            device_id=item.device,
            t=item.t,
        )
