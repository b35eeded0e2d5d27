"""Stateful evaluation of alert rules over metric samples (no I/O).

Samples arrive as `MetricFrame`s: all series of one metric with the same label names, as
a list of label-value rows and a NumPy array of values. A rule is then a handful of array
operations over its metric's frames — matchers (computed once per distinct label value),
the optional aggregation (bincount per `by` group), the comparison — and only the series
whose condition holds become Python objects. 100,000 devices × 10 rules is a few hundred
milliseconds (docs/benchmarks.md); `frames_from_samples` turns the `Sample`s of any
`MetricSource` into frames.

Each (rule, label set) is an alert with a state, as in Prometheus:

    inactive ─ condition true ─► pending ─ true for `for` ─► firing ─ false ─► resolved
                 (for = 0: straight to firing)   │ false: dropped        │
                                                                   keep_firing_for:
                                                  stays firing until it has been false
                                                  for that long (flapping protection)

A resolved alert is listed for RESOLVED_RETENTION_S, then forgotten; if its condition
holds again it starts over as pending. Notifications (`AlertEvent`s) are deduplicated the
Alertmanager way: one when an alert starts firing, one when it resolves, and while it
keeps firing one more every `repeat_interval` — never one per evaluation.

An alert's labels are the series labels (empty ones dropped, as Prometheus does), the
rule's `labels`, `alertname` and `severity`; its fingerprint is the first 16 hex digits
of sha256 over the rule name and those sorted labels, stable across restarts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from tinyops.monitor.alerts.rules import AlertRule, RulesFile, Template
from tinyops.monitor.series import Sample

# How long a resolved alert stays listed (Prometheus keeps resolved alerts 15 minutes).
RESOLVED_RETENTION_S: Final = 15 * 60.0
AlertStatus = Literal["pending", "firing", "resolved"]
LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class MetricFrame:
    """The series of one metric that share label names: rows of label values, and values."""

    metric: str
    label_names: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    values: NDArray[np.float64]

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.values):
            raise ValueError(
                f"{self.metric}: {len(self.rows)} label rows but {len(self.values)} values"
            )

    def __len__(self) -> int:
        return len(self.rows)

    def samples(self) -> list[Sample]:
        """The frame as `Sample`s (empty labels dropped)."""
        return [
            Sample(
                self.metric,
                {k: v for k, v in zip(self.label_names, row, strict=True) if v},
                float(value),
            )
            for row, value in zip(self.rows, self.values.tolist(), strict=True)
        ]


def frames_from_samples(samples: Iterable[Sample]) -> list[MetricFrame]:
    """Group samples into frames by (metric, label names)."""
    groups: dict[tuple[str, tuple[str, ...]], tuple[list[tuple[str, ...]], list[float]]] = {}
    for sample in samples:
        names = tuple(sample.labels)  # Sample sorts its labels
        rows, values = groups.setdefault((sample.metric, names), ([], []))
        rows.append(tuple(sample.labels.values()))
        values.append(sample.value)
    return [
        MetricFrame(metric, names, rows, np.asarray(values, dtype=np.float64))
        for (metric, names), (rows, values) in groups.items()
    ]


@dataclass(frozen=True)
class Alert:
    """An alert as listed and notified: a snapshot of its state."""

    rule: str
    severity: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertStatus
    value: float
    active_at: datetime
    """When its condition started to hold (it became pending)."""
    fired_at: datetime | None
    resolved_at: datetime | None
    fingerprint: str

    @property
    def since(self) -> datetime:
        """When it entered its current state."""
        if self.state == "resolved" and self.resolved_at is not None:
            return self.resolved_at
        if self.state == "firing" and self.fired_at is not None:
            return self.fired_at
        return self.active_at

    @property
    def summary(self) -> str:
        return self.annotations.get("summary", "")


@dataclass(frozen=True)
class AlertEvent:
    """A notification to send: an alert started firing, is still firing (repeat), resolved."""

    status: Literal["firing", "resolved"]
    alert: Alert
    repeat: bool = False


@dataclass
class _State:
    key: LabelKey
    labels: dict[str, str]
    fingerprint: str
    status: AlertStatus
    value: float
    active_at: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    keep_firing_since: datetime | None = None
    notified_at: datetime | None = None


@dataclass
class _CompiledRule:
    rule: AlertRule
    templates: dict[str, Template]
    regexes: dict[str, re.Pattern[str]]
    for_: timedelta
    keep_firing_for: timedelta
    static: dict[str, str]
    states: dict[LabelKey, _State] = field(default_factory=dict)


def fingerprint(rule: str, labels: Mapping[str, str]) -> str:
    """sha256 over the rule name and the sorted labels, first 16 hex digits."""
    digest = hashlib.sha256(rule.encode())
    for name, value in sorted(labels.items()):
        digest.update(b"\xff" + name.encode() + b"\xfe" + value.encode())
    return digest.hexdigest()[:16]


class AlertEvaluator:
    """Runs the rules of a rules file, keeping each alert's state between evaluations."""

    def __init__(
        self, rules: RulesFile | Sequence[AlertRule], repeat_interval_s: float | None = None
    ) -> None:
        if isinstance(rules, RulesFile):
            rule_list = rules.rules()
            repeat = rules.repeat_interval_s if repeat_interval_s is None else repeat_interval_s
        else:
            rule_list = list(rules)
            repeat = 4 * 3600.0 if repeat_interval_s is None else repeat_interval_s
        self.repeat_interval = timedelta(seconds=repeat)
        self._rules = [
            _CompiledRule(
                rule=rule,
                templates=rule.templates(),
                regexes={k: re.compile(v) for k, v in rule.match_re.items()},
                for_=timedelta(seconds=rule.for_s),
                keep_firing_for=timedelta(seconds=rule.keep_firing_for_s),
                static={**rule.labels, "alertname": rule.name, "severity": rule.severity},
            )
            for rule in rule_list
        ]

    @property
    def rules(self) -> list[AlertRule]:
        return [c.rule for c in self._rules]

    # --- evaluation -----------------------------------------------------------------------

    def evaluate(self, frames: Iterable[MetricFrame | Sample], now: datetime) -> list[AlertEvent]:
        """Advance every alert to `now` given the current samples; the notifications due."""
        by_metric: dict[str, list[MetricFrame]] = {}
        loose: list[Sample] = []
        for item in frames:
            if isinstance(item, MetricFrame):
                by_metric.setdefault(item.metric, []).append(item)
            else:
                loose.append(item)
        for frame in frames_from_samples(loose):
            by_metric.setdefault(frame.metric, []).append(frame)
        events: list[AlertEvent] = []
        for compiled in self._rules:
            active = self._active_series(compiled, by_metric.get(compiled.rule.metric, []))
            self._advance(compiled, active, now, events)
        return events

    def _active_series(
        self, compiled: _CompiledRule, frames: Sequence[MetricFrame]
    ) -> dict[LabelKey, float]:
        """The series (label key → value) whose condition holds now."""
        rule = compiled.rule
        if rule.aggregate is None:
            active: dict[LabelKey, float] = {}
            for frame in frames:
                mask = self._matching(compiled, frame)
                if mask is None:
                    continue
                mask &= _compare(rule.condition.op, frame.values, rule.condition.threshold)
                names = frame.label_names
                for i in np.flatnonzero(mask).tolist():
                    row = frame.rows[i]
                    key = tuple((n, v) for n, v in zip(names, row, strict=True) if v)
                    active[key] = float(frame.values[i])
            return active
        return self._aggregated(compiled, frames)

    def _aggregated(
        self, compiled: _CompiledRule, frames: Sequence[MetricFrame]
    ) -> dict[LabelKey, float]:
        rule = compiled.rule
        groups: dict[LabelKey, int] = {}
        codes_parts: list[NDArray[np.int64]] = []
        values_parts: list[NDArray[np.float64]] = []
        for frame in frames:
            mask = self._matching(compiled, frame)
            if mask is None:
                continue
            index = np.flatnonzero(mask)
            rows = frame.rows
            selected = rows if len(index) == len(rows) else [rows[i] for i in index.tolist()]
            # The `by` labels this frame has (one it lacks is empty: absent). Rows are
            # grouped on their raw value tuples in C loops (dict.fromkeys, map); only the
            # distinct tuples become label keys.
            present = [(n, frame.label_names.index(n)) for n in rule.by if n in frame.label_names]
            if present:
                getter = itemgetter(*(p for _n, p in present))
                raw: list[Any] = list(map(getter, selected))
            else:
                raw = [()] * len(selected)
            local: dict[Any, int] = {}
            for distinct in dict.fromkeys(raw):
                values_of = (distinct,) if len(present) == 1 else distinct
                key = tuple((n, v) for (n, _p), v in zip(present, values_of, strict=True) if v)
                local[distinct] = groups.setdefault(key, len(groups))
            codes = np.fromiter(map(local.__getitem__, raw), dtype=np.int64, count=len(raw))
            codes_parts.append(codes)
            values_parts.append(frame.values[index])
        if not groups:
            return {}
        codes = np.concatenate(codes_parts)
        values = np.concatenate(values_parts)
        n = len(groups)
        counts = np.bincount(codes, minlength=n).astype(np.float64)
        op = rule.aggregate
        result: NDArray[np.float64]
        if op == "count":
            result = counts
        elif op in ("sum", "avg"):
            sums = np.bincount(codes, weights=values, minlength=n).astype(np.float64)
            result = sums if op == "sum" else sums / np.maximum(counts, 1.0)
        elif op == "max":
            result = np.full(n, -np.inf)
            np.maximum.at(result, codes, values)
        else:
            result = np.full(n, np.inf)
            np.minimum.at(result, codes, values)
        holds = _compare(rule.condition.op, result, rule.condition.threshold)
        keys = list(groups)
        return {keys[g]: float(result[g]) for g in np.flatnonzero(holds).tolist()}

    @staticmethod
    def _matching(compiled: _CompiledRule, frame: MetricFrame) -> NDArray[np.bool_] | None:
        """Rows of `frame` that pass the rule's matchers; None when none can."""
        tests: list[tuple[str, Callable[[str], bool]]] = [
            (label, wanted.__eq__) for label, wanted in compiled.rule.match.items()
        ]
        tests += [(label, _full_match(pattern)) for label, pattern in compiled.regexes.items()]
        mask = np.ones(len(frame), dtype=bool)
        for label, test in tests:
            if label not in frame.label_names:
                # An absent label is the empty string (Prometheus): `match: {x: ""}` holds.
                if not test(""):
                    return None
                continue
            column = list(map(itemgetter(frame.label_names.index(label)), frame.rows))
            # Each distinct value is tested once: 100,000 devices share a few releases.
            verdict = {value: bool(test(value)) for value in set(column)}
            mask &= np.fromiter(map(verdict.__getitem__, column), dtype=bool, count=len(column))
        return mask

    def _advance(
        self,
        compiled: _CompiledRule,
        active: Mapping[LabelKey, float],
        now: datetime,
        events: list[AlertEvent],
    ) -> None:
        rule = compiled.rule
        states = compiled.states
        for key, value in active.items():
            state = states.get(key)
            if state is None or state.status == "resolved":
                labels = {**dict(key), **compiled.static}
                state = _State(key, labels, fingerprint(rule.name, labels), "pending", value, now)
                states[key] = state
            state.value = value
            state.keep_firing_since = None
            if state.status == "pending" and now - state.active_at >= compiled.for_:
                state.status = "firing"
                state.fired_at = now
                state.notified_at = now
                events.append(AlertEvent("firing", self._snapshot(compiled, state)))
        for key in [k for k in states if k not in active]:
            state = states[key]
            if state.status == "pending":
                del states[key]
            elif state.status == "firing":
                if compiled.keep_firing_for:
                    if state.keep_firing_since is None:
                        state.keep_firing_since = now
                    if now - state.keep_firing_since < compiled.keep_firing_for:
                        continue
                state.status = "resolved"
                state.resolved_at = now
                events.append(AlertEvent("resolved", self._snapshot(compiled, state)))
            elif (
                state.resolved_at is not None
                and (now - state.resolved_at).total_seconds() >= RESOLVED_RETENTION_S
            ):
                del states[key]
        for state in states.values():
            if (
                state.status == "firing"
                and state.notified_at is not None
                and now - state.notified_at >= self.repeat_interval
            ):
                state.notified_at = now
                events.append(AlertEvent("firing", self._snapshot(compiled, state), repeat=True))

    @staticmethod
    def _snapshot(compiled: _CompiledRule, state: _State) -> Alert:
        # Annotations see the expression's labels (not the rule's own), as in Prometheus.
        series = dict(state.key)
        return Alert(
            rule=compiled.rule.name,
            severity=compiled.rule.severity,
            labels=dict(state.labels),
            annotations={k: t.render(series, state.value) for k, t in compiled.templates.items()},
            state=state.status,
            value=state.value,
            active_at=state.active_at,
            fired_at=state.fired_at,
            resolved_at=state.resolved_at,
            fingerprint=state.fingerprint,
        )

    # --- reading --------------------------------------------------------------------------

    def alerts(self, state: AlertStatus | None = None) -> list[Alert]:
        """Current alerts (pending, firing and recently resolved), by rule then labels."""
        out = []
        for compiled in self._rules:
            for key in sorted(compiled.states):
                st = compiled.states[key]
                if state is None or st.status == state:
                    out.append(self._snapshot(compiled, st))
        return out

    def firing_counts(self) -> dict[tuple[str, str], int]:
        """(rule, severity) → alerts firing, for every rule (0 when none)."""
        return {
            (c.rule.name, c.rule.severity): sum(
                1 for s in c.states.values() if s.status == "firing"
            )
            for c in self._rules
        }


def _full_match(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    """A label test: the whole value matches (PromQL regexes are anchored)."""

    def test(value: str) -> bool:
        return pattern.fullmatch(value) is not None

    return test


def _compare(op: str, values: NDArray[np.float64], threshold: float) -> NDArray[np.bool_]:
    # NaN compares false everywhere (as in PromQL), so a NaN sample never fires.
    result: NDArray[np.bool_]
    if op == ">":
        result = values > threshold
    elif op == ">=":
        result = values >= threshold
    elif op == "<":
        result = values < threshold
    elif op == "<=":
        result = values <= threshold
    elif op == "==":
        result = values == threshold
    else:
        result = (values != threshold) & ~np.isnan(values)
    return result
