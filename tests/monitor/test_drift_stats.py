"""Drift statistics on tiny histograms computed by hand, edge cases, bad input, the verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError, ProjectError
from tinyops.monitor.config import JS_THRESHOLD_BASE2, DriftConfig, MethodThresholds
from tinyops.monitor.drift import (
    chi_squared_pvalue,
    compute_drift,
    jensen_shannon_distance,
    ks_pvalue,
    normed_wasserstein,
    psi,
    two_proportion_z_pvalue,
    wasserstein_binned,
)
from tinyops.monitor.reference import (
    Histograms,
    NumericProfile,
    ReferenceProfile,
    build_reference_profile,
)

# ---------------------------------------------------------------------------- PSI


def test_psi_golden() -> None:
    # P = (0.5, 0.5), Q = (0.8, 0.2): 0.3·ln(1.6) + (-0.3)·ln(0.4) = 0.3·ln(4)
    assert psi([50, 50], [80, 20]) == pytest.approx(0.3 * math.log(4), rel=1e-12)
    assert psi([2, 3, 5], [20, 30, 50]) == pytest.approx(0.0, abs=1e-15)


def test_psi_empty_bins_use_epsilon() -> None:
    # P = (1, ε), Q = (ε, 1): (ε-1)·ln ε + (1-ε)·ln(1/ε) = 2(1-ε)·ln(1/ε), ε = 1e-4
    assert psi([10, 0], [0, 10]) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4), rel=1e-12)
    assert psi([10, 0], [0, 10], epsilon=1e-3) == pytest.approx(
        2 * (1 - 1e-3) * math.log(1e3), rel=1e-12
    )


# ---------------------------------------------------------------------------- Jensen–Shannon


def test_jensen_shannon_golden() -> None:
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    # KL(P‖M) = ½·log2(2/3) + ½·log2(2), KL(Q‖M) = log2(4/3)
    kl_p = 0.5 * math.log2(2 / 3) + 0.5 * math.log2(2)
    kl_q = math.log2(4 / 3)
    expected = math.sqrt((kl_p + kl_q) / 2)  # 0.5579
    assert jensen_shannon_distance([1, 1], [2, 0]) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.557923, abs=1e-6)


def test_jensen_shannon_bounds() -> None:
    assert jensen_shannon_distance([3, 0], [0, 7]) == pytest.approx(1.0)  # disjoint: maximum
    assert jensen_shannon_distance([3, 1], [30, 10]) == 0.0  # same shape
    # natural log: the same distance scaled by sqrt(ln 2)
    assert jensen_shannon_distance([3, 0], [0, 7], base=math.e) == pytest.approx(
        math.sqrt(math.log(2))
    )


# ---------------------------------------------------------------------------- chi², z, KS


def test_chi_squared_golden() -> None:
    # expected (50, 50), observed (60, 40): χ² = 100/50 + 100/50 = 4 with 1 dof;
    # P(χ²₁ > 4) = P(|Z| > 2) = erfc(2/√2)
    assert chi_squared_pvalue([50, 50], [60, 40]) == pytest.approx(math.erfc(math.sqrt(2)))
    assert chi_squared_pvalue([50, 50], [60, 40]) == pytest.approx(0.0455003, abs=1e-7)
    # expected counts are scaled to the current total: (25, 75)·(200/100) = (50, 150)
    # against (50, 150): identical shape
    assert chi_squared_pvalue([25, 75], [50, 150]) == pytest.approx(1.0)


def test_chi_squared_edge_cases() -> None:
    assert chi_squared_pvalue([5, 5, 0], [5, 4, 1]) == 0.0  # a bin the reference never saw
    assert chi_squared_pvalue([7, 0], [3, 0]) == 1.0  # one bin in use on both sides
    assert chi_squared_pvalue([4, 0, 6], [2, 0, 3]) == pytest.approx(1.0)  # empty bin dropped


def test_two_proportion_z_golden() -> None:
    # shares of the second value: 0.5 (n=100) and 0.4 (n=100), pooled 0.45;
    # z = 0.1 / sqrt(0.45·0.55·(1/100 + 1/100)) = 1.4213, two-sided p = erfc(z/√2)
    z = 0.1 / math.sqrt(0.45 * 0.55 * 0.02)
    assert two_proportion_z_pvalue([50, 50], [60, 40]) == pytest.approx(
        math.erfc(z / math.sqrt(2)), rel=1e-12
    )
    assert two_proportion_z_pvalue([50, 50], [60, 40]) == pytest.approx(0.155218, abs=1e-6)
    assert two_proportion_z_pvalue([9, 0, 0], [4, 0, 0]) == 1.0  # one value on both sides
    with pytest.raises(DataError, match="two values"):
        two_proportion_z_pvalue([1, 1, 1], [1, 1, 1])


def test_ks_golden() -> None:
    # disjoint samples of 4 and 4: D = 1; exact two-sided p = 2 / C(8, 4) = 2/70
    assert ks_pvalue([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert ks_pvalue([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- Wasserstein


def test_wasserstein_binned_golden_with_a_sign_change() -> None:
    # bins (-inf, 0], (0, 1], (1, inf) with reference means -1, 0.5, 2 and masses ¼, ½, ¼;
    # current masses ½, 0, ½. F - G is -¼·s(x) on the first bin (∫ s = 0 - (-1) = 1): 0.25;
    # on (0, 1] it runs linearly from -¼ to +¼ (uniform bin): two triangles, 2·½·½·¼ = 0.125;
    # on the last bin ¼·(1 - s(x)) with ∫ (1 - s) = 2 - 1 = 1: 0.25. Total 0.625.
    assert wasserstein_binned([0.0, 1.0], [-1.0, 0.5, 2.0], [1, 2, 1], [2, 0, 2]) == pytest.approx(
        0.625
    )


def test_wasserstein_binned_exact_for_values() -> None:
    # reference {0, 0, 1, 1}, current {1, 1, 1, 1}: half the mass moves by 1, W = 0.5;
    # reference std 0.5, normed W = 1.0
    profile = build_reference_profile(np.array([[0.0], [0.0], [1.0], [1.0]]))
    f = profile.features[0]
    assert isinstance(f, NumericProfile) and f.discrete
    assert normed_wasserstein(f, [0, 4, 0]) == pytest.approx(1.0)


def test_wasserstein_binned_two_quantile_bins() -> None:
    # reference 0..9 in two bins, (-inf, 4] (mean 2) and (4, inf) (mean 7); all current
    # values in the upper bin, spread like the reference's: W = 7 - 4.5 = 2.5; std = √8.25
    f = build_reference_profile(np.arange(10.0)[:, None], bins=2).features[0]
    assert isinstance(f, NumericProfile)
    assert f.edges == (4.0,) and f.bin_means == (2.0, 7.0)
    assert normed_wasserstein(f, [0, 10]) == pytest.approx(2.5 / math.sqrt(8.25))
    assert normed_wasserstein(f, [5, 5]) == 0.0


def test_wasserstein_binned_tracks_the_raw_distance_for_a_mean_shift() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(7)
    ref = rng.normal(size=20_000)
    cur = rng.normal(0.4, 1.0, size=20_000)
    f = build_reference_profile(ref[:, None]).features[0]
    assert isinstance(f, NumericProfile)
    raw = wasserstein_distance(ref, cur) / ref.std()
    binned = normed_wasserstein(f, f.histogram(cur))
    # the binned estimate sees mass cross the decile edges; it misses some of the tails
    assert 0.9 * raw <= binned <= raw * 1.01


# ---------------------------------------------------------------------------- compute_drift


def _profile(n: int = 2000, seed: int = 0) -> tuple[ReferenceProfile, NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(0, 1, n),  # temp
            rng.normal(10, 2, n),  # speed
            rng.integers(0, 4, n),  # mode (categorical)
            rng.integers(0, 3, n),  # gear: numeric with 3 values
        ]
    )
    names = ["temp", "speed", "mode", "gear"]
    return build_reference_profile(x, names, categorical=["mode"]), x


def test_identical_distributions_do_not_drift() -> None:
    profile, x = _profile()
    report = compute_drift(profile, profile.histograms(x))
    assert not report.dataset_drift
    assert report.drifted_features == ()
    methods = {f.feature: f.method for f in report.features}
    assert methods == {
        "temp": "wasserstein",
        "speed": "wasserstein",
        "mode": "jensenshannon",
        "gear": "jensenshannon",  # ≤ 5 values: tested like a categorical feature
    }
    for row in report.features:
        assert row.statistic == pytest.approx(0.0, abs=1e-12)


def test_disjoint_data_drifts_at_the_maximum() -> None:
    profile, x = _profile()
    far = x.copy()
    far[:, 0] += 100.0
    far[:, 2] = 9.0  # a mode the reference never had
    far[:, 3] = 7.0  # above every reference gear
    report = compute_drift(profile, profile.histograms(far))
    assert report.feature("mode").statistic == pytest.approx(1.0)  # JS of disjoint = 1
    assert report.feature("gear").statistic == pytest.approx(1.0)
    # all current mass above the last edge: counts cannot tell how far, so the estimate
    # saturates at moving all mass to the reference's top bin, W = top-bin mean - mean
    temp = profile.feature("temp")
    assert isinstance(temp, NumericProfile)
    assert report.feature("temp").statistic == pytest.approx(
        (temp.bin_means[-1] - temp.mean) / temp.std
    )
    assert report.feature("temp").drifted
    assert not report.feature("speed").drifted
    assert report.drift_share == 0.75 and report.dataset_drift


def test_constant_feature() -> None:
    x = np.column_stack([np.full(2000, 3.0), np.arange(2000.0)])
    profile = build_reference_profile(x, ["const", "ramp"])
    same = compute_drift(profile, profile.histograms(x))
    assert not same.feature("const").drifted
    moved = x.copy()
    moved[:, 0] = 4.0
    report = compute_drift(profile, profile.histograms(moved))
    assert report.feature("const").drifted
    assert report.feature("const").method == "jensenshannon"
    # forced Wasserstein: the constant's std 0 is floored at 0.001 (Evidently); current
    # mass above the reference maximum is placed at it, so only PSI/JS see this move
    forced = compute_drift(
        profile,
        profile.histograms(x),
        DriftConfig(per_feature_method={"const": "wasserstein"}),
    )
    assert forced.feature("const").statistic == 0.0


def test_small_reference_uses_p_value_tests() -> None:
    profile, x = _profile(n=500)
    rng = np.random.default_rng(1)
    cur = x[:300].copy()
    cur[:, 0] += 1.0
    report = compute_drift(profile, profile.histograms(cur))
    methods = {f.feature: f.method for f in report.features}
    assert methods == {
        "temp": "chisquare",
        "speed": "chisquare",
        "mode": "chisquare",
        "gear": "chisquare",
    }
    assert report.feature("temp").drifted
    with_samples = compute_drift(
        profile, profile.histograms(cur), reference_samples=x, current_samples=cur
    )
    assert with_samples.feature("temp").method == "ks"
    assert with_samples.feature("temp").statistic < 1e-6
    assert with_samples.feature("speed").statistic == pytest.approx(ks_pvalue(x[:, 1], cur[:, 1]))
    # two values in use → z-test
    two = build_reference_profile(
        rng.integers(0, 2, (400, 1)).astype(float), ["door"], categorical=["door"]
    )
    r2 = compute_drift(two, two.histograms(np.ones((100, 1))))
    assert r2.feature("door").method == "z" and r2.feature("door").drifted


def test_dataset_rule_and_configured_share() -> None:
    profile, x = _profile()
    cur = x.copy()
    cur[:, 0] += 1.0
    cur[:, 1] += 2.0  # 2 of 4 features drift: share 0.5
    report = compute_drift(profile, profile.histograms(cur))
    assert report.drifted_features == ("temp", "speed")
    assert report.drift_share == 0.5 and report.dataset_drift
    assert not compute_drift(
        profile, profile.histograms(cur), DriftConfig(drift_share=0.6)
    ).dataset_drift
    one = x.copy()
    one[:, 0] += 1.0
    assert not compute_drift(profile, profile.histograms(one)).dataset_drift


def test_methods_and_thresholds_are_configurable() -> None:
    profile, x = _profile()
    cur = x.copy()
    cur[:, 0] += 0.3
    cfg = DriftConfig(
        numeric_method="psi",
        per_feature_method={"mode": "chisquare"},
        per_feature_threshold={"temp": 5.0},
        thresholds=MethodThresholds(psi=0.05),
    )
    report = compute_drift(profile, profile.histograms(cur), cfg)
    temp, speed, mode = report.feature("temp"), report.feature("speed"), report.feature("mode")
    assert (temp.method, temp.threshold, temp.drifted) == ("psi", 5.0, False)
    assert temp.statistic > 0.05
    assert (speed.method, speed.threshold) == ("psi", 0.05)
    assert (mode.method, mode.threshold) == ("chisquare", 0.05)
    assert DriftConfig().thresholds.jensenshannon == pytest.approx(0.1 / math.sqrt(math.log(2)))
    assert abs(JS_THRESHOLD_BASE2 - 0.120112) < 1e-6


def test_prediction_and_confidence_drift() -> None:
    rng = np.random.default_rng(5)
    n = 3000
    ref_probs = rng.dirichlet([8.0, 1.0, 1.0], size=n)  # confident, mostly class 0
    profile = build_reference_profile(rng.normal(size=(n, 1)), probabilities=ref_probs)
    same = compute_drift(
        profile,
        profile.histograms(
            rng.normal(size=(n, 1)), probabilities=rng.dirichlet([8.0, 1.0, 1.0], size=n)
        ),
    )
    assert same.prediction is not None and not same.prediction.drifted
    assert same.confidence is not None and not same.confidence.drifted
    unsure = rng.dirichlet([1.0, 1.0, 1.0], size=n)  # uncertain, classes even
    report = compute_drift(
        profile, profile.histograms(rng.normal(size=(n, 1)), probabilities=unsure)
    )
    assert report.prediction is not None and report.confidence is not None
    assert (report.prediction.method, report.prediction.drifted) == ("jensenshannon", True)
    assert (report.confidence.method, report.confidence.drifted) == ("wasserstein", True)
    assert report.prediction.kind == "prediction" and report.confidence.kind == "confidence"
    # features alone decide the dataset verdict
    assert not report.dataset_drift


def test_report_to_dict_is_strict_json() -> None:
    profile, x = _profile()
    report = compute_drift(profile, profile.histograms(x[:100]))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["dataset_drift"] is False
    assert [r["feature"] for r in data["features"]] == ["temp", "speed", "mode", "gear"]
    assert set(data["features"][0]) == {
        "feature",
        "kind",
        "method",
        "statistic",
        "threshold",
        "drifted",
    }


# ---------------------------------------------------------------------------- bad input


def _hist(profile: ReferenceProfile, **features: ArrayLike) -> Histograms:
    base = {f.name: f.reference_counts() for f in profile.features}
    base.update({k: np.asarray(v) for k, v in features.items()})
    return Histograms(base)


def test_bad_histograms_are_refused_with_the_feature_named() -> None:
    profile, _ = _profile()
    n_temp = profile.feature("temp").n_bins
    with pytest.raises(DataError, match=f"feature 'temp': expected {n_temp} bin counts, got 3"):
        compute_drift(profile, _hist(profile, temp=[1, 2, 3]))
    with pytest.raises(DataError, match="feature 'mode': bin counts must not be negative"):
        compute_drift(profile, _hist(profile, mode=[5, -1, 2, 3, 0]))
    with pytest.raises(DataError, match="feature 'mode': bin counts must be whole numbers"):
        compute_drift(profile, _hist(profile, mode=[5.5, 1, 2, 3, 0]))
    with pytest.raises(DataError, match="feature 'gear': the current histogram is empty"):
        compute_drift(profile, _hist(profile, gear=[0, 0, 0, 0]))
    with pytest.raises(DataError, match=r"unknown features \['humidity'\]"):
        compute_drift(profile, _hist(profile, humidity=[1, 2]))
    partial = Histograms({"temp": profile.feature("temp").reference_counts()})
    with pytest.raises(DataError, match=r"features \['speed', 'mode', 'gear'\] are missing"):
        compute_drift(profile, partial)
    with pytest.raises(DataError, match="predictions given"):
        compute_drift(profile, Histograms(_hist(profile).features, predictions=np.array([1, 2])))


def test_bad_config_is_refused() -> None:
    profile, x = _profile()
    h = profile.histograms(x)
    with pytest.raises(ProjectError, match=r"per_feature_method: unknown features \['rpm'\]"):
        compute_drift(profile, h, DriftConfig(per_feature_method={"rpm": "psi"}))
    with pytest.raises(ProjectError, match="'wasserstein' needs a numeric feature"):
        compute_drift(profile, h, DriftConfig(per_feature_method={"mode": "wasserstein"}))
    with pytest.raises(DataError, match="feature 'temp': the KS test needs raw"):
        compute_drift(profile, h, DriftConfig(numeric_method="ks"))
    with pytest.raises(DataError, match="4 feature columns"):
        compute_drift(profile, h, reference_samples=x[:, :2], current_samples=x[:, :2])
    with pytest.raises(ValueError, match="drift_share"):
        DriftConfig(drift_share=0)
    with pytest.raises(ValueError, match="extra"):
        DriftConfig(method="ks")  # type: ignore[call-arg]
