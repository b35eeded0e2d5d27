"""Drift statistics: how far a window of current data has moved from the reference.

Everything here works on histograms in the reference profile's bins (what devices send),
plus raw samples where a sampling policy lets some reach the server (for the KS test).
Each statistic compares the reference counts p (n_ref values) with the current counts q
(n_cur values) of one feature; P = p / n_ref and Q = q / n_cur are the proportions.

    psi            Σ (Q_i - P_i) ln(Q_i / P_i), an empty bin's proportion replaced by ε
                   (DriftConfig.psi_epsilon, default 1e-4). Distance, 0 = identical.
    jensenshannon  sqrt((KL(P‖M) + KL(Q‖M)) / 2), M = (P + Q) / 2, logarithms base 2 (as
                   scipy.spatial.distance.jensenshannon(P, Q, base=2)); 0 identical, 1
                   disjoint.
    wasserstein    (normed) W1 between the reference and the current distribution divided
                   by the reference standard deviation (ddof 0, at least 0.001), as Evidently
                   norms it. From counts alone W1 is estimated by assuming that within each
                   bin the current values are spread like the reference values (docs/drift.md
                   derives the formula); exact for features binned by value.
    chisquare      p-value of Pearson's chi-squared goodness-of-fit test of q against the
                   expected counts p · n_cur / n_ref, over the bins where either is non-zero
                   (as Evidently's `chisquare`); a current value in a bin the reference never
                   saw gives p = 0.
    z              p-value of the two-sided two-proportion z-test, for exactly two bins in use.
    ks             p-value of the two-sample Kolmogorov–Smirnov test on raw samples
                   (scipy.stats.ks_2samp).

A p-value statistic signals drift when it is below its threshold; a distance when it is at
or above it (Evidently's comparisons). The method per feature and the thresholds come from
DriftConfig (config.py); `compute_drift` applies them and the dataset rule (drift when at
least `drift_share` of the features drift) and returns a DriftReport.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError, ProjectError
from tinyops.monitor.config import P_VALUE_METHODS, DriftConfig, Method
from tinyops.monitor.reference import (
    PREDICTION_NAME,
    CategoricalProfile,
    FeatureProfile,
    Histograms,
    NumericProfile,
    ReferenceProfile,
)

# Evidently's floor for the Wasserstein norm: a constant reference feature (std 0) would
# otherwise turn any change into an infinite distance.
MIN_WASSERSTEIN_NORM = 0.001

Kind = Literal["numeric", "categorical", "prediction", "confidence"]


# ---------------------------------------------------------------------------- statistics


def _counts_pair(
    reference: ArrayLike, current: ArrayLike, what: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Both histograms as floats, checked: same number of bins, non-negative, non-empty."""
    p = np.asarray(reference, dtype=np.float64)
    q = np.asarray(current, dtype=np.float64)
    if p.ndim != 1 or q.ndim != 1 or p.size != q.size:
        raise DataError(
            f"{what}: the reference histogram has {p.size} bins, the current one {q.size}"
        )
    for name, h in (("reference", p), ("current", q)):
        if not np.all(np.isfinite(h)) or (h < 0).any():
            raise DataError(f"{what}: {name} counts must be finite and not negative")
        if h.sum() <= 0:
            raise DataError(f"{what}: the {name} histogram is empty (no counts)")
    return p, q


def psi(reference: ArrayLike, current: ArrayLike, epsilon: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins."""
    p, q = _counts_pair(reference, current, "psi")
    pp = p / p.sum()
    qq = q / q.sum()
    pp = np.where(pp == 0, epsilon, pp)
    qq = np.where(qq == 0, epsilon, qq)
    return float(np.sum((qq - pp) * np.log(qq / pp)))


def jensen_shannon_distance(reference: ArrayLike, current: ArrayLike, base: float = 2.0) -> float:
    """Jensen–Shannon distance of two histograms (scipy's jensenshannon with `base`)."""
    p, q = _counts_pair(reference, current, "jensenshannon")
    pp = p / p.sum()
    qq = q / q.sum()
    m = (pp + qq) / 2

    def kl_to_m(a: NDArray[np.float64]) -> float:
        used = a > 0  # 0 · log 0 = 0
        return float(np.sum(a[used] * np.log(a[used] / m[used])))

    js = (kl_to_m(pp) + kl_to_m(qq)) / 2 / math.log(base)
    return math.sqrt(max(js, 0.0))  # rounding can leave -1e-17 for identical histograms


def wasserstein_binned(
    edges: ArrayLike, bin_means: ArrayLike, reference: ArrayLike, current: ArrayLike
) -> float:
    """First Wasserstein distance (in the feature's units) estimated from two histograms.

    `edges` are the inner edges of right-closed bins (the first and last open-ended) and
    `bin_means` the mean of the reference values in each bin. The current values in a bin
    are assumed to be spread like the reference values in it; the integral of |F - G| (F
    the reference CDF, G the current one) is then exact on the open-ended bins and on bins
    where F - G keeps its sign, and takes the reference values as uniform between
    2·mean - upper edge and the upper edge where it changes sign. docs/drift.md derives it.
    """
    e = np.asarray(edges, dtype=np.float64)
    mu = np.asarray(bin_means, dtype=np.float64)
    p, q = _counts_pair(reference, current, "wasserstein")
    if mu.size != p.size or e.size + 1 != p.size:
        raise DataError(
            f"wasserstein: {e.size} edges need {e.size + 1} bin means and counts, "
            f"got {mu.size} and {p.size}"
        )
    if p.size == 1:
        return 0.0
    d = p / p.sum() - q / q.sum()  # reference minus current mass per bin
    a = np.concatenate(([0.0], np.cumsum(d)[:-1]))  # F - G at each bin's lower edge
    c = a + d  # F - G at each bin's upper edge
    # First bin (-inf, e0]: F - G = d0 · s(x), s the within-bin CDF, ∫ s dx = e0 - mean0.
    total = abs(d[0]) * (e[0] - mu[0])
    # Last bin (e_last, inf): F - G = a · (1 - s(x)), ∫ (1 - s) dx = mean_last - e_last.
    total += abs(a[-1]) * (mu[-1] - e[-1])
    if p.size > 2:
        lo, hi = e[:-1], e[1:]
        ai, ci, di = a[1:-1], c[1:-1], d[1:-1]
        shape_integral = hi - mu[1:-1]  # ∫ s dx over the bin
        keeps_sign = ai * ci >= 0
        same = np.abs(ai * (hi - lo) + di * shape_integral)
        x0 = np.clip(hi - 2 * shape_integral, lo, hi)
        spread = np.abs(ai) + np.abs(ci)
        crossing = np.abs(ai) * (x0 - lo) + (hi - x0) * (ai * ai + ci * ci) / (
            2 * np.where(spread > 0, spread, 1.0)
        )
        total += float(np.sum(np.where(keeps_sign, same, crossing)))
    return float(total)


def normed_wasserstein(profile: NumericProfile, current: ArrayLike) -> float:
    """Binned Wasserstein distance in reference standard deviations (Evidently's norm)."""
    w = wasserstein_binned(profile.edges, profile.bin_means, profile.counts, current)
    return w / max(profile.std, MIN_WASSERSTEIN_NORM)


def chi_squared_pvalue(reference: ArrayLike, current: ArrayLike) -> float:
    """p-value of the chi-squared test of the current counts against the reference shape."""
    from scipy.special import chdtrc

    p, q = _counts_pair(reference, current, "chisquare")
    expected = p * (q.sum() / p.sum())
    used = (expected > 0) | (q > 0)
    if np.any(used & (expected == 0)):
        return 0.0  # a value the reference never had: infinite statistic
    e, o = expected[used], q[used]
    dof = int(used.sum()) - 1
    if dof < 1:
        return 1.0  # one bin in use on both sides: nothing can differ
    stat = float(np.sum((o - e) ** 2 / e))
    return float(chdtrc(dof, stat))


def two_proportion_z_pvalue(reference: ArrayLike, current: ArrayLike) -> float:
    """p-value of the two-sided two-proportion z-test; at most two bins may be non-zero."""
    p, q = _counts_pair(reference, current, "z")
    used = np.flatnonzero((p > 0) | (q > 0))
    if used.size > 2:
        raise DataError(f"z: the test compares two values, the histograms use {used.size} bins")
    if used.size == 1:
        return 1.0  # both sides hold only the same value
    n1, n2 = p.sum(), q.sum()
    share_ref = p[used[1]] / n1  # share of the second value on each side
    share_cur = q[used[1]] / n2
    pooled = (p[used[1]] + q[used[1]]) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (share_ref - share_cur) / se
    return math.erfc(abs(z) / math.sqrt(2.0))


def ks_pvalue(reference_samples: ArrayLike, current_samples: ArrayLike) -> float:
    """p-value of the two-sample Kolmogorov–Smirnov test (two-sided, scipy.stats.ks_2samp)."""
    from scipy.stats import ks_2samp

    a = np.asarray(reference_samples, dtype=np.float64).ravel()
    b = np.asarray(current_samples, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise DataError("ks: both samples must hold at least one value")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise DataError("ks: samples must be finite numbers")
    return float(ks_2samp(a, b).pvalue)


# ---------------------------------------------------------------------------- report


@dataclass(frozen=True)
class FeatureDrift:
    """One row of a drift report: a feature (or the predictions, or the confidence)."""

    feature: str
    kind: Kind
    method: Method
    statistic: float
    """The p-value for ks, chisquare and z; the distance for the others."""
    threshold: float
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "method": self.method,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift, the dataset verdict, and prediction and confidence drift."""

    features: tuple[FeatureDrift, ...]
    drift_share_threshold: float
    reference_rows: int
    prediction: FeatureDrift | None = None
    confidence: FeatureDrift | None = None

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.feature for f in self.features if f.drifted)

    @property
    def drift_share(self) -> float:
        """Share of the features that drifted."""
        return len(self.drifted_features) / len(self.features) if self.features else 0.0

    @property
    def dataset_drift(self) -> bool:
        """Evidently's rule: drift when the share of drifted features reaches the threshold."""
        return bool(self.features) and self.drift_share >= self.drift_share_threshold

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "drift_share_threshold": self.drift_share_threshold,
            "drifted_features": list(self.drifted_features),
            "reference_rows": self.reference_rows,
            "features": [f.to_dict() for f in self.features],
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "confidence": None if self.confidence is None else self.confidence.to_dict(),
        }


# ---------------------------------------------------------------------------- computation


def compute_drift(
    profile: ReferenceProfile,
    current: Histograms,
    config: DriftConfig | None = None,
    *,
    reference_samples: ArrayLike | None = None,
    current_samples: ArrayLike | None = None,
    binned_fallback: bool = False,
) -> DriftReport:
    """Compare current histograms with the reference profile, feature by feature.

    `reference_samples` and `current_samples` (rows × the profile's features, in its order)
    are raw values where they exist; the KS test needs both, and at least
    `config.ks_min_samples` current rows. A feature the config gives KS (explicitly, or
    'auto' with a small reference) without them raises DataError, or with
    `binned_fallback` gets the method 'auto' picks from histograms alone (what the server
    does: whether a selection holds enough raw samples is not the caller's mistake).
    Histograms that do not fit the
    profile (unknown or missing features, wrong bin counts, negative counts) raise DataError
    naming the feature; config entries naming unknown features raise ProjectError.
    """
    cfg = config or DriftConfig()
    names = profile.feature_names
    for key, entries in (
        ("per_feature_method", cfg.per_feature_method),
        ("per_feature_threshold", cfg.per_feature_threshold),
    ):
        unknown = sorted(set(entries) - set(names))
        if unknown:
            raise ProjectError(
                f"drift config {key}: unknown features {unknown}; the profile has {list(names)}"
            )
    unknown = sorted(set(current.features) - set(names))
    if unknown:
        raise DataError(f"histograms: unknown features {unknown}; the profile has {list(names)}")
    missing = [n for n in names if n not in current.features]
    if missing:
        raise DataError(f"histograms: features {missing} are missing")

    ref_raw = _samples(reference_samples, len(names), "reference samples")
    cur_raw = _samples(current_samples, len(names), "current samples")
    small = profile.rows <= cfg.small_reference_rows
    enough = ref_raw is not None and cur_raw is not None and cur_raw.shape[0] >= cfg.ks_min_samples

    rows = []
    for j, feat in enumerate(profile.features):
        counts = _checked_counts(f"feature {feat.name!r}", current.features[feat.name], feat.n_bins)
        samples = None
        if enough:
            assert ref_raw is not None and cur_raw is not None
            samples = (ref_raw[:, j], cur_raw[:, j])
        method = cfg.per_feature_method.get(feat.name) or _auto_method(
            feat, counts, cfg, small, samples is not None
        )
        if method == "ks" and samples is None and binned_fallback:
            method = _auto_method(feat, counts, cfg, small, False, "auto")
        kind: Kind = "numeric" if isinstance(feat, NumericProfile) else "categorical"
        rows.append(_row(feat, kind, method, counts, cfg, samples))

    prediction = confidence = None
    if current.predictions is not None:
        if profile.prediction_counts is None:
            raise DataError("histograms: predictions given, but the profile has no class counts")
        table = CategoricalProfile(
            PREDICTION_NAME,
            tuple(float(i) for i in range(len(profile.prediction_counts))),
            profile.prediction_counts,
        )
        # Predictions are classes 0..C-1 by construction: the table's 'other' bin stays 0.
        counts = np.append(
            _checked_counts("predictions", current.predictions, len(profile.prediction_counts)),
            0.0,
        )
        method = _auto_method(table, counts, cfg, small, False, cfg.prediction_method)
        prediction = _row(table, "prediction", method, counts, cfg, None)
    if current.confidence is not None:
        if profile.confidence is None:
            raise DataError("histograms: confidence given, but the profile has no confidence")
        counts = _checked_counts("confidence", current.confidence, profile.confidence.n_bins)
        method = _auto_method(profile.confidence, counts, cfg, small, False, cfg.confidence_method)
        confidence = _row(profile.confidence, "confidence", method, counts, cfg, None)

    return DriftReport(
        features=tuple(rows),
        drift_share_threshold=cfg.drift_share,
        reference_rows=profile.rows,
        prediction=prediction,
        confidence=confidence,
    )


def _samples(raw: ArrayLike | None, n_features: int, what: str) -> NDArray[np.float64] | None:
    if raw is None:
        return None
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != n_features or arr.shape[0] == 0:
        raise DataError(
            f"{what} must be a 2-D array with rows and {n_features} feature columns "
            f"(the profile's), got shape {arr.shape}"
        )
    return arr


def _checked_counts(label: str, counts: ArrayLike, n_bins: int) -> NDArray[np.float64]:
    """A current histogram as floats; DataError naming `label` when it does not fit."""
    arr = np.asarray(counts)
    if arr.ndim != 1 or arr.size != n_bins:
        raise DataError(f"{label}: expected {n_bins} bin counts, got {arr.size}")
    if arr.dtype.kind not in "iuf" or not np.all(np.mod(arr, 1) == 0):
        raise DataError(f"{label}: bin counts must be whole numbers, got {arr.tolist()}")
    if (arr < 0).any():
        raise DataError(f"{label}: bin counts must not be negative, got {arr.tolist()}")
    if arr.sum() == 0:
        raise DataError(f"{label}: the current histogram is empty (all counts are 0)")
    return arr.astype(np.float64)


def _auto_method(
    feat: FeatureProfile,
    counts: NDArray[np.float64],
    cfg: DriftConfig,
    small: bool,
    has_samples: bool,
    override: str | None = None,
) -> Method:
    """Evidently's default method choice, on what a histogram can tell."""
    chosen = override or (
        cfg.numeric_method if isinstance(feat, NumericProfile) else cfg.categorical_method
    )
    if chosen != "auto":
        return cast(Method, chosen)
    in_use = int(np.count_nonzero((feat.reference_counts() > 0) | (counts > 0)))
    categorical_like = isinstance(feat, CategoricalProfile) or (
        feat.discrete and in_use <= cfg.discrete_max_values
    )
    if categorical_like:
        if small:
            return "z" if in_use <= 2 else "chisquare"
        return "jensenshannon"
    if small:
        return "ks" if has_samples else "chisquare"
    return "wasserstein"


def _row(
    feat: FeatureProfile,
    kind: Kind,
    method: Method,
    counts: NDArray[np.float64],
    cfg: DriftConfig,
    samples: tuple[NDArray[np.float64], NDArray[np.float64]] | None,
) -> FeatureDrift:
    ref = feat.reference_counts()
    label = f"feature {feat.name!r}" if kind in ("numeric", "categorical") else kind
    if method in ("wasserstein", "ks") and not isinstance(feat, NumericProfile):
        raise ProjectError(f"drift method {method!r} needs a numeric feature, {label} is {kind}")
    stat: float
    if method == "wasserstein":
        assert isinstance(feat, NumericProfile)
        stat = normed_wasserstein(feat, counts)
    elif method == "ks":
        if samples is None:
            raise DataError(
                f"{label}: the KS test needs raw reference and current samples (at least "
                f"{cfg.ks_min_samples} current rows, the config's ks_min_samples)"
            )
        stat = ks_pvalue(*samples)
    elif method == "psi":
        stat = psi(ref, counts, cfg.psi_epsilon)
    elif method == "jensenshannon":
        stat = jensen_shannon_distance(ref, counts)
    elif method == "chisquare":
        stat = chi_squared_pvalue(ref, counts)
    else:
        in_use = int(np.count_nonzero((ref > 0) | (counts > 0)))
        if in_use > 2:
            raise ProjectError(f"drift method 'z' compares two values; {label} has {in_use} in use")
        stat = two_proportion_z_pvalue(ref, counts)
    threshold = cfg.per_feature_threshold.get(feat.name, cfg.thresholds.of(method))
    drifted = stat < threshold if method in P_VALUE_METHODS else stat >= threshold
    return FeatureDrift(
        feature=feat.name,
        kind=kind,
        method=method,
        statistic=stat,
        threshold=threshold,
        drifted=bool(drifted),
    )
