"""The device sketch accumulator: bin rule, body, reservoir, windows, refusals; the policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tinyops.errors import DataError
from tinyops.monitor.drift import compute_drift
from tinyops.monitor.policy import (
    POLICY_MEMBER,
    PROFILE_MEMBER,
    MonitoringPolicy,
    monitoring_files,
    monitoring_from_files,
)
from tinyops.monitor.reference import Histograms, ReferenceProfile, build_reference_profile
from tinyops.monitor.sketch import BUFFER_ROWS, SketchAccumulator, window_bounds

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
RELEASE = ("digits", "1.0.0")


def small_profile() -> ReferenceProfile:
    # x: 1..20 (edges 2, 4, …, 18: ten bins of two values); c: category 0 / 1;
    # three classes.
    x = np.arange(1.0, 21.0)
    c = np.array([0.0, 1.0] * 10)
    probs = np.tile(np.array([[0.7, 0.2, 0.1], [0.1, 0.85, 0.05]]), (10, 1))
    return build_reference_profile(
        np.stack([x, c], axis=1), ["x", "c"], categorical=["c"], probabilities=probs
    )


def test_counts_follow_the_bin_rule_and_the_body_matches_the_contract() -> None:
    acc = SketchAccumulator(small_profile(), MonitoringPolicy(), release=RELEASE)
    # x = 2 is on the edge 2: bin 0; 2.5 → bin 1; 100 → last bin; c = 7 is unknown: 'other'.
    acc.observe([2.0, 0.0], [0.9, 0.05, 0.05])
    acc.observe([2.5, 1.0], [0.05, 0.15, 0.8])
    acc.observe([100.0, 7.0], [0.3, 0.35, 0.35])
    body = acc.flush(T0, T1)
    assert body is not None
    assert body == {
        "release": {"name": "digits", "version": "1.0.0"},
        "window": {"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T11:00:00Z"},
        "count": 3,
        "histograms": {
            "format": "tinyops.drift-histograms",
            "features": {"x": [1, 1, 0, 0, 0, 0, 0, 0, 0, 1], "c": [1, 1, 1]},
            "predictions": [1, 1, 1],
            # 0.9 → (0.8, 0.9]; 0.8 → (0.7, 0.8]; 0.35 → (0.3, 0.4].
            "confidence": [0, 0, 0, 1, 0, 0, 0, 1, 1, 0],
        },
    }
    assert "samples" not in body  # the default policy: no raw sample leaves the device
    json.dumps(body)  # plain JSON
    # The body's histograms are what the server's drift code reads.
    h = Histograms.from_dict(body["histograms"])
    report = compute_drift(small_profile(), h)
    assert {r.feature for r in report.features} == {"x", "c"}


def test_binning_many_rows_equals_the_profiles_histograms() -> None:
    profile = small_profile()
    rng = np.random.default_rng(5)
    n = 3 * BUFFER_ROWS + 7  # crosses the buffer several times
    rows = np.stack([rng.normal(10, 6, n), rng.integers(0, 3, n).astype(float)], axis=1)
    probs = rng.dirichlet([1, 1, 1], size=n)
    one = SketchAccumulator(profile, MonitoringPolicy(), release=RELEASE)
    for r, p in zip(rows, probs, strict=True):
        one.observe(r, p)
    many = SketchAccumulator(profile, MonitoringPolicy(), release=RELEASE)
    many.observe_many(rows[:50], probs[:50])
    many.observe_many(rows[50:], probs[50:])
    expected = profile.histograms(rows, probabilities=probs).to_dict()
    for acc in (one, many):
        body = acc.flush(T0, T1)
        assert body is not None
        assert body["count"] == n
        assert body["histograms"] == expected


def test_flush_starts_an_empty_window_and_an_empty_window_sends_nothing() -> None:
    acc = SketchAccumulator(small_profile(), MonitoringPolicy(), release=RELEASE)
    acc.observe([5.0, 1.0], [0.1, 0.8, 0.1])
    assert acc.flush(T0, T1) is not None
    assert acc.count == 0
    assert acc.flush(T1, T1 + timedelta(hours=1)) is None
    acc.observe([5.0, 1.0], [0.1, 0.8, 0.1])
    body = acc.flush(T1, T1 + timedelta(hours=1))
    assert body is not None and body["count"] == 1
    assert body["histograms"]["features"]["x"] == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]


def test_reservoir_keeps_at_most_the_allowance_uniformly_and_reproducibly() -> None:
    profile = small_profile()
    policy = MonitoringPolicy(max_samples_per_window=5)

    def run(seed: int) -> list[dict[str, object]]:
        acc = SketchAccumulator(profile, policy, release=RELEASE, seed=seed)
        for i in range(200):
            probs = [0.1, 0.1, 0.8] if i % 2 else [0.8, 0.1, 0.1]
            acc.observe([float(i), 0.0], probs, prediction_id=f"p{i}")
        body = acc.flush(T0, T1)
        assert body is not None
        return list(body["samples"])

    kept = run(1)
    assert len(kept) == 5
    assert kept == run(1)  # same seed, same inferences: the same rows
    ids = [int(str(s["id"])[1:]) for s in kept]
    assert len(set(ids)) == 5
    for s, i in zip(kept, ids, strict=True):
        assert s["features"] == [float(i), 0.0]
        assert s["prediction"] == (2 if i % 2 else 0)
    # Later inferences get in too (a plain "first five" would keep 0..4).
    assert max(ids) >= 5
    # Over many seeds every inference is kept about equally often (5/200 each).
    hits = np.zeros(200)
    for seed in range(400):
        for s in run(seed):
            hits[int(str(s["id"])[1:])] += 1
    first, second = hits[:100].sum(), hits[100:].sum()
    assert first + second == 400 * 5
    assert abs(first - second) < 0.1 * (first + second)


def test_fewer_inferences_than_the_allowance_are_all_kept() -> None:
    acc = SketchAccumulator(
        small_profile(), MonitoringPolicy(max_samples_per_window=10), release=RELEASE
    )
    acc.observe([3.0, 1.0], [0.2, 0.7, 0.1])
    body = acc.flush(T0, T1)
    assert body is not None
    assert body["samples"] == [{"features": [3.0, 1.0], "prediction": 1}]


def test_bad_observations_are_refused_and_change_nothing() -> None:
    acc = SketchAccumulator(small_profile(), MonitoringPolicy(), release=RELEASE)
    with pytest.raises(DataError, match="must hold 2 values"):
        acc.observe([1.0, 2.0, 3.0], [0.5, 0.25, 0.25])
    with pytest.raises(DataError, match=r"features \['x'\] are NaN"):
        acc.observe([float("nan"), 0.0], [0.5, 0.25, 0.25])
    with pytest.raises(DataError, match="probabilities are required"):
        acc.observe([1.0, 0.0])
    with pytest.raises(DataError, match="must hold 3 values"):
        acc.observe([1.0, 0.0], [0.5, 0.5])
    with pytest.raises(DataError, match="within"):
        acc.observe([1.0, 0.0], [1.5, 0.0, 0.0])
    with pytest.raises(DataError, match="prediction_id 'a b'"):
        acc.observe([1.0, 0.0], [0.5, 0.25, 0.25], prediction_id="a b")
    with pytest.raises(DataError, match="N × 2"):
        acc.observe_many(np.zeros((3, 4)), np.full((3, 3), 0.3))
    assert acc.count == 0
    assert acc.flush(T0, T1) is None
    with pytest.raises(DataError, match="start before it ends"):
        acc.flush(T1, T0)


def test_a_profile_without_outputs_sketches_features_only() -> None:
    profile = build_reference_profile(np.arange(30.0)[:, None], ["x"])
    acc = SketchAccumulator(profile, MonitoringPolicy(max_samples_per_window=1), release=RELEASE)
    acc.observe([3.0])
    with pytest.raises(DataError, match="no class distribution"):
        acc.observe([3.0], [0.5, 0.5])
    body = acc.flush(T0, T1)
    assert body is not None
    assert body["histograms"]["predictions"] is None
    assert body["histograms"]["confidence"] is None
    assert body["samples"] == [{"features": [3.0]}]  # no prediction to report


def test_a_sigmoid_output_counts_as_two_classes() -> None:
    x = np.arange(40.0)[:, None]
    p1 = np.linspace(0.05, 0.95, 40)[:, None]
    profile = build_reference_profile(x, ["x"], probabilities=p1)
    acc = SketchAccumulator(profile, MonitoringPolicy(max_samples_per_window=2), release=RELEASE)
    acc.observe([1.0], [0.9])
    acc.observe([2.0], [0.2])
    body = acc.flush(T0, T1)
    assert body is not None
    assert body["histograms"]["predictions"] == [1, 1]
    # Confidence 0.9 → (0.8, 0.9]; P(class 0) = 0.8 → (0.7, 0.8].
    assert body["histograms"]["confidence"] == [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    assert [s["prediction"] for s in body["samples"]] == [1, 0]


def test_windows_are_aligned_to_multiples_of_their_length() -> None:
    moment = datetime(2026, 1, 1, 10, 17, 3, tzinfo=UTC)
    assert window_bounds(moment, 3600) == (T0, T1)
    assert window_bounds(T0, 3600) == (T0, T1)  # a window starts at its own start
    start, end = window_bounds(moment, 60)
    assert (start, end) == (
        datetime(2026, 1, 1, 10, 17, tzinfo=UTC),
        datetime(2026, 1, 1, 10, 18, tzinfo=UTC),
    )
    with pytest.raises(DataError, match="timezone-aware"):
        SketchAccumulator(small_profile(), MonitoringPolicy(), release=RELEASE).flush(
            datetime(2026, 1, 1), datetime(2026, 1, 2)
        )


def test_policy_and_profile_round_trip_through_bundle_members() -> None:
    profile = small_profile()
    policy = MonitoringPolicy(
        window_s=600, summaries="channels", max_samples_per_window=3, reference_accuracy=0.9
    )
    files = monitoring_files(profile, policy)
    assert set(files) == {PROFILE_MEMBER, POLICY_MEMBER}
    assert json.loads(files[POLICY_MEMBER]) == {
        "format": "tinyops.monitoring-policy",
        "version": 1,
        "window_s": 600,
        "summaries": "channels",
        "sampling": {"max_samples_per_window": 3},
        "reference_accuracy": 0.9,
    }
    assert json.loads(files[PROFILE_MEMBER]) == profile.to_dict()
    parsed = monitoring_from_files({**files, "model.tflite": b"x"})
    assert parsed is not None
    assert parsed[0].to_dict() == profile.to_dict()
    assert parsed[1] == policy
    assert monitoring_from_files({"model.tflite": b"x"}) is None


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"window_s": 0}, "'window_s' must be a positive integer"),
        ({"window_s": True}, "'window_s' must be a positive integer"),
        ({"summaries": "auto"}, "'summaries' must be one of"),
        ({"sampling": {"max_samples_per_window": -1}}, "max_samples_per_window"),
        ({"sampling": {"max_samples_per_window": 1.5}}, "max_samples_per_window"),
        ({"format": "x"}, "'format' must be"),
        ({"version": 2}, "'version' 2 is not supported"),
        ({"reference_accuracy": 1.5}, "'reference_accuracy' must be a number in"),
    ],
)
def test_malformed_policies_name_the_key(policy: dict[str, object], message: str) -> None:
    good = MonitoringPolicy().to_dict()
    with pytest.raises(DataError, match=message):
        MonitoringPolicy.from_dict({**good, **policy})


def test_a_bundle_with_half_the_monitoring_or_bad_json_is_refused() -> None:
    files = monitoring_files(small_profile(), MonitoringPolicy())
    with pytest.raises(DataError, match=f"lacks {POLICY_MEMBER}"):
        monitoring_from_files({PROFILE_MEMBER: files[PROFILE_MEMBER]})
    with pytest.raises(DataError, match=f"{PROFILE_MEMBER}: not valid JSON"):
        monitoring_from_files({**files, PROFILE_MEMBER: b"{"})
    with pytest.raises(DataError, match=f"{PROFILE_MEMBER}: reference profile: 'rows'"):
        monitoring_from_files(
            {**files, PROFILE_MEMBER: b'{"format": "tinyops.reference-profile", "version": 1}'}
        )
