"""AlertEvaluator: hand-computed state sequences (pending, firing, resolved), flapping
protection, deduplicated and repeated notifications, matchers and aggregations."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from tinyops.monitor.alerts.evaluate import (
    AlertEvaluator,
    AlertEvent,
    MetricFrame,
    fingerprint,
)
from tinyops.monitor.alerts.rules import parse_rules
from tinyops.monitor.series import Sample

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
LABELS = ("device", "hardware", "release")


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def temps(values: dict[str, float], release: str = "kws@1.0.0") -> MetricFrame:
    rows = [(device, "nano33ble", release) for device in values]
    return MetricFrame(
        "device_temperature_celsius", LABELS, rows, np.asarray(list(values.values()), float)
    )


def evaluator(rule: str, repeat: str = "4h") -> AlertEvaluator:
    indented = "\n".join("      " + line for line in rule.strip().splitlines())
    text = f"repeat_interval: {repeat}\ngroups:\n  - name: g\n    rules:\n{indented}\n"
    return AlertEvaluator(parse_rules(text))


HOT = """
- name: DeviceHot
  metric: device_temperature_celsius
  condition: "> 70"
  for: 2m
  labels: {team: hw}
  annotations: {summary: "{{ $labels.device }} at {{ $value }} °C"}
"""


def states(ev: AlertEvaluator) -> list[tuple[str, str, float]]:
    return [(a.labels["device"], a.state, a.value) for a in ev.alerts()]


def kinds(events: list[AlertEvent]) -> list[tuple[str, str, bool]]:
    return [(e.status, e.alert.labels["device"], e.repeat) for e in events]


def test_pending_then_firing_after_for_then_resolved_then_pending_again() -> None:
    ev = evaluator(HOT)

    assert ev.evaluate([temps({"a": 75, "b": 60})], minutes(0)) == []
    assert states(ev) == [("a", "pending", 75.0)]
    # One minute: `for` (2m) has not elapsed.
    assert ev.evaluate([temps({"a": 76, "b": 60})], minutes(1)) == []
    assert states(ev) == [("a", "pending", 76.0)]
    # Two minutes after it became active: fires, one notification.
    events = ev.evaluate([temps({"a": 77, "b": 60})], minutes(2))
    assert kinds(events) == [("firing", "a", False)]
    alert = events[0].alert
    assert alert.active_at == minutes(0)
    assert alert.fired_at == minutes(2)
    assert alert.since == minutes(2)
    assert alert.summary == "a at 77 °C"
    # Condition false: resolved at once (no keep_firing_for), one notification.
    events = ev.evaluate([temps({"a": 65, "b": 60})], minutes(3))
    assert kinds(events) == [("resolved", "a", False)]
    assert events[0].alert.resolved_at == minutes(3)
    assert states(ev) == [("a", "resolved", 77.0)]
    # True again: a new alert, pending from now.
    assert ev.evaluate([temps({"a": 80, "b": 60})], minutes(4)) == []
    assert [(a.state, a.active_at) for a in ev.alerts()] == [("pending", minutes(4))]


def test_a_pending_alert_that_clears_is_dropped_without_notification() -> None:
    ev = evaluator(HOT)
    ev.evaluate([temps({"a": 75})], minutes(0))
    assert ev.evaluate([temps({"a": 69})], minutes(1)) == []
    assert ev.alerts() == []
    # Back above: `for` counts from the new start, not the old one.
    assert ev.evaluate([temps({"a": 75})], minutes(1.5)) == []
    assert ev.evaluate([temps({"a": 75})], minutes(3)) == []
    assert kinds(ev.evaluate([temps({"a": 75})], minutes(3.5))) == [("firing", "a", False)]


def test_keep_firing_for_holds_a_flapping_alert() -> None:
    ev = evaluator(
        """
- name: DeviceHot
  metric: device_temperature_celsius
  condition: "> 70"
  keep_firing_for: 5m
"""
    )
    # for: 0 → firing in the first evaluation that sees it.
    assert kinds(ev.evaluate([temps({"a": 75})], minutes(0))) == [("firing", "a", False)]
    # Flapping: false, true, false: it stays firing and nothing is notified.
    assert ev.evaluate([temps({"a": 60})], minutes(1)) == []
    assert ev.evaluate([temps({"a": 75})], minutes(2)) == []
    assert ev.evaluate([temps({"a": 60})], minutes(3)) == []
    assert states(ev) == [("a", "firing", 75.0)]
    # Kept firing for 5 minutes counted from the first false evaluation after the last
    # true one (minute 3): still firing at 7.9, resolved at 8.
    assert ev.evaluate([temps({"a": 60})], minutes(7.9)) == []
    assert states(ev)[0][1] == "firing"
    events = ev.evaluate([temps({"a": 60})], minutes(8))
    assert kinds(events) == [("resolved", "a", False)]


def test_one_notification_per_transition_and_repeats_every_repeat_interval() -> None:
    ev = evaluator(HOT.replace("for: 2m", "for: 0s"), repeat="1h")
    sent = []
    for step in range(0, 181, 20):  # every 20 minutes for 3 hours, always hot
        sent += [(step, *k) for k in kinds(ev.evaluate([temps({"a": 75})], minutes(step)))]
    assert sent == [
        (0, "firing", "a", False),
        (60, "firing", "a", True),
        (120, "firing", "a", True),
        (180, "firing", "a", True),
    ]


def test_alert_labels_fingerprint_and_independence_per_series() -> None:
    ev = evaluator(HOT.replace("for: 2m", "for: 0s"))
    events = ev.evaluate([temps({"a": 75, "b": 90, "c": 10})], minutes(0))
    assert kinds(events) == [("firing", "a", False), ("firing", "b", False)]
    labels = events[0].alert.labels
    assert labels == {
        "device": "a",
        "hardware": "nano33ble",
        "release": "kws@1.0.0",
        "team": "hw",
        "alertname": "DeviceHot",
        "severity": "warning",
    }
    assert events[0].alert.fingerprint == fingerprint("DeviceHot", labels)
    assert len(events[0].alert.fingerprint) == 16
    # The same alert in another evaluator (a restarted server) has the same fingerprint.
    again = evaluator(HOT.replace("for: 2m", "for: 0s"))
    assert again.evaluate([temps({"a": 71})], minutes(5))[0].alert.fingerprint == (
        events[0].alert.fingerprint
    )
    # b clears, a stays: only b resolves.
    assert kinds(ev.evaluate([temps({"a": 75, "b": 50})], minutes(1))) == [("resolved", "b", False)]
    assert ev.firing_counts() == {("DeviceHot", "warning"): 1}


def test_resolved_alerts_are_listed_for_fifteen_minutes() -> None:
    ev = evaluator(HOT.replace("for: 2m", "for: 0s"))
    ev.evaluate([temps({"a": 75})], minutes(0))
    ev.evaluate([temps({"a": 60})], minutes(1))
    ev.evaluate([temps({"a": 60})], minutes(15.9))
    assert [a.state for a in ev.alerts("resolved")] == ["resolved"]
    ev.evaluate([temps({"a": 60})], minutes(16))
    assert ev.alerts() == []


def test_matchers_equality_regex_and_absent_labels() -> None:
    ev = evaluator(
        """
- name: LabHot
  metric: device_temperature_celsius
  match: {release: "kws@1.0.0"}
  match_re: {device: "lab-[0-9]+"}
  condition: "> 70"
"""
    )
    frames = [
        temps({"lab-1": 75, "lab-x": 75, "xlab-2": 75, "lab-3": 60}),
        temps({"lab-9": 99}, release="kws@2.0.0"),
    ]
    events = ev.evaluate(frames, minutes(0))
    # Regexes are anchored at both ends, as in PromQL.
    assert kinds(events) == [("firing", "lab-1", False)]

    absent = evaluator(
        """
- name: DeviceLevelDrift
  metric: feature_drifted
  match: {group: ""}
  condition: "== 1"
"""
    )
    device_level = MetricFrame(
        "feature_drifted", ("device", "feature", "release"), [("d1", "f0", "r")], np.ones(1)
    )
    group_level = MetricFrame(
        "feature_drifted", ("feature", "group", "release"), [("f0", "site:a", "r")], np.ones(1)
    )
    events = absent.evaluate([device_level, group_level], minutes(0))
    assert [e.alert.labels.get("device") for e in events] == ["d1"]


def test_aggregations_by_label() -> None:
    frame = MetricFrame(
        "device_battery_ratio",
        LABELS,
        [("a", "nano33ble", "r1"), ("b", "nano33ble", "r1"), ("c", "pico", "r2")],
        np.asarray([0.1, 0.2, 0.9]),
    )

    def run(aggregate: str, condition: str) -> dict[str, float]:
        ev = evaluator(
            f"""
- name: Agg
  metric: device_battery_ratio
  aggregate: {aggregate}
  by: [release]
  condition: "{condition}"
  annotations: {{summary: "{{{{ $labels.release }}}}"}}
"""
        )
        return {e.alert.labels["release"]: e.alert.value for e in ev.evaluate([frame], T0)}

    assert run("avg", "< 0.5") == {"r1": 0.15000000000000002}
    assert run("min", "> -1") == {"r1": 0.1, "r2": 0.9}
    assert run("max", ">= 0.2") == {"r1": 0.2, "r2": 0.9}
    assert run("sum", "> 0.25") == {"r1": 0.30000000000000004, "r2": 0.9}
    assert run("count", "== 2") == {"r1": 2.0}
    # Without `by`: one series over everything, with no labels but the rule's.
    ev = evaluator(
        """
- name: FleetBattery
  metric: device_battery_ratio
  aggregate: avg
  condition: "< 0.5"
"""
    )
    (event,) = ev.evaluate([frame], T0)
    assert math.isclose(event.alert.value, 0.4)
    assert event.alert.labels == {"alertname": "FleetBattery", "severity": "warning"}


def test_nan_never_fires_and_not_equal_skips_nan() -> None:
    for condition in ('"> 0"', '"!= 0"', '"< 0"'):
        ev = evaluator(
            f"""
- name: X
  metric: device_temperature_celsius
  condition: {condition}
"""
        )
        assert ev.evaluate([temps({"a": math.nan})], T0) == []


def test_samples_and_frames_evaluate_alike() -> None:
    frame = temps({"a": 75, "b": 60})
    by_frame = evaluator(HOT.replace("for: 2m", "for: 0s"))
    by_sample = evaluator(HOT.replace("for: 2m", "for: 0s"))
    samples = [
        Sample("device_temperature_celsius", {"device": "a", "hardware": "x", "release": "r"}, 75),
        Sample("device_temperature_celsius", {"device": "b", "hardware": "x", "release": "r"}, 60),
    ]
    assert frame.samples()[0].value == 75
    assert [e.alert.labels["device"] for e in by_frame.evaluate([frame], T0)] == ["a"]
    assert [e.alert.labels["device"] for e in by_sample.evaluate(samples, T0)] == ["a"]


def test_rules_without_samples_and_firing_counts_of_every_rule() -> None:
    ev = evaluator(HOT)
    assert ev.evaluate([], T0) == []
    assert ev.firing_counts() == {("DeviceHot", "warning"): 0}
