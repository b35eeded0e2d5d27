"""The data quality gate: checks a `Dataset` against `ValidationConfig` thresholds.

Each check gives a status:

    pass   the data meets the expectation (or the check is not configured)
    warn   something worth a look that does not by itself make the data unusable
    fail   the data breaks an expectation; the detail says what was found and expected

`ValidationConfig.fail_on` decides which statuses fail the gate: "error" (only fails),
"warning" (warnings too) or "never" (report only). `require_passed` turns a failed gate
into `GateFailed`, which stops a pipeline before a snapshot is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tinyops.data.config import ValidationConfig
from tinyops.data.dataset import SAMPLE_DTYPES, Dataset
from tinyops.errors import GateFailed

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["Check", "ValidationConfig", "ValidationReport", "require_passed", "validate"]

Status = Literal["pass", "warn", "fail"]

# Which statuses fail the gate, per `ValidationConfig.fail_on`.
_GATING: dict[str, frozenset[str]] = {
    "error": frozenset({"fail"}),
    "warning": frozenset({"fail", "warn"}),
    "never": frozenset(),
}


@dataclass(frozen=True)
class Check:
    """One row of a validation report. `value` is the measured number, if there is one."""

    name: str
    status: Status
    detail: str
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        return {"name": self.name, "status": self.status, "detail": self.detail, "value": value}


@dataclass(frozen=True)
class ValidationReport:
    """The checks run on a data set and whether they pass the gate."""

    checks: list[Check]
    passed: bool
    fail_on: str = "error"

    @property
    def failed(self) -> list[Check]:
        """The checks that fail the gate under `fail_on`."""
        return [c for c in self.checks if c.status in _GATING[self.fail_on]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, as stored in a snapshot manifest (infinite values become null)."""
        return {
            "passed": self.passed,
            "fail_on": self.fail_on,
            "checks": [c.to_dict() for c in self.checks],
        }

    def render(self) -> Table:
        """A rich table for the terminal: one row per check, coloured by status."""
        from rich.table import Table

        style = {"pass": "green", "warn": "yellow", "fail": "bold red"}
        table = Table(title=f"Data validation: {'passed' if self.passed else 'FAILED'}")
        table.add_column("check")
        table.add_column("status")
        table.add_column("value", justify="right")
        table.add_column("detail")
        for check in self.checks:
            value = "" if check.value is None else f"{check.value:.4g}"
            status = f"[{style[check.status]}]{check.status}[/]"
            table.add_row(check.name, status, value, check.detail)
        return table


def validate(ds: Dataset, config: ValidationConfig) -> ValidationReport:
    """Run every check on `ds`; see the module docstring for statuses and the gate."""
    checks = [
        _check_schema(ds),
        _check_sample_shape(ds, config),
        _check_sample_count(ds, config),
        _check_labels(ds, config),
        _check_class_counts(ds),
        _check_class_balance(ds, config),
        _check_missing_values(ds, config),
        _check_value_range(ds, config),
        _check_sample_rate(ds, config),
    ]
    gating = _GATING[config.fail_on]
    passed = not any(c.status in gating for c in checks)
    return ValidationReport(checks=checks, passed=passed, fail_on=config.fail_on)


def require_passed(report: ValidationReport) -> None:
    """Raise `GateFailed` (carrying the report) if the validation gate did not pass."""
    if report.passed:
        return
    lines = [f"  {c.name} [{c.status}]: {c.detail}" for c in report.failed]
    raise GateFailed("data validation failed:\n" + "\n".join(lines), report)


# --- the checks -----------------------------------------------------------------------------


def _check_schema(ds: Dataset) -> Check:
    problems = []
    expected = SAMPLE_DTYPES[ds.modality]
    if ds.x.dtype != expected:
        problems.append(f"x is {ds.x.dtype}; expected {expected} for {ds.modality} data")
    rank = {"table": 1, "audio": 1, "text": 1, "image": 3}[ds.modality]
    shape = ds.sample_shape
    if len(shape) != rank:
        problems.append(
            f"samples have shape {shape}; {ds.modality} samples must have {rank} "
            f"dimension{'s' if rank > 1 else ''}"
        )
    elif ds.modality == "image" and shape[2] not in (1, 3):
        problems.append(f"images have {shape[2]} channels; expected 1 (gray) or 3 (RGB)")
    names = ds.feature_names
    if ds.modality == "table" and names is not None and len(shape) == 1 and len(names) != shape[0]:
        problems.append(f"{len(names)} feature names for {shape[0]} feature columns")
    if problems:
        return Check("schema", "fail", "; ".join(problems))
    return Check("schema", "pass", f"{ds.modality}: x {ds.x.dtype}, y int64")


def _check_sample_shape(ds: Dataset, config: ValidationConfig) -> Check:
    shape = list(ds.sample_shape)
    if config.expected_shape is None:
        return Check("sample_shape", "pass", f"{shape} (no expected shape set)")
    if shape != config.expected_shape:
        return Check(
            "sample_shape", "fail", f"samples are {shape}; expected {config.expected_shape}"
        )
    return Check("sample_shape", "pass", f"{shape} as expected")


def _check_sample_count(ds: Dataset, config: ValidationConfig) -> Check:
    n = len(ds)
    if n < config.min_samples:
        return Check(
            "sample_count", "fail", f"{n} samples; expected at least {config.min_samples}", n
        )
    return Check("sample_count", "pass", f"{n} samples (minimum {config.min_samples})", n)


def _check_labels(ds: Dataset, config: ValidationConfig) -> Check:
    unlabeled = int((ds.y < 0).sum())
    if unlabeled and config.require_labels:
        return Check(
            "labels",
            "fail",
            f"{unlabeled} of {len(ds)} samples are unlabeled; expected every sample to have "
            "a label (or set require_labels: false)",
            unlabeled,
        )
    if not ds.classes and config.require_labels:
        return Check("labels", "fail", "no classes; expected labelled data", unlabeled)
    detail = f"{unlabeled} unlabeled" if unlabeled else "every sample is labelled"
    return Check("labels", "pass", detail, unlabeled)


def _label_counts(ds: Dataset) -> np.ndarray[Any, np.dtype[np.int64]]:
    labelled = ds.y[ds.y >= 0]
    return np.bincount(labelled, minlength=len(ds.classes)).astype(np.int64)


def _check_class_counts(ds: Dataset) -> Check:
    counts = _label_counts(ds)
    listing = ", ".join(f"{c}: {n}" for c, n in zip(ds.classes, counts.tolist(), strict=True))
    present = int((counts > 0).sum())
    empty = [c for c, n in zip(ds.classes, counts.tolist(), strict=True) if n == 0]
    if empty:
        return Check(
            "class_counts",
            "warn",
            f"classes without samples: {', '.join(empty)}; expected at least one sample "
            f"per class ({listing})",
            present,
        )
    if not ds.classes:
        return Check("class_counts", "pass", "no classes (unlabeled data)", 0)
    return Check("class_counts", "pass", listing, present)


def _check_class_balance(ds: Dataset, config: ValidationConfig) -> Check:
    counts = _label_counts(ds)
    counts = counts[counts > 0]  # empty classes are reported by class_counts
    if counts.size == 0:
        return Check("class_balance", "pass", "no labelled samples to balance")
    smallest = int(counts.min())
    fraction = smallest / int(counts.sum())
    ratio = int(counts.max()) / smallest
    measured = f"smallest class {fraction:.1%} of labelled samples, largest/smallest {ratio:.3g}"
    problems = []
    if fraction < config.min_class_fraction:
        problems.append(f"smallest class share below {config.min_class_fraction:.1%}")
    if config.max_imbalance_ratio is not None and ratio > config.max_imbalance_ratio:
        problems.append(f"largest/smallest above {config.max_imbalance_ratio:g}")
    if problems:
        return Check("class_balance", "fail", f"{measured}; {'; '.join(problems)}", fraction)
    return Check("class_balance", "pass", measured, fraction)


def _check_missing_values(ds: Dataset, config: ValidationConfig) -> Check:
    if ds.x.dtype.kind != "f" or ds.x.size == 0:
        return Check("missing_values", "pass", f"{ds.x.dtype} data cannot hold NaN", 0.0)
    missing = int(np.isnan(ds.x).sum())
    fraction = missing / ds.x.size
    measured = f"{missing} NaN values ({fraction:.2%} of {ds.x.size})"
    if fraction > config.max_missing_fraction:
        return Check(
            "missing_values",
            "fail",
            f"{measured}; expected at most {config.max_missing_fraction:.2%}",
            fraction,
        )
    return Check("missing_values", "pass", measured, fraction)


def _check_value_range(ds: Dataset, config: ValidationConfig) -> Check:
    if ds.x.size == 0:
        return Check("value_range", "pass", "no values")
    is_float = ds.x.dtype.kind == "f"
    values = ds.x
    if is_float:
        infinite = int(np.isinf(values).sum())
        if np.isnan(values).all():
            return Check("value_range", "pass", "every value is NaN (see missing_values)")
        lo_seen, hi_seen = float(np.nanmin(values)), float(np.nanmax(values))
    else:
        infinite = 0
        lo_seen, hi_seen = float(values.min()), float(values.max())
    measured = f"values in [{lo_seen:g}, {hi_seen:g}]"
    if config.value_range is None:
        if infinite:
            return Check(
                "value_range", "fail", f"{infinite} infinite values; expected finite numbers"
            )
        return Check("value_range", "pass", f"{measured} (no range set)")
    lo, hi = config.value_range
    # NaN compares false both ways, so missing values are not counted as out of range.
    outside = int(((values < lo) | (values > hi)).sum())
    if outside:
        return Check(
            "value_range",
            "fail",
            f"{outside} values outside [{lo:g}, {hi:g}]; found {measured}",
            outside,
        )
    return Check("value_range", "pass", f"{measured}, within [{lo:g}, {hi:g}]", 0)


def _check_sample_rate(ds: Dataset, config: ValidationConfig) -> Check:
    found = ds.sample_rate
    if config.sample_rate is None:
        if ds.modality == "audio" and found is None:
            return Check("sample_rate", "warn", "audio data without a sample rate")
        detail = f"{found} Hz" if found is not None else "not audio"
        return Check("sample_rate", "pass", detail, found)
    if found != config.sample_rate:
        shown = "none" if found is None else f"{found} Hz"
        return Check(
            "sample_rate",
            "fail",
            f"sample rate is {shown}; expected {config.sample_rate} Hz",
            found,
        )
    return Check("sample_rate", "pass", f"{found} Hz as expected", found)
