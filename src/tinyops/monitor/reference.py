"""The reference profile: the bins a device fills and the reference histograms they compare to.

Devices cannot send raw samples home, so drift is computed on histograms. For the server's
histograms to be comparable with a device's, both must put every value into the same bin:
the profile is computed once from the training split when a bundle is made, ships inside
the bundle, and is the only source of bin edges on either side.

Per input feature (a column of the N×F matrix of model inputs, or of per-band or
per-channel summaries for images and audio) the profile holds:

- numeric feature: inner bin edges e[0] < … < e[k-2] splitting the line into k bins, the
  first and last open-ended. Edges are the reference quantiles 1/B, 2/B, …, (B-1)/B
  (B = `bins`, default 10; the "inverted CDF" quantile, so every edge is a reference value),
  deduplicated when values repeat. A feature with at most B distinct values is binned by
  value instead: the edges are its distinct values, one bin per value plus an overflow bin
  above the largest (empty in the reference). Also the reference counts per bin, the mean of
  the reference values in each bin, and the reference mean and standard deviation: these
  let the server estimate a Wasserstein distance from counts alone (see drift.py).
- categorical feature: a value→count table of the values seen in the reference; a device
  histogram has one bin per table value plus a last bin for values not in the table.

and for the model's outputs: the class distribution of its predictions (argmax of the
probabilities) and a histogram of its confidence (the largest class probability) over the
fixed bins [0, 0.1], (0.1, 0.2], …, (0.9, 1.0].

THE BIN RULE (the exact rule a device applies; `bin_counts` is it): with inner edges
e[0] < … < e[m-1], a value v goes to bin i, 0 ≤ i ≤ m, where i is the number of edges
strictly less than v. Bins are closed on the right:

    bin 0: v ≤ e[0]      bin i: e[i-1] < v ≤ e[i]      bin m: v > e[m-1]

A categorical value goes to the bin of its position in the table, or to the last bin when
it is not in the table (exact float equality). NaN and infinite values are refused.

`ReferenceProfile.to_dict` / `from_dict` give the JSON form that travels in the bundle.

Optionally (when the project lets devices send raw samples) the profile also carries
`samples`: a seeded random subset of at most `reference_samples` training rows, the
reference side of the server's Kolmogorov–Smirnov test. VERSIONING: `version` changes only
when a reader of the previous version would misread a profile. `samples` is an optional
key that version-1 readers (agents and servers in the field) ignore, so a profile with it
stays version 1, and a profile without it reads as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError

PROFILE_FORMAT = "tinyops.reference-profile"
PROFILE_VERSION = 1
HISTOGRAMS_FORMAT = "tinyops.drift-histograms"
# Significant digits of a reference sample in the JSON: float32's precision, what a device
# computes summaries in; full float64 repr would double the member's size for nothing.
SAMPLE_DIGITS = 7

DEFAULT_BINS = 10
# Confidence histogram: inner edges 0.1 … 0.9 make the bins [0, 0.1], (0.1, 0.2], …,
# (0.9, 1.0] (a probability is never below 0 nor above 1).
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
CONFIDENCE_NAME = "confidence"
PREDICTION_NAME = "prediction"


# ---------------------------------------------------------------------------- bin rule


def _sorted_finite(values: ArrayLike, what: str) -> NDArray[np.float64]:
    """`values` as a sorted float64 copy; DataError naming `what` if any is NaN or ±inf."""
    arr = np.array(values, dtype=np.float64).ravel()
    arr.sort()
    # After sorting, -inf is first and +inf / NaN are last: two reads check the whole column.
    if arr.size and not (math.isfinite(arr[0]) and math.isfinite(arr[-1])):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataError(f"{what}: {bad} of {arr.size} values are NaN or infinite")
    return arr


def _check_edges(edges: NDArray[np.float64], what: str) -> None:
    if edges.ndim != 1 or edges.size == 0:
        raise DataError(f"{what}: edges must be a non-empty list of numbers")
    if not np.all(np.isfinite(edges)):
        raise DataError(f"{what}: edges must be finite numbers")
    if edges.size > 1 and not np.all(np.diff(edges) > 0):
        raise DataError(f"{what}: edges must be strictly increasing, got {edges.tolist()}")


def _counts_sorted(sorted_values: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[Any]:
    """Counts per right-closed bin of already sorted values (len(edges) + 1 bins)."""
    # searchsorted(side="right") = number of values ≤ each edge: bin i holds those ≤ e[i]
    # minus those ≤ e[i-1], i.e. e[i-1] < v ≤ e[i]. Sorting 1e6 floats costs ~6 ms, far
    # less than searching each value among the edges.
    below = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], below, [sorted_values.size]))).astype(np.int64)


def bin_counts(values: ArrayLike, edges: ArrayLike, *, what: str = "values") -> NDArray[np.int64]:
    """Histogram of `values` over the right-closed bins of `edges` (the device's bin rule).

    Returns len(edges) + 1 counts: bin 0 holds v ≤ edges[0], bin i holds
    edges[i-1] < v ≤ edges[i], the last bin holds v > edges[-1].
    """
    e = np.asarray(edges, dtype=np.float64)
    _check_edges(e, what)
    return _counts_sorted(_sorted_finite(values, what), e)


def category_counts(
    values: ArrayLike, categories: ArrayLike, *, what: str = "values"
) -> NDArray[np.int64]:
    """Counts of each category (sorted, distinct), plus a last bin for any other value."""
    cats = np.asarray(categories, dtype=np.float64)
    if cats.size > 1 and not np.all(np.diff(cats) > 0):
        raise DataError(f"{what}: categories must be distinct and sorted")
    s = _sorted_finite(values, what)
    lo = np.searchsorted(s, cats, side="left")
    hi = np.searchsorted(s, cats, side="right")
    known = (hi - lo).astype(np.int64)
    return np.concatenate((known, [s.size - int(known.sum())])).astype(np.int64)


# ---------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class NumericProfile:
    """Bins and reference histogram of one numeric feature (or of the model's confidence)."""

    name: str
    edges: tuple[float, ...]
    """Inner bin edges, strictly increasing; len(edges) + 1 bins (the bin rule above)."""
    counts: tuple[int, ...]
    """Reference count per bin."""
    bin_means: tuple[float, ...]
    """Mean of the reference values in each bin. For a bin the reference leaves empty: the
    midpoint of a bounded bin, else its finite edge (where current mass is assumed to sit)."""
    mean: float
    std: float
    """Population standard deviation (ddof 0) of the reference values: the Wasserstein norm."""
    discrete: bool = False
    """True when the edges are the reference's distinct values (one bin per value)."""

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def reference_counts(self) -> NDArray[np.int64]:
        return np.asarray(self.counts, dtype=np.int64)

    def histogram(self, values: ArrayLike) -> NDArray[np.int64]:
        """Counts of `values` in this feature's bins."""
        return _counts_sorted(
            _sorted_finite(values, f"feature {self.name!r}"),
            np.asarray(self.edges, dtype=np.float64),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "numeric",
            "edges": list(self.edges),
            "counts": list(self.counts),
            "bin_means": list(self.bin_means),
            "mean": self.mean,
            "std": self.std,
            "discrete": self.discrete,
        }


@dataclass(frozen=True)
class CategoricalProfile:
    """Value→count table of one categorical feature (values as numbers, sorted)."""

    name: str
    values: tuple[float, ...]
    counts: tuple[int, ...]
    """Reference count of each value (same order); the histogram adds an 'other' bin."""

    @property
    def n_bins(self) -> int:
        return len(self.values) + 1

    def reference_counts(self) -> NDArray[np.int64]:
        """The reference histogram: the table's counts, then 0 for values not in the table."""
        return np.asarray((*self.counts, 0), dtype=np.int64)

    def histogram(self, values: ArrayLike) -> NDArray[np.int64]:
        return category_counts(values, self.values, what=f"feature {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "categorical",
            "values": list(self.values),
            "counts": list(self.counts),
        }


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True, eq=False)
class Histograms:
    """Counts of one window of current data in a profile's bins: what a device sends.

    `features` maps each feature name to its counts; `predictions` counts predictions per
    class; `confidence` counts confidences in the confidence bins. Histograms of several
    windows or devices add up (`merged`), since the bins are shared.
    """

    features: Mapping[str, NDArray[np.int64]]
    predictions: NDArray[np.int64] | None = None
    confidence: NDArray[np.int64] | None = None

    def merged(self, other: Histograms) -> Histograms:
        """The histograms of both windows together (bin-wise sums)."""
        if set(self.features) != set(other.features):
            raise DataError(
                "histograms to merge cover different features: "
                f"{sorted(set(self.features) ^ set(other.features))}"
            )

        def add(
            name: str, a: NDArray[np.int64] | None, b: NDArray[np.int64] | None
        ) -> NDArray[np.int64] | None:
            if a is None or b is None:
                if a is None and b is None:
                    return None
                raise DataError(f"histograms to merge: only one has {name!r}")
            if a.shape != b.shape:
                raise DataError(
                    f"histograms to merge: {name!r} has {a.size} bins in one, {b.size} in other"
                )
            return a + b

        feats = {}
        for name, counts in self.features.items():
            summed = add(name, counts, other.features[name])
            assert summed is not None
            feats[name] = summed
        return Histograms(
            features=feats,
            predictions=add(PREDICTION_NAME, self.predictions, other.predictions),
            confidence=add(CONFIDENCE_NAME, self.confidence, other.confidence),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HISTOGRAMS_FORMAT,
            "features": {k: v.tolist() for k, v in self.features.items()},
            "predictions": None if self.predictions is None else self.predictions.tolist(),
            "confidence": None if self.confidence is None else self.confidence.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histograms:
        """Parse the JSON form; DataError naming the key when a count is not an integer."""
        if not isinstance(data, Mapping):
            raise DataError("histograms: expected a JSON object")
        feats = data.get("features")
        if not isinstance(feats, Mapping):
            raise DataError("histograms: 'features' must be an object of name → counts")
        return cls(
            features={str(k): _int_list(v, f"histograms.features.{k}") for k, v in feats.items()},
            predictions=_opt_int_list(data.get("predictions"), "histograms.predictions"),
            confidence=_opt_int_list(data.get("confidence"), "histograms.confidence"),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """Everything drift detection needs from the training split, small enough for a bundle."""

    rows: int
    """Number of reference rows (Evidently's method choice depends on it)."""
    features: tuple[FeatureProfile, ...]
    prediction_counts: tuple[int, ...] | None = None
    """Reference count of predictions per class (index = class)."""
    confidence: NumericProfile | None = None
    """Histogram of the largest class probability over CONFIDENCE_EDGES."""
    samples: tuple[tuple[float, ...], ...] | None = None
    """Raw reference rows (the profile's feature order) for the KS test, or None."""

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> FeatureProfile:
        for f in self.features:
            if f.name == name:
                return f
        raise DataError(f"reference profile has no feature {name!r}; it has {self.feature_names}")

    def histograms(
        self,
        x: ArrayLike,
        *,
        probabilities: ArrayLike | None = None,
        predictions: ArrayLike | None = None,
    ) -> Histograms:
        """Bin raw current data (N×F, the profile's feature order) as a device would."""
        arr = _matrix(x, len(self.features), "current data")
        feats = {f.name: f.histogram(arr[:, j]) for j, f in enumerate(self.features)}
        pred_counts = conf_counts = None
        n_classes = None if self.prediction_counts is None else len(self.prediction_counts)
        if probabilities is not None or predictions is not None:
            if n_classes is None:
                raise DataError(
                    "current data has model outputs but the reference profile has no "
                    "prediction distribution"
                )
            preds, conf = _model_outputs(probabilities, predictions, arr.shape[0], n_classes)
            pred_counts = np.bincount(preds, minlength=n_classes).astype(np.int64)
            if conf is not None and self.confidence is not None:
                conf_counts = self.confidence.histogram(conf)
        return Histograms(features=feats, predictions=pred_counts, confidence=conf_counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "rows": self.rows,
            "features": [f.to_dict() for f in self.features],
            "prediction_counts": None
            if self.prediction_counts is None
            else list(self.prediction_counts),
            "confidence": None if self.confidence is None else self.confidence.to_dict(),
            # Only when present: a profile without samples stays byte-identical to what
            # earlier versions wrote (bundles are reproducible, caches keep hitting).
            **({} if self.samples is None else {"samples": [list(r) for r in self.samples]}),
        }

    def sample_matrix(self) -> NDArray[np.float64] | None:
        """The reference samples as a rows × features array, or None."""
        if self.samples is None:
            return None
        return np.asarray(self.samples, dtype=np.float64).reshape(-1, len(self.features))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Parse and check the JSON form; DataError naming the key path when malformed."""
        if not isinstance(data, Mapping):
            raise DataError("reference profile: expected a JSON object")
        if data.get("format") != PROFILE_FORMAT:
            raise DataError(
                f"reference profile: 'format' must be {PROFILE_FORMAT!r}, "
                f"got {data.get('format')!r}"
            )
        if data.get("version") != PROFILE_VERSION:
            raise DataError(
                f"reference profile: 'version' {data.get('version')!r} is not supported "
                f"(this tinyops reads version {PROFILE_VERSION})"
            )
        rows = data.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise DataError("reference profile: 'rows' must be a positive integer")
        raw_features = data.get("features")
        if not isinstance(raw_features, list) or not raw_features:
            raise DataError("reference profile: 'features' must be a non-empty list")
        features: list[FeatureProfile] = []
        for i, item in enumerate(raw_features):
            where = f"reference profile: features[{i}]"
            if not isinstance(item, Mapping):
                raise DataError(f"{where} must be an object")
            kind = item.get("kind")
            if kind == "numeric":
                features.append(_numeric_from_dict(item, where))
            elif kind == "categorical":
                features.append(_categorical_from_dict(item, where))
            else:
                raise DataError(f"{where}.kind must be 'numeric' or 'categorical', got {kind!r}")
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise DataError(f"reference profile: feature names repeat: {names}")
        preds = data.get("prediction_counts")
        conf = data.get("confidence")
        return cls(
            rows=rows,
            features=tuple(features),
            prediction_counts=None
            if preds is None
            else tuple(_int_list(preds, "reference profile: prediction_counts").tolist()),
            confidence=None
            if conf is None
            else _numeric_from_dict(conf, "reference profile: confidence"),
            samples=_samples_from_dict(data.get("samples"), len(features), rows),
        )


# ---------------------------------------------------------------------------- building


def build_reference_profile(
    x: ArrayLike,
    feature_names: Sequence[str] | None = None,
    *,
    categorical: Sequence[str] = (),
    probabilities: ArrayLike | None = None,
    predictions: ArrayLike | None = None,
    num_classes: int | None = None,
    bins: int = DEFAULT_BINS,
    reference_samples: int = 0,
    seed: int = 0,
) -> ReferenceProfile:
    """Profile the training split `x` (N×F) and the model's outputs on it.

    `categorical` names the features holding category codes. Give `probabilities` (N×C
    class probabilities; one column = a sigmoid's P(class 1)) for the class distribution and
    the confidence histogram, or only `predictions` (N class indices, `num_classes` classes,
    default max + 1) for the class distribution alone.

    `reference_samples` > 0 keeps that many rows of `x` (all when it has fewer), a random
    subset drawn with `seed` and kept in row order, rounded to SAMPLE_DIGITS significant
    digits: the reference side of the KS test.
    """
    if bins < 2:
        raise DataError(f"reference profile: bins must be at least 2, got {bins}")
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataError(f"reference data must be a 2-D array (rows × features), got {arr.shape}")
    n, n_features = arr.shape
    if n < 1 or n_features < 1:
        raise DataError(f"reference data must have rows and features, got shape {arr.shape}")
    names = (
        [f"feature_{j}" for j in range(n_features)]
        if feature_names is None
        else [str(s) for s in feature_names]
    )
    if len(names) != n_features:
        raise DataError(
            f"reference data has {n_features} features but {len(names)} feature names were given"
        )
    if len(set(names)) != len(names):
        raise DataError(f"feature names repeat: {names}")
    unknown = sorted(set(categorical) - set(names))
    if unknown:
        raise DataError(f"categorical features {unknown} are not among the feature names")
    cat = set(categorical)

    features: list[FeatureProfile] = []
    for j, name in enumerate(names):
        col = _sorted_finite(arr[:, j], f"feature {name!r}")
        if name in cat:
            features.append(_categorical_profile(name, col))
        else:
            features.append(_numeric_profile(name, col, bins))

    pred_counts: tuple[int, ...] | None = None
    confidence: NumericProfile | None = None
    if probabilities is not None or predictions is not None:
        if probabilities is not None:
            shape = np.shape(probabilities)
            n_classes = 0 if len(shape) != 2 else 2 if shape[1] == 1 else shape[1]
        elif num_classes is not None:
            n_classes = num_classes
        else:
            labels = np.asarray(predictions)
            n_classes = int(labels.max()) + 1 if labels.size else 0
        preds, conf = _model_outputs(probabilities, predictions, n, n_classes)
        pred_counts = tuple(np.bincount(preds, minlength=n_classes).tolist())
        if conf is not None:
            confidence = _binned_profile(
                CONFIDENCE_NAME,
                _sorted_finite(conf, CONFIDENCE_NAME),
                np.asarray(CONFIDENCE_EDGES),
                low=0.0,
                high=1.0,
            )
    if reference_samples < 0:
        raise DataError(
            f"reference profile: reference_samples must be ≥ 0, got {reference_samples}"
        )
    samples = None
    if reference_samples > 0:
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(n, size=min(reference_samples, n), replace=False))
        rows_kept = np.asarray(arr[picked], dtype=np.float64)
        samples = tuple(tuple(_round_sample(v) for v in row) for row in rows_kept.tolist())
    return ReferenceProfile(
        rows=n,
        features=tuple(features),
        prediction_counts=pred_counts,
        confidence=confidence,
        samples=samples,
    )


def _round_sample(value: float) -> float:
    return float(f"{value:.{SAMPLE_DIGITS}g}")


def _numeric_profile(name: str, s: NDArray[np.float64], bins: int) -> NumericProfile:
    """Quantile bins (or one bin per value when there are at most `bins` values)."""
    n = s.size
    starts = np.flatnonzero(s[1:] != s[:-1]) + 1  # index where each new distinct value starts
    if starts.size + 1 <= bins:
        distinct = s[np.concatenate(([0], starts))]
        return _binned_profile(name, s, distinct, discrete=True)
    # Inverted-CDF quantile q: the smallest value x with F(x) ≥ q, at sorted index ceil(qn)-1.
    # Integer arithmetic keeps ceil exact: ceil(i*n/B) = (i*n + B - 1) // B.
    idx = [(i * n + bins - 1) // bins - 1 for i in range(1, bins)]
    edges = np.unique(s[idx])
    return _binned_profile(name, s, edges)


def _binned_profile(
    name: str,
    s: NDArray[np.float64],
    edges: NDArray[np.float64],
    *,
    low: float | None = None,
    high: float | None = None,
    discrete: bool = False,
) -> NumericProfile:
    """Counts and per-bin means of sorted values `s` over `edges`; [low, high] = known range."""
    counts = _counts_sorted(s, edges)
    means = np.empty(counts.size, dtype=np.float64)
    filled = counts > 0
    if filled.any():
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[filled]
        means[filled] = np.add.reduceat(s, starts) / counts[filled]
    # Empty bins get where the Wasserstein estimate places current mass that lands there.
    for i in np.flatnonzero(~filled):
        lo = edges[i - 1] if i > 0 else low
        hi = edges[i] if i < edges.size else high
        if lo is not None and hi is not None:
            means[i] = (lo + hi) / 2
        else:
            finite = lo if lo is not None else hi
            assert finite is not None
            means[i] = finite
    # Rounding of a bin's mean may put it a hair outside the bin: clamp into it.
    upper = np.concatenate((edges, [np.inf]))
    lower = np.concatenate(([-np.inf], edges))
    means = np.clip(means, lower, upper)
    return NumericProfile(
        name=name,
        edges=tuple(edges.tolist()),
        counts=tuple(counts.tolist()),
        bin_means=tuple(means.tolist()),
        mean=float(s.mean()),
        std=float(s.std()),
        discrete=discrete,
    )


def _categorical_profile(name: str, s: NDArray[np.float64]) -> CategoricalProfile:
    starts = np.concatenate(([0], np.flatnonzero(s[1:] != s[:-1]) + 1))
    counts = np.diff(np.concatenate((starts, [s.size])))
    return CategoricalProfile(
        name=name, values=tuple(s[starts].tolist()), counts=tuple(counts.tolist())
    )


def _matrix(x: ArrayLike, n_features: int, what: str) -> NDArray[Any]:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise DataError(
            f"{what} must be a 2-D array with {n_features} feature columns (the profile's), "
            f"got shape {arr.shape}"
        )
    return arr


def _model_outputs(
    probabilities: ArrayLike | None,
    predictions: ArrayLike | None,
    n_rows: int,
    n_classes: int,
) -> tuple[NDArray[np.intp], NDArray[np.float64] | None]:
    """Predicted class per row and, from probabilities, the confidence (largest probability)."""
    if probabilities is not None and predictions is not None:
        raise DataError("give the model's probabilities or its predictions, not both")
    if probabilities is not None:
        p = np.asarray(probabilities, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != n_rows:
            raise DataError(
                f"probabilities must be a 2-D array with one row per sample ({n_rows}), "
                f"got shape {p.shape}"
            )
        if p.shape[1] == 1:  # a sigmoid output: P(class 1)
            p = np.concatenate((1.0 - p, p), axis=1)
        if p.shape[1] != n_classes:
            raise DataError(f"probabilities have {p.shape[1]} classes, the profile has {n_classes}")
        if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
            raise DataError("probabilities must be finite and within [0, 1]")
        return np.argmax(p, axis=1), p.max(axis=1)
    labels = np.asarray(predictions)
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise DataError(
            f"predictions must be a 1-D array with one class index per sample ({n_rows}), "
            f"got shape {labels.shape}"
        )
    if labels.size and (
        not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes
    ):
        raise DataError(f"predictions must be class indices in 0..{n_classes - 1}")
    return labels.astype(np.intp), None


# ---------------------------------------------------------------------------- JSON parsing


def _int_list(value: Any, where: str) -> NDArray[np.int64]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise DataError(f"{where} must be a list of integer counts")
    return np.asarray(value, dtype=np.int64)


def _opt_int_list(value: Any, where: str) -> NDArray[np.int64] | None:
    return None if value is None else _int_list(value, where)


def _float_list(value: Any, where: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise DataError(f"{where} must be a list of finite numbers")
    return [float(v) for v in value]


def _number(value: Any, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise DataError(f"{where} must be a finite number")
    return float(value)


def _name(item: Mapping[str, Any], where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}.name must be a non-empty string")
    return name


def _numeric_from_dict(item: Mapping[str, Any], where: str) -> NumericProfile:
    if not isinstance(item, Mapping):
        raise DataError(f"{where} must be an object")
    name = _name(item, where)
    edges = _float_list(item.get("edges"), f"{where}.edges")
    _check_edges(np.asarray(edges, dtype=np.float64), f"{where}.edges")
    counts = _int_list(item.get("counts"), f"{where}.counts")
    means = _float_list(item.get("bin_means"), f"{where}.bin_means")
    if counts.size != len(edges) + 1 or len(means) != len(edges) + 1:
        raise DataError(
            f"{where}: {len(edges)} edges need {len(edges) + 1} counts and bin_means, "
            f"got {counts.size} and {len(means)}"
        )
    if (counts < 0).any():
        raise DataError(f"{where}.counts must not be negative")
    std = _number(item.get("std"), f"{where}.std")
    if std < 0:
        raise DataError(f"{where}.std must not be negative")
    discrete = item.get("discrete", False)
    if not isinstance(discrete, bool):
        raise DataError(f"{where}.discrete must be true or false")
    return NumericProfile(
        name=name,
        edges=tuple(edges),
        counts=tuple(counts.tolist()),
        bin_means=tuple(means),
        mean=_number(item.get("mean"), f"{where}.mean"),
        std=std,
        discrete=discrete,
    )


def _samples_from_dict(
    value: Any, n_features: int, rows: int
) -> tuple[tuple[float, ...], ...] | None:
    """The optional `samples` key: at most `rows` lists of `n_features` finite numbers."""
    if value is None:
        return None
    where = "reference profile: samples"
    if not isinstance(value, list) or not value:
        raise DataError(f"{where} must be a non-empty list of rows")
    if len(value) > rows:
        raise DataError(f"{where} has {len(value)} rows, more than the profile's {rows}")
    out = []
    for i, row in enumerate(value):
        numbers = _float_list(row, f"{where}[{i}]")
        if len(numbers) != n_features:
            raise DataError(
                f"{where}[{i}] has {len(numbers)} values; the profile has {n_features} features"
            )
        out.append(tuple(numbers))
    return tuple(out)


def _categorical_from_dict(item: Mapping[str, Any], where: str) -> CategoricalProfile:
    name = _name(item, where)
    values = _float_list(item.get("values"), f"{where}.values")
    if len(values) > 1 and not all(a < b for a, b in pairwise(values)):
        raise DataError(f"{where}.values must be distinct and sorted")
    counts = _int_list(item.get("counts"), f"{where}.counts")
    if counts.size != len(values):
        raise DataError(f"{where}: {len(values)} values need as many counts, got {counts.size}")
    if (counts < 0).any():
        raise DataError(f"{where}.counts must not be negative")
    return CategoricalProfile(name=name, values=tuple(values), counts=tuple(counts.tolist()))
