"""The server's alert loop: collect every metric source, evaluate the rules, notify.

`AlertService` holds the rules (`--alert-rules`), the sources (HardwareSource,
DriftSource, any other MetricSource) and the notifiers (the log always, a webhook with
`--alert-webhook`). The runtime calls `run_once` every `--alert-interval` seconds; the
collection and the evaluation run in a worker thread (100,000 devices take a few hundred
milliseconds), the notifications on the event loop.

Alerts live in memory, as in Prometheus: after a restart an alert that still holds
becomes pending again and fires after its `for` (a notification is sent again then, and
webhook receivers deduplicate by fingerprint). GET /api/v1/alerts lists them; /metrics
carries `tinyops_alerts_firing{rule,severity}`.

Without a rules file the loop does not run and the list is empty; the sources' metrics
are on /metrics either way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from tinyops.monitor.alerts.evaluate import (
    Alert,
    AlertEvaluator,
    AlertEvent,
    AlertStatus,
    MetricFrame,
    frames_from_samples,
)
from tinyops.monitor.alerts.notify import LogNotifier, Notifier, WebhookNotifier
from tinyops.monitor.alerts.rules import RulesFile, load_rules
from tinyops.monitor.series import MetricSource

log = logging.getLogger("tinyops.fleet.server")


def collect_frames(source: MetricSource, now: datetime) -> list[MetricFrame]:
    """The source's samples as frames (its own frames when it has them)."""
    fast = getattr(source, "collect_frames", None)
    if fast is not None:
        frames: list[MetricFrame] = fast(now)
        return frames
    return frames_from_samples(source.collect(now))


class AlertService:
    """Rules, sources, notifiers and the current alerts of one server process."""

    def __init__(
        self,
        rules: RulesFile | None,
        sources: Sequence[MetricSource],
        notifiers: Sequence[Notifier] = (),
    ) -> None:
        self.rules = rules
        self.sources = list(sources)
        self.notifiers = list(notifiers)
        self._evaluator = AlertEvaluator(rules) if rules is not None else None
        # The evaluation (worker thread) and the readers (requests, scrapes) take turns.
        self._lock = threading.Lock()
        self.evaluations = 0

    @classmethod
    def configure(
        cls,
        sources: Sequence[MetricSource],
        rules_path: str | None,
        webhook_url: str | None,
        external_url: str = "",
    ) -> AlertService:
        """From the server options; RulesError (naming file:line) for a bad rules file."""
        from pathlib import Path

        rules = load_rules(Path(rules_path)) if rules_path is not None else None
        notifiers: list[Notifier] = [LogNotifier()]
        if webhook_url is not None:
            notifiers.append(WebhookNotifier(webhook_url, external_url=external_url))
        return cls(rules, sources, notifiers)

    @property
    def enabled(self) -> bool:
        return self._evaluator is not None

    def add_source(self, source: MetricSource) -> None:
        self.sources.append(source)

    def evaluate(self, now: datetime) -> list[AlertEvent]:
        """Collect every source and evaluate the rules once (blocking; a worker thread)."""
        if self._evaluator is None:
            return []
        frames: list[MetricFrame] = []
        for source in self.sources:
            try:
                frames += collect_frames(source, now)
            except Exception:
                # One broken source must not silence the others' alerts.
                log.exception("collecting metrics from %s failed", type(source).__name__)
        with self._lock:
            events = self._evaluator.evaluate(frames, now)
            self.evaluations += 1
        return events

    async def run_once(self, now: datetime) -> list[AlertEvent]:
        """Evaluate (in a worker thread) and deliver the notifications due."""
        events = await run_in_threadpool(self.evaluate, now)
        await self.notify(events)
        return events

    async def notify(self, events: Sequence[AlertEvent]) -> None:
        if not events:
            return
        for notifier in self.notifiers:
            try:
                await notifier.notify(events)
            except Exception:
                log.exception("alert notifier %s failed", type(notifier).__name__)

    def alerts(self, state: AlertStatus | None = None) -> list[Alert]:
        if self._evaluator is None:
            return []
        with self._lock:
            return self._evaluator.alerts(state)

    def firing_counts(self) -> Mapping[tuple[str, str], int]:
        if self._evaluator is None:
            return {}
        with self._lock:
            return self._evaluator.firing_counts()
