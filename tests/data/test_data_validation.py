"""Each validation check, passing and failing, and the gate built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from rich.console import Console

from tinyops.data import Dataset, ValidationConfig, require_passed, validate
from tinyops.data.validate import Check, ValidationReport
from tinyops.errors import GateFailed


def table(x: list[list[float]], y: list[int], classes: tuple[str, ...] = ("a", "b")) -> Dataset:
    return Dataset(np.array(x, dtype=np.float32), np.array(y, dtype=np.int64), classes, "table")


def check(ds: Dataset, name: str, **config: object) -> Check:
    report = validate(ds, ValidationConfig.model_validate({"min_samples": 0, **config}))
    (found,) = [c for c in report.checks if c.name == name]
    return found


# Six labelled samples: class a 4, class b 2.
GOOD = table([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 6]], [0, 0, 0, 0, 1, 1])


def test_every_check_runs_and_clean_data_passes() -> None:
    report = validate(GOOD, ValidationConfig(min_samples=6))
    assert [c.name for c in report.checks] == [
        "schema",
        "sample_shape",
        "sample_count",
        "labels",
        "class_counts",
        "class_balance",
        "missing_values",
        "value_range",
        "sample_rate",
    ]
    assert report.passed
    assert all(c.status == "pass" for c in report.checks)


def test_schema_fails_on_the_wrong_dtype() -> None:
    ds = Dataset(np.zeros((2, 3), np.float64), np.zeros(2, np.int64), ("a",), "table")
    found = check(ds, "schema")
    assert found.status == "fail"
    assert "x is float64; expected float32 for table data" in found.detail


def test_schema_fails_on_image_channels() -> None:
    ds = Dataset(np.zeros((1, 2, 2, 4), np.uint8), np.zeros(1, np.int64), ("a",), "image")
    found = check(ds, "schema")
    assert found.status == "fail" and "4 channels; expected 1 (gray) or 3 (RGB)" in found.detail


def test_sample_shape() -> None:
    assert check(GOOD, "sample_shape", expected_shape=[2]).status == "pass"
    found = check(GOOD, "sample_shape", expected_shape=[3])
    assert found.status == "fail" and found.detail == "samples are [2]; expected [3]"


def test_sample_count() -> None:
    assert check(GOOD, "sample_count", min_samples=6).status == "pass"
    found = check(GOOD, "sample_count", min_samples=7)
    assert found.status == "fail" and found.value == 6
    assert found.detail == "6 samples; expected at least 7"


def test_labels_required_or_not() -> None:
    partly = table([[0, 0], [1, 1], [2, 2]], [0, -1, 1])
    found = check(partly, "labels")
    assert found.status == "fail" and found.value == 1
    assert "1 of 3 samples are unlabeled" in found.detail
    assert check(partly, "labels", require_labels=False).status == "pass"


def test_class_counts_warn_on_an_empty_class() -> None:
    ds = table([[0, 0], [1, 1]], [0, 0], ("a", "b", "c"))
    found = check(ds, "class_counts")
    assert found.status == "warn" and found.value == 1
    assert found.detail.startswith("classes without samples: b, c")
    assert check(GOOD, "class_counts").detail == "a: 4, b: 2"


def test_class_balance_fraction_and_ratio() -> None:
    # Smallest class: 2 of 6 samples = 1/3; largest/smallest = 4/2 = 2.
    passing = check(GOOD, "class_balance", min_class_fraction=0.3, max_imbalance_ratio=2)
    assert passing.status == "pass" and passing.value == pytest.approx(1 / 3)
    low = check(GOOD, "class_balance", min_class_fraction=0.34)
    assert low.status == "fail" and "smallest class share below 34.0%" in low.detail
    skewed = check(GOOD, "class_balance", max_imbalance_ratio=1.5)
    assert skewed.status == "fail" and "largest/smallest above 1.5" in skewed.detail


def test_missing_values() -> None:
    # One NaN among 8 values = 12.5 %.
    ds = table([[0, np.nan], [1, 2], [2, 3], [3, 4]], [0, 0, 1, 1])
    found = check(ds, "missing_values")
    assert found.status == "fail" and found.value == 0.125
    assert found.detail == "1 NaN values (12.50% of 8); expected at most 0.00%"
    assert check(ds, "missing_values", max_missing_fraction=0.125).status == "pass"


def test_value_range() -> None:
    assert check(GOOD, "value_range", value_range=[0, 6]).status == "pass"
    found = check(GOOD, "value_range", value_range=[0, 5])
    # Only the 6 of the last row lies outside [0, 5].
    assert found.status == "fail" and found.value == 1
    assert found.detail == "1 values outside [0, 5]; found values in [0, 6]"


def test_infinite_values_fail_even_without_a_range() -> None:
    ds = table([[0, np.inf], [1, 2]], [0, 1])
    found = check(ds, "value_range")
    assert found.status == "fail" and "1 infinite values" in found.detail


def test_sample_rate() -> None:
    audio = Dataset(np.zeros((2, 8), np.float32), np.zeros(2, np.int64), ("a",), "audio", 16000)
    assert check(audio, "sample_rate", sample_rate=16000).status == "pass"
    found = check(audio, "sample_rate", sample_rate=8000)
    assert found.status == "fail" and found.detail == "sample rate is 16000 Hz; expected 8000 Hz"
    assert check(GOOD, "sample_rate", sample_rate=8000).status == "fail"


def test_value_range_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="lo <= hi"):
        ValidationConfig(value_range=(1.0, 0.0))


def test_fail_on_decides_what_fails_the_gate() -> None:
    ds = table([[0, 0], [1, 1]], [0, 0], ("a", "b"))  # class b is empty: a warning
    assert validate(ds, ValidationConfig(min_samples=2)).passed
    strict = validate(ds, ValidationConfig(min_samples=2, fail_on="warning"))
    assert not strict.passed and [c.name for c in strict.failed] == ["class_counts"]
    lenient = validate(ds, ValidationConfig(min_samples=3, fail_on="never"))
    assert lenient.passed and any(c.status == "fail" for c in lenient.checks)


def test_require_passed_lists_failed_checks() -> None:
    report = validate(GOOD, ValidationConfig(min_samples=100, expected_shape=[3]))
    with pytest.raises(GateFailed) as caught:
        require_passed(report)
    message = str(caught.value)
    assert "sample_shape [fail]: samples are [2]; expected [3]" in message
    assert "sample_count [fail]: 6 samples; expected at least 100" in message
    assert "labels" not in message
    assert caught.value.report is report
    require_passed(validate(GOOD, ValidationConfig(min_samples=1)))


def test_report_is_json_safe_and_renders() -> None:
    report = ValidationReport(
        checks=[Check("x", "fail", "ratio", float("inf")), Check("y", "pass", "ok", 0.5)],
        passed=False,
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False
    assert data["checks"][0] == {"name": "x", "status": "fail", "detail": "ratio", "value": None}
    assert data["checks"][1]["value"] == 0.5
    console = Console(width=120, record=True)
    console.print(validate(GOOD, ValidationConfig(min_samples=7)).render())
    text = console.export_text()
    assert "Data validation: FAILED" in text and "6 samples; expected at least 7" in text
