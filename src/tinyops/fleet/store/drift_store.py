"""The drift-monitoring part of the fleet store: profiles, sketch windows, feedback, labeled data.

`Store` holds one `DriftStore` as `store.drift`; it shares the store's engines and, like
it, runs every public method in one transaction and raises a `FleetError` (rolling back)
on a refusal, so a refused request stores nothing.

Storage layout, chosen for the one query that matters, "sum the histograms of release R
over devices D between times A and B":

    sketch_windows   one row per (device, release, window). `counts` holds every
                     feature's bin counts concatenated in the profile's feature order, so
                     all rows of a release have the same length and the sum over any
                     selection is one NumPy sum; the rows are found through the index
                     (release_id, window_end). A window is identified by (device,
                     release, start): a device that retries an upload whose answer it
                     lost gets the same window id back instead of a double count.

The validation of a sketch against its release's profile (bin counts, totals, feature
names) happens before the store sees it (`tinyops.fleet.server.drift_service`); the store
checks only what needs the database (duplicate windows and prediction ids, unknown
predictions in feedback, a dataset's shape).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import case, func, insert, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tinyops.fleet.store import schema as t
from tinyops.fleet.store.errors import Conflict, FleetError, Invalid
from tinyops.security.audit import AuditAction

# Rows per page of labeled samples, at most.
MAX_SAMPLES_PAGE: Final = 1000
# Window ids per IN (...) list: far below SQLite's 32,766 bound parameters.
IDS_PER_QUERY: Final = 5000

Transaction = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class MonitoredRelease:
    """A release whose bundle carried a reference profile and a monitoring policy."""

    release_id: int
    name: str
    version: str
    target: str
    profile: dict[str, Any]
    policy: dict[str, Any]


@dataclass(frozen=True)
class SampleWrite:
    """A raw sample a device sent with a window (its sampling policy allowing it)."""

    prediction_id: str | None
    prediction: int
    features: list[float]


@dataclass(frozen=True)
class SketchWrite:
    """One validated sketch: a window of one device running one release."""

    device_id: str
    release_id: int
    window_start: datetime
    window_end: datetime
    count: int
    counts: list[int]
    """Every feature's counts, concatenated in the profile's feature order."""
    predictions: list[int] | None
    confidence: list[int] | None
    samples: Sequence[SampleWrite] = ()


@dataclass(frozen=True)
class WindowRow:
    id: int
    device_id: str
    release_id: int
    window_start: datetime
    window_end: datetime
    count: int
    counts: list[int]
    predictions: list[int] | None
    confidence: list[int] | None


@dataclass(frozen=True)
class FeedbackItem:
    prediction_id: str
    label: int


@dataclass(frozen=True)
class LabeledItem:
    """One newly labeled sample: a feature vector or named values, and its label."""

    features: list[float] | None
    values: dict[str, float] | None
    label: int | str
    device_id: str | None = None
    t: datetime | None = None


@dataclass(frozen=True)
class LabeledRecord:
    id: int
    dataset: str
    features: list[float] | None
    values: dict[str, float] | None
    label: int | str
    device_id: str | None
    t: datetime | None
    received_at: datetime


@functools.cache
def _window_insert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id of a window (built once: building the
    statement cost more than running it)."""
    upsert = sqlite_insert if dialect == "sqlite" else postgresql_insert
    return (
        upsert(t.SketchWindow)
        .on_conflict_do_nothing(index_elements=["device_id", "release_id", "window_start"])
        .returning(t.SketchWindow.id)
    )


def _same_content(a: t.SketchWindow | SketchWrite, b: SketchWrite) -> bool:
    """Whether two reports of one window (device, release, start) say the same."""
    return (
        a.window_end == b.window_end
        and a.count == b.count
        and a.counts == b.counts
        and a.predictions == b.predictions
        and a.confidence == b.confidence
    )


def _other_counts(write: SketchWrite, window_id: int) -> Conflict:
    return Conflict(
        f"device {write.device_id!r} already reported the window starting "
        f"{write.window_start.isoformat()} for this release, with other counts "
        f"(window {window_id}); a window is reported once",
        field="window.start",
    )


def _window(row: t.SketchWindow) -> WindowRow:
    return WindowRow(
        id=row.id,
        device_id=row.device_id,
        release_id=row.release_id,
        window_start=row.window_start,
        window_end=row.window_end,
        count=row.count,
        counts=row.counts,
        predictions=row.predictions,
        confidence=row.confidence,
    )


def _audit(
    s: Session, at: datetime, actor: str, action: AuditAction, target: str, after: dict[str, Any]
) -> None:
    s.add(t.AuditEntry(at=at, actor=actor, action=action.value, target=target, after=after))


class DriftStore:
    """Drift data in the fleet database (see the module docstring)."""

    def __init__(self, tx: Transaction, ro: Transaction) -> None:
        self._tx = tx
        self._ro = ro
        # Profiles never change once stored (releases are immutable): read each once.
        self._monitoring: dict[int, MonitoredRelease | None] = {}

    # --- release profiles ------------------------------------------------------------------

    @staticmethod
    def add_release_monitoring(
        s: Session, release_id: int, profile: Mapping[str, Any], policy: Mapping[str, Any]
    ) -> None:
        """Keep a release's profile and policy (in the release upload's transaction)."""
        s.add(
            t.ReleaseMonitoring(release_id=release_id, profile=dict(profile), policy=dict(policy))
        )

    def monitored_releases(
        self, name: str, version: str, target: str | None = None
    ) -> list[MonitoredRelease]:
        """The releases `name` `version` (on `target`, or every target) that have a profile."""
        with self._ro() as s:
            query = (
                select(t.Release, t.ReleaseMonitoring)
                .join(t.ReleaseMonitoring, t.ReleaseMonitoring.release_id == t.Release.id)
                .where(t.Release.name == name, t.Release.version == version)
                .order_by(t.Release.id)
            )
            if target is not None:
                query = query.where(t.Release.target == target)
            return [
                MonitoredRelease(r.id, r.name, r.version, r.target, m.profile, m.policy)
                for r, m in s.execute(query).tuples()
            ]

    def release_monitoring(self, release_id: int) -> MonitoredRelease | None:
        """The release's profile and policy; None when its bundle had none."""
        if release_id in self._monitoring:
            return self._monitoring[release_id]
        with self._ro() as s:
            row = s.execute(
                select(t.Release, t.ReleaseMonitoring)
                .join(t.ReleaseMonitoring, t.ReleaseMonitoring.release_id == t.Release.id)
                .where(t.Release.id == release_id)
            ).first()
        found = None
        if row is not None:
            r, m = row.tuple()
            found = MonitoredRelease(r.id, r.name, r.version, r.target, m.profile, m.policy)
            # Only a found profile is final: a release row may yet be committed.
            self._monitoring[release_id] = found
        return found

    # --- sketches ------------------------------------------------------------------------

    def add_sketch(self, write: SketchWrite, now: datetime) -> tuple[int, bool]:
        """Store a window and its samples; (window id, created).

        The same window again (device, release, start) with the same content is a retry:
        its id, not stored twice. With other content: Conflict.
        """
        try:
            with self._tx() as s:
                # One statement in the common case, INSERT ... ON CONFLICT DO NOTHING
                # RETURNING id (both databases); no id back means the window exists.
                # Core, not the ORM's bulk insert: a third of the cost of a sketch.
                connection = s.connection()
                window_id = connection.scalar(
                    _window_insert(connection.dialect.name),
                    {
                        "device_id": write.device_id,
                        "release_id": write.release_id,
                        "window_start": write.window_start,
                        "window_end": write.window_end,
                        "count": write.count,
                        "counts": write.counts,
                        "predictions": write.predictions,
                        "confidence": write.confidence,
                        "received_at": now,
                    },
                )
                if window_id is None:
                    existing = self._find_window(s, write)
                    assert existing is not None, "a conflicting window exists"
                    return self._same_window(existing, write), False
                if write.samples:
                    self._check_prediction_ids(s, write)
                    s.execute(
                        insert(t.PredictionSample),
                        [
                            {
                                "window_id": window_id,
                                "release_id": write.release_id,
                                "device_id": write.device_id,
                                "prediction_id": x.prediction_id,
                                "prediction": x.prediction,
                                "features": x.features,
                            }
                            for x in write.samples
                        ],
                    )
                return int(window_id), True
        except IntegrityError as exc:
            # A prediction id committed concurrently by a retry racing its original.
            raise Conflict(
                f"device {write.device_id!r} reported a prediction id of this sketch "
                "concurrently: retry the request",
                field="samples",
            ) from exc

    def add_sketches(
        self, writes: Sequence[SketchWrite], now: datetime
    ) -> list[tuple[int, bool] | FleetError]:
        """Store many sketches in ONE transaction (group commit); per write, what
        `add_sketch` would have answered: (window id, created) or the refusal.

        A refused write stores nothing and does not fail the others: every check that can
        refuse one (its window exists with other counts, a prediction id taken before or
        by an earlier write of the batch) runs before anything is written, so no savepoint
        is needed. Writes are judged in order, as if they had come one after another: a
        retry in the same batch as its original gets the original's id. Should the
        batch's insert still hit a unique constraint (another process writing the same
        database, which the server does not support), each write is stored on its own.
        """
        if not writes:
            return []
        try:
            with self._tx() as s:
                return self._add_batch(s, writes, now)
        except IntegrityError:
            one_by_one: list[tuple[int, bool] | FleetError] = []
            for write in writes:
                try:
                    one_by_one.append(self.add_sketch(write, now))
                except FleetError as exc:
                    one_by_one.append(exc)
            return one_by_one

    def _add_batch(
        self, s: Session, writes: Sequence[SketchWrite], now: datetime
    ) -> list[tuple[int, bool] | FleetError]:
        connection = s.connection()
        # The stored windows any write names (one query; exact keys matched here).
        existing: dict[tuple[str, int, datetime], t.SketchWindow] = {}
        keys = {(w.device_id, w.release_id, w.window_start) for w in writes}
        for row in s.scalars(
            select(t.SketchWindow).where(
                t.SketchWindow.device_id.in_({k[0] for k in keys}),
                t.SketchWindow.release_id.in_({k[1] for k in keys}),
                t.SketchWindow.window_start.in_({k[2] for k in keys}),
            )
        ):
            key = (row.device_id, row.release_id, row.window_start)
            if key in keys:
                existing[key] = row
        taken = self._taken_prediction_ids(s, writes)

        results: list[tuple[int, bool] | FleetError | None] = [None] * len(writes)
        inserting: dict[tuple[str, int, datetime], int] = {}  # key → index of its write
        retries: list[tuple[int, int]] = []  # (index, index of the write it repeats)
        for i, write in enumerate(writes):
            key = (write.device_id, write.release_id, write.window_start)
            try:
                if key in existing:
                    results[i] = (self._same_window(existing[key], write), False)
                elif key in inserting:
                    retries.append((i, inserting[key]))
                else:
                    claimed = self._claim_prediction_ids(write, taken)
                    taken |= claimed
                    inserting[key] = i
            except FleetError as exc:
                results[i] = exc
        order = list(inserting.values())
        if order:
            ids = connection.scalars(
                insert(t.SketchWindow).returning(t.SketchWindow.id, sort_by_parameter_order=True),
                [
                    {
                        "device_id": writes[i].device_id,
                        "release_id": writes[i].release_id,
                        "window_start": writes[i].window_start,
                        "window_end": writes[i].window_end,
                        "count": writes[i].count,
                        "counts": writes[i].counts,
                        "predictions": writes[i].predictions,
                        "confidence": writes[i].confidence,
                        "received_at": now,
                    }
                    for i in order
                ],
            ).all()
            samples = []
            for i, window_id in zip(order, ids, strict=True):
                results[i] = (int(window_id), True)
                write = writes[i]
                samples += [
                    {
                        "window_id": window_id,
                        "release_id": write.release_id,
                        "device_id": write.device_id,
                        "prediction_id": x.prediction_id,
                        "prediction": x.prediction,
                        "features": x.features,
                    }
                    for x in write.samples
                ]
            if samples:
                connection.execute(insert(t.PredictionSample), samples)
        for i, original in retries:
            stored = results[original]
            assert isinstance(stored, tuple)
            try:
                if not _same_content(writes[original], writes[i]):
                    raise _other_counts(writes[i], stored[0])
                results[i] = (stored[0], False)
            except FleetError as exc:
                results[i] = exc
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    @staticmethod
    def _taken_prediction_ids(
        s: Session, writes: Sequence[SketchWrite]
    ) -> set[tuple[str, int, str]]:
        """(device, release, prediction id) already stored, among the batch's ids."""
        ids = {x.prediction_id for w in writes for x in w.samples if x.prediction_id is not None}
        if not ids:
            return set()
        rows = s.execute(
            select(
                t.PredictionSample.device_id,
                t.PredictionSample.release_id,
                t.PredictionSample.prediction_id,
            ).where(
                t.PredictionSample.prediction_id.in_(ids),
                t.PredictionSample.device_id.in_({w.device_id for w in writes if w.samples}),
            )
        ).tuples()
        return {(d, r, p) for d, r, p in rows if p is not None}

    @staticmethod
    def _claim_prediction_ids(
        write: SketchWrite, taken: set[tuple[str, int, str]]
    ) -> set[tuple[str, int, str]]:
        """The write's prediction ids; Conflict naming the first one already reported."""
        claimed = set()
        for i, x in enumerate(write.samples):
            if x.prediction_id is None:
                continue
            key = (write.device_id, write.release_id, x.prediction_id)
            if key in taken:
                raise Conflict(
                    f"prediction id {x.prediction_id!r} was already reported by device "
                    f"{write.device_id!r} for this release: ids must be unique per device "
                    "and release",
                    field=f"samples[{i}].id",
                )
            claimed.add(key)
        return claimed

    @staticmethod
    def _check_prediction_ids(s: Session, write: SketchWrite) -> None:
        """Conflict naming the first sample whose id the device already reported."""
        ids = [x.prediction_id for x in write.samples if x.prediction_id is not None]
        if not ids:
            return
        taken = set(
            s.scalars(
                select(t.PredictionSample.prediction_id).where(
                    t.PredictionSample.release_id == write.release_id,
                    t.PredictionSample.device_id == write.device_id,
                    t.PredictionSample.prediction_id.in_(ids),
                )
            )
        )
        for i, x in enumerate(write.samples):
            if x.prediction_id in taken:
                raise Conflict(
                    f"prediction id {x.prediction_id!r} was already reported by device "
                    f"{write.device_id!r} for this release: ids must be unique per device "
                    "and release",
                    field=f"samples[{i}].id",
                )

    @staticmethod
    def _find_window(s: Session, write: SketchWrite) -> t.SketchWindow | None:
        return s.scalar(
            select(t.SketchWindow).where(
                t.SketchWindow.device_id == write.device_id,
                t.SketchWindow.release_id == write.release_id,
                t.SketchWindow.window_start == write.window_start,
            )
        )

    @staticmethod
    def _same_window(existing: t.SketchWindow, write: SketchWrite) -> int:
        if not _same_content(existing, write):
            raise _other_counts(write, existing.id)
        return existing.id

    def sample_features(self, window_ids: Sequence[int], limit: int) -> list[list[float]]:
        """The raw samples' feature rows of these windows, newest windows first, at most
        `limit` rows (the current side of the KS test)."""
        ids = sorted(set(window_ids), reverse=True)
        out: list[list[float]] = []
        with self._ro() as s:
            for at in range(0, len(ids), IDS_PER_QUERY):
                if len(out) >= limit:
                    break
                chunk = ids[at : at + IDS_PER_QUERY]
                out += s.scalars(
                    select(t.PredictionSample.features)
                    .where(t.PredictionSample.window_id.in_(chunk))
                    .order_by(t.PredictionSample.window_id.desc(), t.PredictionSample.id)
                    .limit(limit - len(out))
                )
        return out

    def windows(
        self, release_ids: Sequence[int], start: datetime, end: datetime
    ) -> list[WindowRow]:
        """The windows of these releases that lie within [start, end], oldest end first."""
        with self._ro() as s:
            rows = s.scalars(
                select(t.SketchWindow)
                .where(
                    t.SketchWindow.release_id.in_(list(release_ids)),
                    t.SketchWindow.window_end <= end,
                    t.SketchWindow.window_end > start,
                    t.SketchWindow.window_start >= start,
                )
                .order_by(t.SketchWindow.window_end, t.SketchWindow.id)
            )
            return [_window(r) for r in rows]

    def latest_windows(self, since: datetime) -> list[WindowRow]:
        """Each (device, release)'s newest window that ended after `since`."""
        with self._ro() as s:
            newest = (
                select(
                    t.SketchWindow.device_id,
                    t.SketchWindow.release_id,
                    func.max(t.SketchWindow.window_end).label("end"),
                )
                .where(t.SketchWindow.window_end > since)
                .group_by(t.SketchWindow.device_id, t.SketchWindow.release_id)
                .subquery()
            )
            rows = s.scalars(
                select(t.SketchWindow)
                .join(
                    newest,
                    (t.SketchWindow.device_id == newest.c.device_id)
                    & (t.SketchWindow.release_id == newest.c.release_id)
                    & (t.SketchWindow.window_end == newest.c.end),
                )
                .order_by(t.SketchWindow.release_id, t.SketchWindow.device_id, t.SketchWindow.id)
            )
            # Two windows ending at the same instant (a device whose clock jumped): the
            # later row wins, as the newer report.
            latest: dict[tuple[str, int], WindowRow] = {}
            for r in rows:
                latest[(r.device_id, r.release_id)] = _window(r)
            return list(latest.values())

    def windows_before(
        self, device_id: str, release_id: int, before_end: datetime, since: datetime, limit: int
    ) -> list[WindowRow]:
        """A device's windows of a release that ended in (since, before_end), newest first
        (at most `limit`): what a too-small latest window is summed with."""
        with self._ro() as s:
            rows = s.scalars(
                select(t.SketchWindow)
                .where(
                    t.SketchWindow.device_id == device_id,
                    t.SketchWindow.release_id == release_id,
                    t.SketchWindow.window_end < before_end,
                    t.SketchWindow.window_end > since,
                )
                .order_by(t.SketchWindow.window_end.desc(), t.SketchWindow.id.desc())
                .limit(limit)
            )
            return [_window(r) for r in rows]

    def device_tags(self, device_ids: Sequence[str] | None = None) -> dict[str, dict[str, str]]:
        """Tags by device (every device when `device_ids` is None)."""
        with self._ro() as s:
            query = select(t.Device.id, t.Device.tags)
            if device_ids is not None:
                query = query.where(t.Device.id.in_(list(device_ids)))
            return {d: dict(tags or {}) for d, tags in s.execute(query).tuples()}

    # --- feedback ------------------------------------------------------------------------

    def add_feedback(
        self,
        release_ids: Sequence[int],
        device_id: str,
        items: Sequence[FeedbackItem],
        actor: str,
        now: datetime,
    ) -> int:
        """Label sampled predictions of `device_id`; a later label replaces an earlier one.

        Invalid (422, naming the item) when a prediction id is unknown: nothing is stored.
        """
        with self._tx() as s:
            wanted = {item.prediction_id for item in items}
            samples = {
                pid: sid
                for pid, sid in s.execute(
                    select(t.PredictionSample.prediction_id, t.PredictionSample.id).where(
                        t.PredictionSample.release_id.in_(list(release_ids)),
                        t.PredictionSample.device_id == device_id,
                        t.PredictionSample.prediction_id.in_(wanted),
                    )
                ).tuples()
            }
            for i, item in enumerate(items):
                if item.prediction_id not in samples:
                    raise Invalid(
                        f"items[{i}].prediction_id {item.prediction_id!r}: device "
                        f"{device_id!r} sent no sample with this id for the release",
                        field=f"items[{i}].prediction_id",
                    )
            labels = {samples[item.prediction_id]: item.label for item in items}
            existing = {
                row.sample_id: row
                for row in s.scalars(
                    select(t.FeedbackLabel).where(t.FeedbackLabel.sample_id.in_(list(labels)))
                )
            }
            for sample_id, label in labels.items():
                row = existing.get(sample_id)
                if row is None:
                    s.add(
                        t.FeedbackLabel(
                            sample_id=sample_id, label=label, received_at=now, submitted_by=actor
                        )
                    )
                else:
                    row.label, row.received_at, row.submitted_by = label, now, actor
            _audit(
                s,
                now,
                actor,
                AuditAction.FEEDBACK_SUBMIT,
                f"device:{device_id}",
                {"release_ids": list(release_ids), "labels": len(labels)},
            )
            return len(labels)

    def accuracy_by_device(
        self, release_ids: Sequence[int], start: datetime, end: datetime
    ) -> dict[str, tuple[int, int]]:
        """(labeled, correct) per device, over samples of windows within [start, end]."""
        with self._ro() as s:
            query = (
                select(
                    t.PredictionSample.device_id,
                    func.count(),
                    func.sum(
                        case((t.FeedbackLabel.label == t.PredictionSample.prediction, 1), else_=0)
                    ),
                )
                .select_from(t.FeedbackLabel)
                .join(t.PredictionSample, t.PredictionSample.id == t.FeedbackLabel.sample_id)
                .join(t.SketchWindow, t.SketchWindow.id == t.PredictionSample.window_id)
                .where(
                    t.PredictionSample.release_id.in_(list(release_ids)),
                    t.SketchWindow.window_end <= end,
                    t.SketchWindow.window_end > start,
                    t.SketchWindow.window_start >= start,
                )
                .group_by(t.PredictionSample.device_id)
            )
            return {d: (int(n), int(k or 0)) for d, n, k in s.execute(query).tuples()}

    def accuracy_by_release(self, since: datetime) -> dict[int, tuple[int, int]]:
        """(labeled, correct) per release id, over samples of windows that ended after `since`."""
        with self._ro() as s:
            query = (
                select(
                    t.PredictionSample.release_id,
                    func.count(),
                    func.sum(
                        case((t.FeedbackLabel.label == t.PredictionSample.prediction, 1), else_=0)
                    ),
                )
                .select_from(t.FeedbackLabel)
                .join(t.PredictionSample, t.PredictionSample.id == t.FeedbackLabel.sample_id)
                .join(t.SketchWindow, t.SketchWindow.id == t.PredictionSample.window_id)
                .where(t.SketchWindow.window_end > since)
                .group_by(t.PredictionSample.release_id)
            )
            return {r: (int(n), int(k or 0)) for r, n, k in s.execute(query).tuples()}

    # --- labeled samples -----------------------------------------------------------------

    def add_samples(
        self, dataset: str, items: Sequence[LabeledItem], actor: str, now: datetime
    ) -> tuple[int, int, int]:
        """Append labeled samples to `dataset`; (accepted, dataset total, last id).

        Every sample of a dataset has the same shape as its first one: as many features,
        or the same value names, and a label of the same kind (class index or name).
        Invalid (422, naming the item) otherwise; nothing is stored then.
        """
        with self._tx() as s:
            first = s.scalar(
                select(t.LabeledSample)
                .where(t.LabeledSample.dataset == dataset)
                .order_by(t.LabeledSample.id)
                .limit(1)
            )
            if first is not None:
                _check_shape(first, items, dataset)
            rows = [
                t.LabeledSample(
                    dataset=dataset,
                    feature_values=item.features,
                    named_values=item.values,
                    label=item.label,
                    device_id=item.device_id,
                    t=item.t,
                    received_at=now,
                    submitted_by=actor,
                )
                for item in items
            ]
            s.add_all(rows)
            s.flush()
            total = int(
                s.scalar(
                    select(func.count())
                    .select_from(t.LabeledSample)
                    .where(t.LabeledSample.dataset == dataset)
                )
                or 0
            )
            ids = [r.id for r in rows]
            _audit(
                s,
                now,
                actor,
                AuditAction.SAMPLES_SUBMIT,
                f"dataset:{dataset}",
                {"accepted": len(rows), "first_id": min(ids), "last_id": max(ids), "total": total},
            )
            return len(rows), total, max(ids)

    def samples(self, dataset: str, since_id: int, limit: int) -> list[LabeledRecord]:
        """The dataset's samples with id > since_id, oldest first, at most `limit`."""
        limit = max(1, min(limit, MAX_SAMPLES_PAGE))
        with self._ro() as s:
            rows = s.scalars(
                select(t.LabeledSample)
                .where(t.LabeledSample.dataset == dataset, t.LabeledSample.id > since_id)
                .order_by(t.LabeledSample.id)
                .limit(limit)
            )
            return [
                LabeledRecord(
                    r.id,
                    r.dataset,
                    r.feature_values,
                    r.named_values,
                    r.label,
                    r.device_id,
                    r.t,
                    r.received_at,
                )
                for r in rows
            ]


def _check_shape(first: t.LabeledSample, items: Sequence[LabeledItem], dataset: str) -> None:
    """Invalid naming the first item whose shape differs from the dataset's first sample."""
    for i, item in enumerate(items):
        if first.feature_values is not None:
            n = len(first.feature_values)
            if item.features is None or len(item.features) != n:
                raise Invalid(
                    f"items[{i}]: dataset {dataset!r} holds samples of {n} features "
                    "('features' lists); this one differs",
                    field=f"items[{i}].features",
                )
        else:
            names = sorted(first.named_values or {})
            if item.values is None or sorted(item.values) != names:
                raise Invalid(
                    f"items[{i}]: dataset {dataset!r} holds samples with the values {names}; "
                    "this one differs",
                    field=f"items[{i}].values",
                )
        if isinstance(first.label, str) != isinstance(item.label, str):
            kind = "class names (strings)" if isinstance(first.label, str) else "class indices"
            raise Invalid(
                f"items[{i}].label: dataset {dataset!r} is labeled with {kind}",
                field=f"items[{i}].label",
            )
