"""The alerts.yaml parser: what it accepts, and errors that name file:line and key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tinyops.monitor.alerts.rules import (
    Condition,
    RulesError,
    format_duration,
    load_rules,
    parse_duration,
    parse_rules,
    parse_template,
)

TEMPLATE = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "tinyops"
    / "project"
    / "templates"
    / "alerts.yaml"
)

GOOD = """\
repeat_interval: 2h
groups:
  - name: hardware
    rules:
      - name: DeviceHot
        metric: device_temperature_celsius
        match: {hardware: nano33ble}
        match_re: {device: "lab-.*"}
        condition: ">= 70.5"
        for: 1m30s
        keep_firing_for: 10m
        severity: critical
        labels: {team: hw}
        annotations:
          summary: "{{ $labels.device }} at {{$value}} °C"
      - name: ReleaseBatteryLow
        metric: device_battery_ratio
        aggregate: avg
        by: [release]
        condition: "< 0.2"
        annotations: {summary: "{{ $labels.release }}"}
"""


def test_a_full_rules_file_parses_to_its_values() -> None:
    rules = parse_rules(GOOD)

    assert rules.repeat_interval_s == 7200
    hot, battery = rules.rules()
    assert hot.name == "DeviceHot"
    assert hot.match == {"hardware": "nano33ble"}
    assert hot.match_re == {"device": "lab-.*"}
    assert hot.condition == Condition(">=", 70.5)
    assert (hot.for_s, hot.keep_firing_for_s) == (90.0, 600.0)
    assert hot.severity == "critical"
    assert hot.labels == {"team": "hw"}
    assert battery.aggregate == "avg"
    assert battery.by == ["release"]
    assert battery.output_labels() == ("release",)
    # Defaults: warning, no `for`, no keep_firing_for.
    assert (battery.severity, battery.for_s, battery.keep_firing_for_s) == ("warning", 0, 0)


def test_the_default_rules_shipped_with_init_are_valid() -> None:
    rules = load_rules(TEMPLATE)
    metrics = {r.metric for r in rules.rules()}
    assert {
        "device_temperature_celsius",
        "device_battery_ratio",
        "device_free_memory_bytes",
        "device_crash_loop",
        "device_latency_budget_ratio",
        "device_last_seen_seconds",
        "feature_drifted",
        "dataset_drift_share",
        "model_accuracy_drop",
    } == metrics


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("500ms", 0.5),
        ("1y", 365 * 86400),
    ],
)
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


def test_durations_format_in_prometheus_spelling() -> None:
    assert format_duration(90) == "1m30s"
    assert format_duration(0) == "0s"
    assert format_duration(3600) == "1h"
    assert format_duration(0.25) == "250ms"


@pytest.mark.parametrize("bad", ["5", "5 minutes", "m5", "5m1h", "1.5h", "", "-5m", "5M"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_templates_render_labels_and_value() -> None:
    template = parse_template("{{ $labels.device }} is at {{ $value }} °C ({{$labels.none}})")
    assert template.render({"device": "nano-1"}, 71.5) == "nano-1 is at 71.5 °C ()"
    assert template.render({"device": "nano-1"}, 72.0) == "nano-1 is at 72 °C ()"
    with pytest.raises(ValueError, match="only"):
        parse_template("{{ humanize $value }}")
    with pytest.raises(ValueError, match="unbalanced"):
        parse_template("{{ $value }} }}")


def _error(text: str) -> str:
    with pytest.raises(RulesError) as info:
        parse_rules(text, "alerts.yaml")
    assert info.value.exit_code == 2
    return str(info.value)


def _rule(**fields: str) -> str:
    body = {
        "name": "R",
        "metric": "device_temperature_celsius",
        "condition": '"> 1"',
        **fields,
    }
    lines = "\n".join(f"        {k}: {v}" for k, v in body.items())
    return f"groups:\n  - name: g\n    rules:\n      - {lines.lstrip()}\n"


def test_yaml_syntax_errors_name_the_line() -> None:
    message = _error("groups:\n  - name: g\n    rules: [\n")
    assert message.startswith("alerts.yaml:4: not valid YAML")


def test_a_key_written_twice_is_an_error() -> None:
    message = _error("groups: []\ngroups: []\n")
    assert "alerts.yaml:2" in message
    assert "duplicate key 'groups'" in message


def test_unknown_metric_names_line_and_key_path() -> None:
    message = _error(_rule(metric="device_temprature_celsius"))
    assert message.startswith("alerts.yaml:5: groups[0].rules[0].metric: unknown metric")
    assert "device_temperature_celsius" in message  # the known names are listed


def test_the_exposed_prefix_is_pointed_out() -> None:
    message = _error(_rule(metric="tinyops_device_temperature_celsius"))
    assert "without the /metrics prefix, 'device_temperature_celsius'" in message


@pytest.mark.parametrize("condition", ['"> seventy"', '"70"', '"=> 70"', "70", '">"'])
def test_bad_conditions_name_the_key(condition: str) -> None:
    message = _error(_rule(condition=condition))
    assert message.startswith("alerts.yaml:6: groups[0].rules[0].condition:")


def test_bad_durations_name_the_key() -> None:
    message = _error(_rule(**{"for": "5 minutes"}))
    assert message.startswith("alerts.yaml:7: groups[0].rules[0].for: ")
    assert "is not a duration" in message


def test_unknown_keys_and_missing_keys() -> None:
    message = _error(_rule(treshold="3"))
    assert "alerts.yaml:7: groups[0].rules[0].treshold: unknown key" in message
    message = _error("groups:\n  - name: g\n    rules:\n      - name: R\n        metric: x\n")
    assert "groups[0].rules[0].condition: required key is missing" in message


def test_labels_checked_against_the_metric() -> None:
    message = _error(_rule(match="{devcie: nano-1}"))
    assert "alerts.yaml:7: groups[0].rules[0].match.devcie: device_temperature_celsius has " in (
        message
    )
    assert "no label 'devcie'" in message
    message = _error(_rule(by="[release]"))
    assert "by: needs an aggregate" in message
    message = _error(
        _rule(aggregate="avg", by="[release]", annotations="{summary: '{{ $labels.device }}'}")
    )
    assert "annotations.summary: $labels.device: the alert has no such label" in message


def test_regex_severity_and_reserved_labels() -> None:
    assert "is not a regular expression" in _error(_rule(match_re='{device: "("}'))
    assert "groups[0].rules[0].severity" in _error(_rule(severity="page"))
    assert "set by tinyops itself" in _error(_rule(labels="{severity: page}"))


def test_duplicate_alert_names_are_refused() -> None:
    text = GOOD.replace("ReleaseBatteryLow", "DeviceHot")
    message = _error(text)
    assert "alerts.yaml:16: groups[0].rules[1].name: alert 'DeviceHot' is defined twice" in message


def test_every_problem_is_reported_at_once() -> None:
    text = _rule(metric="nope", severity="page")
    message = _error(text)
    assert len(message.splitlines()) == 2


def test_not_a_mapping_and_unreadable_files(tmp_path: Path) -> None:
    assert "expected a mapping with a groups: list, got an empty file" in _error("")
    assert "got a list" in _error("- a\n")
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(RulesError, match="not UTF-8"):
        load_rules(binary)


def _tinyops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinyops.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_check_and_export(tmp_path: Path) -> None:
    good = tmp_path / "alerts.yaml"
    good.write_text(GOOD)
    result = _tinyops("alerts", "check", str(good), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "2 rules in 1 group" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace('">= 70.5"', '"about 70"'))
    result = _tinyops("alerts", "check", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "bad.yaml:9: groups[0].rules[0].condition: 'about 70' is not a condition" in (
        " ".join(result.stderr.split())
    )

    out = tmp_path / "prom.yml"
    result = _tinyops("alerts", "export", str(good), "-o", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    exported = yaml.safe_load(out.read_text())
    assert [r["alert"] for r in exported["groups"][0]["rules"]] == [
        "DeviceHot",
        "ReleaseBatteryLow",
    ]
    result = _tinyops("alerts", "export", str(bad), "-o", str(tmp_path / "x.yml"), cwd=tmp_path)
    assert result.returncode == 2
    assert not (tmp_path / "x.yml").exists()
