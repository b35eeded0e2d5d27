"""Alert rules over the fleet's metrics: parse, evaluate with state, notify, export.

    catalogue.py   the metrics a rule may name and their labels (checked at load time)
    rules.py       the alerts.yaml model and parser; errors name file:line and key path
    evaluate.py    AlertEvaluator: pending → firing → resolved per (rule, label set),
                   keep_firing_for, deduplicated notifications with repeat_interval;
                   vectorised over MetricFrames (NumPy), no I/O
    notify.py      webhook (Alertmanager's JSON, retries, backoff) and log notifiers
    promexport.py  the same rules as a Prometheus rule file (`promtool check rules`)

The server runs them (tinyops.fleet.server.alerting) over its metric sources every
`--alert-interval` seconds; docs/alerts.md describes the format and the default rules.
"""

from tinyops.monitor.alerts.evaluate import (
    Alert,
    AlertEvaluator,
    AlertEvent,
    MetricFrame,
    frames_from_samples,
)
from tinyops.monitor.alerts.rules import AlertRule, RulesError, RulesFile, load_rules, parse_rules

__all__ = [
    "Alert",
    "AlertEvaluator",
    "AlertEvent",
    "AlertRule",
    "MetricFrame",
    "RulesError",
    "RulesFile",
    "frames_from_samples",
    "load_rules",
    "parse_rules",
]
