"""KS where raw samples exist: reference rows in the profile, the minimum of current rows,
and the binned fallback.

The hand-made case: current values sit exactly on the upper edges of the reference's bins
(the bin rule is right-closed, so each stays in its bin), as many per bin as the
reference holds. The histograms are then identical — chi-squared p = 1, no drift on
binned data — while the raw values form a different (discrete) distribution, which KS on
the samples sees.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from tinyops.errors import DataError
from tinyops.monitor.config import DriftConfig, MonitoringConfig
from tinyops.monitor.drift import compute_drift, ks_pvalue
from tinyops.monitor.reference import (
    PROFILE_VERSION,
    NumericProfile,
    ReferenceProfile,
    build_reference_profile,
)

ROWS = 800  # ≤ 1000: Evidently's rule (DriftConfig 'auto') picks KS given samples


def reference() -> NDArray[np.float64]:
    rng = np.random.default_rng(3)
    return np.column_stack([rng.normal(0.0, 1.0, ROWS), rng.uniform(0.0, 10.0, ROWS)])


def on_upper_edges(profile: ReferenceProfile, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each value moved to its bin's upper edge (the last, open bin: its reference mean)."""
    out = x.copy()
    for j, feat in enumerate(profile.features):
        assert isinstance(feat, NumericProfile)
        edges = np.asarray(feat.edges)
        bins = np.searchsorted(edges, x[:, j], side="left")  # the bin rule: edges < v
        uppers = np.append(edges, feat.bin_means[-1])
        out[:, j] = uppers[bins]
    return out


def test_edge_values_fool_the_binned_test_but_not_ks() -> None:
    x = reference()
    profile = build_reference_profile(x, ["a", "b"], reference_samples=1000, seed=1)
    assert profile.samples is not None and len(profile.samples) == ROWS  # all rows: ≤ 1000
    cur = on_upper_edges(profile, x)
    hist = profile.histograms(cur)
    for feat in profile.features:  # the histograms are exactly the reference's
        assert hist.features[feat.name].tolist() == list(feat.counts)

    binned = compute_drift(profile, hist)
    assert [(f.method, f.statistic, f.drifted) for f in binned.features] == [
        ("chisquare", 1.0, False),
        ("chisquare", 1.0, False),
    ]
    with_ks = compute_drift(
        profile, hist, reference_samples=profile.sample_matrix(), current_samples=cur
    )
    ref_rows = profile.sample_matrix()
    assert ref_rows is not None
    for j, row in enumerate(with_ks.features):
        assert row.method == "ks" and row.drifted
        assert row.statistic == pytest.approx(ks_pvalue(ref_rows[:, j], cur[:, j]), rel=1e-12)
        assert row.statistic < 0.001  # far below the threshold 0.05
    assert with_ks.dataset_drift and not binned.dataset_drift


def test_too_few_current_samples_fall_back_to_the_binned_method() -> None:
    x = reference()
    profile = build_reference_profile(x, ["a", "b"], reference_samples=500, seed=1)
    cur = on_upper_edges(profile, x)
    hist = profile.histograms(cur)
    ref_rows = profile.sample_matrix()
    few = cur[:99]  # one short of the default minimum, 100
    assert DriftConfig().ks_min_samples == 100
    report = compute_drift(profile, hist, reference_samples=ref_rows, current_samples=few)
    assert {f.method for f in report.features} == {"chisquare"}
    report = compute_drift(profile, hist, reference_samples=ref_rows, current_samples=cur[:100])
    assert {f.method for f in report.features} == {"ks"}
    # A lower minimum in the config lets 99 rows count.
    cfg = DriftConfig(ks_min_samples=99)
    report = compute_drift(profile, hist, cfg, reference_samples=ref_rows, current_samples=few)
    assert {f.method for f in report.features} == {"ks"}

    # KS asked for explicitly: an error for a caller that must supply samples, the binned
    # method 'auto' would pick from histograms alone for the server (binned_fallback).
    explicit = DriftConfig(numeric_method="ks")
    with pytest.raises(DataError, match=r"feature .a.: the KS test needs .*\(at least 100"):
        compute_drift(profile, hist, explicit, reference_samples=ref_rows, current_samples=few)
    report = compute_drift(
        profile,
        hist,
        explicit,
        reference_samples=ref_rows,
        current_samples=few,
        binned_fallback=True,
    )
    assert {f.method for f in report.features} == {"chisquare"}
    big = build_reference_profile(np.tile(x, (2, 1)), ["a", "b"])  # 1,600 rows: large
    report = compute_drift(big, big.histograms(cur), explicit, binned_fallback=True)
    assert {f.method for f in report.features} == {"wasserstein"}
    with pytest.raises(ValueError, match="ks_min_samples"):
        DriftConfig(ks_min_samples=0)


def test_reference_samples_are_a_seeded_subset_of_the_rows() -> None:
    x = reference()
    a = build_reference_profile(x, ["a", "b"], reference_samples=50, seed=7)
    b = build_reference_profile(x, ["a", "b"], reference_samples=50, seed=7)
    c = build_reference_profile(x, ["a", "b"], reference_samples=50, seed=8)
    assert a.samples == b.samples and a.samples != c.samples
    rows = a.sample_matrix()
    assert rows is not None and rows.shape == (50, 2)
    # Every kept row is a row of x to float32's precision (7 significant digits), in order.
    index = [int(np.argmin(np.abs(x - r).sum(axis=1))) for r in rows]
    assert index == sorted(index) and len(set(index)) == 50
    assert np.allclose(rows, x[index], rtol=1e-6, atol=0)
    assert build_reference_profile(x, ["a", "b"]).samples is None  # default: none


def test_profile_json_keeps_version_1_and_reads_old_profiles() -> None:
    x = reference()
    plain = build_reference_profile(x, ["a", "b"])
    assert "samples" not in plain.to_dict()  # byte-identical to what version 1 wrote
    with_rows = build_reference_profile(x, ["a", "b"], reference_samples=20, seed=1)
    data = json.loads(json.dumps(with_rows.to_dict()))
    assert data["version"] == PROFILE_VERSION == 1
    assert len(data["samples"]) == 20
    assert ReferenceProfile.from_dict(data) == with_rows
    # A reader that ignores the key (a version-1 agent) gets the same bins and counts.
    stripped = {k: v for k, v in data.items() if k != "samples"}
    assert ReferenceProfile.from_dict(stripped) == plain


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([], r"samples must be a non-empty list"),
        ("rows", r"samples must be a non-empty list"),
        ([[1.0, 2.0], [1.0]], r"samples\[1\] has 1 values; the profile has 2 features"),
        ([[1.0, "x"]], r"samples\[0\] must be a list of finite numbers"),
        ([[1.0, float("nan")]], r"samples\[0\] must be a list of finite numbers"),
    ],
)
def test_malformed_reference_samples_are_refused(samples: Any, message: str) -> None:
    data = build_reference_profile(reference(), ["a", "b"]).to_dict()
    data["samples"] = samples
    with pytest.raises(DataError, match=message):
        ReferenceProfile.from_dict(data)


def test_more_samples_than_reference_rows_are_refused() -> None:
    data = build_reference_profile(reference()[:5], ["a", "b"]).to_dict()
    data["samples"] = [[0.0, 1.0]] * 6
    with pytest.raises(DataError, match="samples has 6 rows, more than the profile's 5"):
        ReferenceProfile.from_dict(data)


def test_project_setting_reference_samples() -> None:
    assert MonitoringConfig().sampling.reference_samples == 1000
    cfg = MonitoringConfig.model_validate(
        {"sampling": {"max_samples_per_window": 50, "reference_samples": 0}}
    )
    assert cfg.sampling.reference_samples == 0
    with pytest.raises(ValueError, match="reference_samples"):
        MonitoringConfig.model_validate({"sampling": {"reference_samples": -1}})
    with pytest.raises(ValueError, match="reference_samples"):
        MonitoringConfig.model_validate({"sampling": {"reference_samples": 10_001}})
