"""The alert rules file (`alerts.yaml`): its model, its parser and its checks.

    repeat_interval: 4h            # re-notify an alert still firing after this long
    groups:
      - name: hardware
        rules:
          - name: DeviceHot                        # the alert's name (label `alertname`)
            metric: device_temperature_celsius     # a catalogue metric (catalogue.py)
            match: {hardware: nano33ble}           # label equality (optional)
            match_re: {device: "lab-.*"}           # label regex, fully anchored (optional)
            condition: "> 70"                      # >, >=, <, <=, ==, != and a number
            aggregate: avg                         # optional: avg|max|min|sum|count ...
            by: [release]                          # ... over the series, per these labels
            for: 5m                                # true this long before it fires
            keep_firing_for: 10m                   # stays firing this long after it clears
            severity: warning                      # info | warning | critical
            labels: {team: hardware}               # added to the alert's labels
            annotations:
              summary: "{{ $labels.device }} at {{ $value }} °C"

The model is deliberately a subset of Prometheus alerting rules with the expression split
into parts (metric, matchers, aggregation, comparison): the evaluator can then run a rule
over 100,000 series as array operations, and promexport.py can write the same rule as a
PromQL expression that means the same thing. Durations use Prometheus' syntax (`1h30m`,
units y w d h m s ms, largest first); templates allow `{{ $labels.<name> }}` and
`{{ $value }}`, which Prometheus renders the same way.

Every problem is a `RulesError` naming the file, the line and the key path
(`alerts.yaml:12: groups[0].rules[1].condition: ...`), found without a server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
)

from tinyops.errors import ProjectError
from tinyops.monitor.alerts.catalogue import METRICS

# Alertmanager's default: an alert still firing is notified again after this long.
DEFAULT_REPEAT_INTERVAL_S: Final = 4 * 3600.0
# Names of alerts and groups: Prometheus metric-name characters, so an alert name is also
# usable as a recording rule or a Grafana variable.
RULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels the evaluator sets itself; a rule may not set them in `labels:`.
RESERVED_LABELS: Final = frozenset({"alertname", "severity"})
Severity = Literal["info", "warning", "critical"]
Aggregation = Literal["avg", "max", "min", "sum", "count"]


class RulesError(ProjectError):
    """A rules file is unreadable or invalid (CLI exit code 2)."""


# --- durations ----------------------------------------------------------------------------

# Prometheus' model.ParseDuration: units from largest to smallest, each at most once.
_UNITS: Final = (("y", 365 * 86400.0), ("w", 7 * 86400.0), ("d", 86400.0), ("h", 3600.0))
_UNITS_ALL: Final = (*_UNITS, ("m", 60.0), ("s", 1.0), ("ms", 0.001))
_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)


def parse_duration(text: object) -> float:
    """Seconds of a Prometheus duration ('30s', '5m', '1h30m', '0s'); ValueError if not one."""
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(
            f"expected a duration such as 30s, 5m or 1h30m (a string with a unit), got {text!r}"
        )
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(
            f"{text!r} is not a duration: expected numbers with units y, w, d, h, m, s, ms, "
            "largest first (30s, 5m, 1h30m, 0s)"
        )
    return sum(
        int(part) * seconds
        for part, (_unit, seconds) in zip(match.groups(), _UNITS_ALL, strict=True)
        if part is not None
    )


def format_duration(seconds: float) -> str:
    """The Prometheus spelling of `seconds` ('0s', '90s' → '1m30s', '0.5s' → '500ms')."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    out = ""
    for unit, size in _UNITS_ALL:
        step = round(size * 1000)
        count, millis = divmod(millis, step)
        if count:
            out += f"{count}{unit}"
    return out


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]


# --- conditions ---------------------------------------------------------------------------

_CONDITION = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
Operator = Literal[">", ">=", "<", "<=", "==", "!="]


@dataclass(frozen=True)
class Condition:
    """`value <op> threshold`, e.g. `> 70`."""

    op: Operator
    threshold: float

    def __str__(self) -> str:
        return f"{self.op} {format_number(self.threshold)}"


def parse_condition(text: object) -> Condition:
    if isinstance(text, Condition):
        return text
    if isinstance(text, bool) or not isinstance(text, str):
        raise ValueError(
            f"expected a comparison such as '> 70' or '< 0.2' (quote it), got {text!r}"
        )
    match = _CONDITION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a condition: expected one of >, >=, <, <=, ==, != and a "
            "number, e.g. '> 70', '< 0.2', '== 0'"
        )
    threshold = float(match[2])
    if not math.isfinite(threshold):
        raise ValueError(f"{text!r}: the threshold must be a finite number")
    return Condition(match[1], threshold)  # type: ignore[arg-type]


ConditionField = Annotated[
    Condition, BeforeValidator(parse_condition), PlainSerializer(str, return_type=str)
]


def format_number(value: float) -> str:
    """A number for messages and annotations: 70, 0.25, 1.5e-07 (shortest exact form)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


# --- templates ----------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_LABEL_REF = re.compile(r"^\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*$")
_VALUE_REF = re.compile(r"^\s*\$value\s*$")


@dataclass(frozen=True)
class Template:
    """An annotation with `{{ $labels.x }}` / `{{ $value }}` placeholders, parsed once."""

    source: str
    parts: tuple[str | tuple[str, str], ...]
    """Literal text, or ('label', name) / ('value', '')."""

    def labels(self) -> set[str]:
        return {p[1] for p in self.parts if isinstance(p, tuple) and p[0] == "label"}

    def render(self, labels: Mapping[str, str], value: float) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part[0] == "label":
                out.append(labels.get(part[1], ""))
            else:
                out.append(format_number(value))
        return "".join(out)


def parse_template(text: str) -> Template:
    parts: list[str | tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(text):
        if match.start() > pos:
            parts.append(text[pos : match.start()])
        inner = match[1]
        if (label := _LABEL_REF.match(inner)) is not None:
            parts.append(("label", label[1]))
        elif _VALUE_REF.match(inner):
            parts.append(("value", ""))
        else:
            raise ValueError(
                f"template action {match[0]!r}: only {{{{ $labels.<name> }}}} and "
                "{{ $value }} are supported"
            )
        pos = match.end()
    rest = text[pos:]
    if "{{" in rest or "}}" in rest:
        raise ValueError(f"unbalanced '{{{{' or '}}}}' in {text!r}")
    if rest:
        parts.append(rest)
    return Template(text, tuple(parts))


# --- the model ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AlertRule(_Model):
    """One alerting rule."""

    name: str = Field(description="Alert name (the `alertname` label), e.g. DeviceHot.")
    metric: str = Field(description="Catalogue metric the rule tests (docs/alerts.md).")
    match: dict[str, str] = Field(
        default_factory=dict, description="Series must have these label values."
    )
    match_re: dict[str, str] = Field(
        default_factory=dict,
        description="Series labels must fully match these regular expressions.",
    )
    condition: ConditionField = Field(description="Comparison that makes the alert active.")
    aggregate: Aggregation | None = Field(
        default=None, description="Combine the matching series per `by` labels first."
    )
    by: list[str] = Field(default_factory=list, description="Labels to aggregate by.")
    for_s: Duration = Field(
        default=0.0, alias="for", description="How long the condition holds before firing."
    )
    keep_firing_for_s: Duration = Field(
        default=0.0,
        alias="keep_firing_for",
        description="How long an alert keeps firing after its condition cleared.",
    )
    severity: Severity = Field(default="warning", description="info | warning | critical.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra alert labels.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="summary, description, ... (templates)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RULE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not an alert name: expected letters, digits and _ , starting "
                "with a letter or _ (e.g. DeviceHot)"
            )
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value.startswith("tinyops_") and value.removeprefix("tinyops_") in METRICS:
            raise ValueError(
                f"unknown metric {value!r}: write it without the /metrics prefix, "
                f"{value.removeprefix('tinyops_')!r}"
            )
        if value not in METRICS:
            close = [m for m in METRICS if value.split("_")[0] in m] or list(METRICS)
            raise ValueError(
                f"unknown metric {value!r} (known: {', '.join(sorted(close))}; see docs/alerts.md)"
            )
        return value

    @field_validator("match_re")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"{label}: {pattern!r} is not a regular expression: {exc}"
                ) from exc
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for label in value:
            if not LABEL_NAME.match(label):
                raise ValueError(f"{label!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            if label in RESERVED_LABELS or label.startswith("__"):
                raise ValueError(f"{label!r} is set by tinyops itself; choose another name")
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not LABEL_NAME.match(key):
                raise ValueError(f"{key!r} is not an annotation name ([a-zA-Z_][a-zA-Z0-9_]*)")
            try:
                parse_template(text)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from exc
        return value

    # --- derived --------------------------------------------------------------------------

    def output_labels(self) -> tuple[str, ...]:
        """Labels of the series the expression yields (before the rule's own labels)."""
        if self.aggregate is not None:
            return tuple(self.by)
        return METRICS[self.metric].labels

    def templates(self) -> dict[str, Template]:
        return {key: parse_template(text) for key, text in self.annotations.items()}


class RuleGroup(_Model):
    """A named list of rules (a Prometheus rule group when exported)."""

    name: str = Field(description="Group name, unique in the file.")
    rules: list[AlertRule] = Field(min_length=1, description="The group's rules.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not RULE_NAME.match(value):
            raise ValueError(f"{value!r} is not a group name: letters, digits and _ ")
        return value


class RulesFile(_Model):
    """A whole alerts.yaml."""

    repeat_interval_s: Duration = Field(
        default=DEFAULT_REPEAT_INTERVAL_S,
        alias="repeat_interval",
        description="Notify an alert that is still firing again after this long.",
    )
    groups: list[RuleGroup] = Field(min_length=1, description="Rule groups.")

    def rules(self) -> list[AlertRule]:
        return [rule for group in self.groups for rule in group.rules]


# --- loading ------------------------------------------------------------------------------

Path_ = tuple[int | str, ...]


def key_path(loc: Sequence[int | str]) -> str:
    """('groups', 0, 'rules', 2, 'for') → groups[0].rules[2].for."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _node_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    """Record the line of every key (and list item) under `node`."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                sub = (*path, str(key_node.value))
                lines[sub] = key_node.start_mark.line + 1
                _node_lines(value_node, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _node_lines(item, (*path, index), lines)


def _line_of(lines: Mapping[Path_, int], loc: Sequence[int | str]) -> int:
    """The line of `loc`, or of its nearest ancestor written in the file."""
    parts = tuple(loc)
    while parts and parts not in lines:
        parts = parts[:-1]
    return lines.get(parts, 1)


def parse_rules(text: str, source: str = "alerts.yaml") -> RulesFile:
    """Parse and check the text of a rules file; RulesError naming `source`:line: key."""
    from tinyops.project.loader import _StrictLoader

    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError(f"{source}{where}: not valid YAML: {problem}") from exc
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        found = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise RulesError(f"{source}:1: expected a mapping with a groups: list, got {found}")
    lines: dict[Path_, int] = {}
    assert node is not None
    _node_lines(node, (), lines)
    try:
        rules = RulesFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            problems.append(f"{source}:{_line_of(lines, loc)}: {key_path(loc)}: {_message(err)}")
        raise RulesError("\n".join(problems)) from exc
    problems = [
        f"{source}:{_line_of(lines, loc)}: {key_path(loc)}: {message}"
        for loc, message in _semantic_problems(rules)
    ]
    if problems:
        raise RulesError("\n".join(problems))
    return rules


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see docs/alerts.md)"
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    if kind == "value_error" or isinstance(got, dict | list):
        return msg
    return f"{msg} (got {got!r})"


def _semantic_problems(rules: RulesFile) -> list[tuple[Path_, str]]:
    """What the per-field checks cannot see: names, labels and templates across keys."""
    problems: list[tuple[Path_, str]] = []
    groups: dict[str, int] = {}
    names: dict[str, Path_] = {}
    for g, group in enumerate(rules.groups):
        if group.name in groups:
            problems.append(
                (
                    ("groups", g, "name"),
                    f"group {group.name!r} is defined twice "
                    f"(first as groups[{groups[group.name]}])",
                )
            )
        groups.setdefault(group.name, g)
        for r, rule in enumerate(group.rules):
            at: Path_ = ("groups", g, "rules", r)
            if rule.name in names:
                problems.append(
                    (
                        (*at, "name"),
                        f"alert {rule.name!r} is defined twice (first at "
                        f"{key_path(names[rule.name])})",
                    )
                )
            names.setdefault(rule.name, at)
            problems += [((*at, *loc), msg) for loc, msg in _rule_problems(rule)]
    return problems


def _rule_problems(rule: AlertRule) -> list[tuple[Path_, str]]:
    problems: list[tuple[Path_, str]] = []
    known = METRICS[rule.metric].labels
    for key in ("match", "match_re"):
        matchers: dict[str, str] = getattr(rule, key)
        for label in matchers:
            if label not in known:
                problems.append(
                    (
                        (key, label),
                        f"{rule.metric} has no label {label!r} (its labels: {', '.join(known)})",
                    )
                )
    if rule.by and rule.aggregate is None:
        problems.append((("by",), "by: needs an aggregate: (avg, max, min, sum or count)"))
    for label in rule.by:
        if label not in known:
            problems.append(
                (("by",), f"{rule.metric} has no label {label!r} (its labels: {', '.join(known)})")
            )
    if len(set(rule.by)) != len(rule.by):
        problems.append((("by",), "a label is listed twice"))
    available = set(rule.output_labels())
    for key, template in rule.templates().items():
        for label in sorted(template.labels() - available):
            hint = (
                f"aggregated by {', '.join(rule.by) or 'nothing'}"
                if rule.aggregate is not None
                else f"labels of {rule.metric}: {', '.join(known)}"
            )
            problems.append(
                (("annotations", key), f"$labels.{label}: the alert has no such label ({hint})")
            )
    return problems


def load_rules(path: Path) -> RulesFile:
    """Read and check a rules file; RulesError naming the file, line and key on any problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError(f"{path}: not UTF-8 text (byte offset {exc.start})") from exc
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror}") from exc
    return parse_rules(text, str(path))
