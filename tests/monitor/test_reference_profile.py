"""The reference profile: the bin rule, quantile and per-value edges, model outputs, JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from tinyops.errors import DataError
from tinyops.monitor.reference import (
    CONFIDENCE_EDGES,
    CategoricalProfile,
    Histograms,
    NumericProfile,
    ReferenceProfile,
    bin_counts,
    build_reference_profile,
    category_counts,
)


def test_bin_rule_is_right_closed_with_open_ends() -> None:
    # edges 1, 2, 3: bins (-inf, 1], (1, 2], (2, 3], (3, inf); a value on an edge belongs
    # to the bin below it.
    values = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, -1e9, 1e9]
    assert bin_counts(values, [1.0, 2.0, 3.0]).tolist() == [3, 2, 2, 2]


def test_bin_counts_refuses_nan_and_bad_edges() -> None:
    with pytest.raises(DataError, match="NaN or infinite"):
        bin_counts([1.0, math.nan], [0.0])
    with pytest.raises(DataError, match="strictly increasing"):
        bin_counts([1.0], [2.0, 1.0])
    with pytest.raises(DataError, match="non-empty"):
        bin_counts([1.0], [])


def test_category_counts_put_unknown_values_in_the_last_bin() -> None:
    assert category_counts([1, 1, 2, 5, 7, -3], [1, 2, 5]).tolist() == [2, 1, 1, 2]


def test_quantile_edges_counts_and_bin_means() -> None:
    # 1..20, ten bins: the inverted-CDF decile i/10 is the value at sorted index 2i-1,
    # i.e. 2i; every bin then holds two consecutive values.
    profile = build_reference_profile(np.arange(1.0, 21.0)[:, None], ["x"])
    f = profile.features[0]
    assert isinstance(f, NumericProfile)
    assert f.edges == (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0)
    assert f.counts == (2,) * 10
    assert f.bin_means == (1.5, 3.5, 5.5, 7.5, 9.5, 11.5, 13.5, 15.5, 17.5, 19.5)
    assert f.mean == 10.5
    assert f.std == pytest.approx(math.sqrt((20**2 - 1) / 12))  # std of 1..n, ddof 0
    assert not f.discrete
    assert profile.rows == 20


def test_repeated_quantiles_are_deduplicated() -> None:
    # 50 zeros then 1..50: deciles 1-5 are all 0, deciles 6-9 are 10, 20, 30, 40.
    values = np.array([0.0] * 50 + list(range(1, 51)), dtype=float)
    f = build_reference_profile(values[:, None]).features[0]
    assert isinstance(f, NumericProfile)
    assert f.edges == (0.0, 10.0, 20.0, 30.0, 40.0)
    assert f.counts == (50, 10, 10, 10, 10, 10)
    assert f.bin_means == (0.0, 5.5, 15.5, 25.5, 35.5, 45.5)


def test_few_distinct_values_get_one_bin_each_plus_overflow() -> None:
    f = build_reference_profile(np.array([[0.0], [0.0], [0.0], [1.0], [1.0], [2.0]])).features[0]
    assert isinstance(f, NumericProfile)
    assert f.discrete
    assert f.edges == (0.0, 1.0, 2.0)
    assert f.counts == (3, 2, 1, 0)
    # the empty overflow bin's mean is its finite edge: where unknown mass is placed
    assert f.bin_means == (0.0, 1.0, 2.0, 2.0)
    assert f.histogram([0.0, 0.5, 2.0, 7.0]).tolist() == [1, 1, 1, 1]


def test_constant_feature() -> None:
    f = build_reference_profile(np.full((5, 1), 7.0)).features[0]
    assert isinstance(f, NumericProfile)
    assert (f.edges, f.counts, f.std, f.discrete) == ((7.0,), (5, 0), 0.0, True)


def test_categorical_table() -> None:
    x = np.array([[3.0], [1.0], [3.0], [3.0], [2.0]])
    f = build_reference_profile(x, ["colour"], categorical=["colour"]).features[0]
    assert f == CategoricalProfile("colour", (1.0, 2.0, 3.0), (1, 1, 3))
    assert f.reference_counts().tolist() == [1, 1, 3, 0]
    assert f.histogram([1.0, 4.0, 4.0, 3.0]).tolist() == [1, 0, 1, 2]


def test_prediction_counts_and_confidence_histogram() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.05, 0.95]])
    profile = build_reference_profile(np.zeros((4, 1)), probabilities=probs)
    assert profile.prediction_counts == (2, 2)
    conf = profile.confidence
    assert conf is not None
    assert conf.edges == CONFIDENCE_EDGES == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    # confidences 0.9, 0.8, 0.55, 0.95: bins (0.8, 0.9], (0.7, 0.8], (0.5, 0.6], (0.9, 1]
    assert conf.counts == (0, 0, 0, 0, 0, 1, 0, 1, 1, 1)
    # empty bins sit at their midpoints, the first one inside [0, 0.1]
    assert conf.bin_means[0] == pytest.approx(0.05)
    assert conf.bin_means[3] == pytest.approx(0.35)
    assert conf.bin_means[5] == pytest.approx(0.55)


def test_sigmoid_output_is_two_classes() -> None:
    profile = build_reference_profile(np.zeros((3, 1)), probabilities=[[0.2], [0.7], [0.9]])
    assert profile.prediction_counts == (1, 2)
    assert profile.confidence is not None
    # confidences 0.8, 0.7, 0.9
    assert profile.confidence.counts == (0, 0, 0, 0, 0, 0, 1, 1, 1, 0)


def test_predictions_without_probabilities() -> None:
    profile = build_reference_profile(np.zeros((4, 1)), predictions=[0, 2, 2, 1], num_classes=4)
    assert profile.prediction_counts == (1, 1, 2, 0)
    assert profile.confidence is None


def test_json_round_trip_gives_the_same_profile_and_the_same_bins() -> None:
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(size=300), rng.integers(0, 4, 300), rng.exponential(size=300)])
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=300)
    profile = build_reference_profile(x, ["a", "b", "c"], categorical=["b"], probabilities=probs)
    text = json.dumps(profile.to_dict(), allow_nan=False)
    again = ReferenceProfile.from_dict(json.loads(text))
    assert again == profile
    current = np.column_stack([rng.normal(size=50), rng.integers(0, 6, 50), rng.normal(size=50)])
    cur_probs = rng.dirichlet([1.0, 1.0, 1.0], size=50)
    h1 = profile.histograms(current, probabilities=cur_probs)
    h2 = again.histograms(current, probabilities=cur_probs)
    assert h1.to_dict() == h2.to_dict()
    assert sum(h1.features["b"]) == 50
    assert h1.predictions is not None and int(h1.predictions.sum()) == 50


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="other"), "'format' must be"),
        (lambda d: d.update(version=99), "'version' 99 is not supported"),
        (lambda d: d.update(rows=0), "'rows' must be a positive integer"),
        (lambda d: d["features"][0].update(edges=[2.0, 1.0]), r"features\[0\].edges"),
        (lambda d: d["features"][0].update(counts=[1, 2]), r"features\[0\]: 3 edges need 4"),
        (lambda d: d["features"][0].update(counts=[1, -1, 0, 0]), r"features\[0\].counts"),
        (lambda d: d["features"][1].update(kind="text"), r"features\[1\].kind"),
        (lambda d: d["features"][1].update(values=[2.0, 1.0]), r"features\[1\].values"),
        (lambda d: d["features"][1].update(name="a"), "feature names repeat"),
        (lambda d: d.update(prediction_counts=[1.5]), "prediction_counts"),
    ],
)
def test_malformed_profile_json_names_the_key(
    mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    x = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 1.0]])
    data = build_reference_profile(
        x, ["a", "b"], categorical=["b"], predictions=[0, 1, 1]
    ).to_dict()
    mutate(data)
    with pytest.raises(DataError, match=message):
        ReferenceProfile.from_dict(data)


def test_bad_reference_data_is_refused_with_the_feature_named() -> None:
    with pytest.raises(DataError, match="2-D"):
        build_reference_profile(np.zeros(5))
    with pytest.raises(DataError, match="2 features but 1 feature names"):
        build_reference_profile(np.zeros((3, 2)), ["a"])
    with pytest.raises(DataError, match=r"categorical features \['z'\]"):
        build_reference_profile(np.zeros((3, 1)), ["a"], categorical=["z"])
    x = np.zeros((3, 2))
    x[1, 1] = math.inf
    with pytest.raises(DataError, match="feature 'speed': 1 of 3 values"):
        build_reference_profile(x, ["temp", "speed"])
    with pytest.raises(DataError, match="within"):
        build_reference_profile(np.zeros((2, 1)), probabilities=[[1.2, -0.2], [0.5, 0.5]])
    with pytest.raises(DataError, match="not both"):
        build_reference_profile(np.zeros((1, 1)), probabilities=[[1.0, 0.0]], predictions=[0])
    profile = build_reference_profile(np.zeros((3, 2)))
    with pytest.raises(DataError, match="2 feature columns"):
        profile.histograms(np.zeros((3, 3)))


def test_histograms_merge_and_json() -> None:
    a = Histograms({"t": np.array([1, 2, 3])}, predictions=np.array([4, 0]))
    b = Histograms({"t": np.array([0, 5, 1])}, predictions=np.array([1, 1]))
    merged = a.merged(b)
    assert merged.features["t"].tolist() == [1, 7, 4]
    assert merged.predictions is not None and merged.predictions.tolist() == [5, 1]
    assert merged.confidence is None
    again = Histograms.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert again.to_dict() == merged.to_dict()
    with pytest.raises(DataError, match="3 bins in one, 2 in other"):
        a.merged(Histograms({"t": np.array([1, 1])}, predictions=np.array([1, 1])))
    with pytest.raises(DataError, match=r"histograms.features.t must be a list of integer"):
        Histograms.from_dict({"features": {"t": [1, 2.5]}})
