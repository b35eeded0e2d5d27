"""The Dataset invariants and how data sets from several sources are joined."""

from __future__ import annotations

import numpy as np
import pytest

from tinyops.data import Dataset, SourceFingerprint, concatenate
from tinyops.errors import DataError


def table(values: list[list[float]], labels: list[int], classes: tuple[str, ...]) -> Dataset:
    return Dataset(
        x=np.array(values, dtype=np.float32),
        y=np.array(labels, dtype=np.int64),
        classes=classes,
        modality="table",
        feature_names=("a", "b"),
    )


def test_labels_must_index_classes() -> None:
    with pytest.raises(DataError, match=r"labels must lie in \[-1, 1\] for 2 classes"):
        table([[0, 0]], [2], ("a", "b"))
    with pytest.raises(DataError, match="x has 2 samples but y has 1 labels"):
        table([[0, 0], [1, 1]], [0], ("a",))
    with pytest.raises(DataError, match="y must be int64"):
        Dataset(np.zeros((1, 2), np.float32), np.zeros(1, np.int32), ("a",), "table")
    with pytest.raises(DataError, match="class names must be unique"):
        table([[0, 0]], [0], ("a", "a"))


def test_take_and_sample_shape() -> None:
    ds = table([[0, 1], [2, 3], [4, 5]], [0, 1, -1], ("cat", "dog"))
    picked = ds.take(np.array([2, 0]))
    np.testing.assert_array_equal(picked.x, [[4, 5], [0, 1]])
    np.testing.assert_array_equal(picked.y, [-1, 0])
    assert picked.classes == ds.classes and len(picked) == 2
    assert ds.sample_shape == (2,)


def test_concatenate_merges_classes_by_name() -> None:
    first = table([[0, 0], [1, 1]], [0, 1], ("dog", "cat"))
    second = table([[2, 2], [3, 3], [4, 4]], [0, -1, 1], ("bird", "dog"))
    joined = concatenate([first, second])
    assert joined.classes == ("bird", "cat", "dog")
    np.testing.assert_array_equal(joined.y, [2, 1, 0, -1, 2])
    np.testing.assert_array_equal(joined.x[:, 0], [0, 1, 2, 3, 4])


def test_concatenate_keeps_source_fingerprints_in_order() -> None:
    a = SourceFingerprint("csv", "a.csv", "0" * 64, 1)
    b = SourceFingerprint("csv", "b.csv", "1" * 64, 1)
    one = Dataset(
        np.zeros((1, 1), np.float32), np.zeros(1, np.int64), ("x",), "table", sources=(a,)
    )
    two = Dataset(np.ones((1, 1), np.float32), np.zeros(1, np.int64), ("x",), "table", sources=(b,))
    assert concatenate([one, two]).sources == (a, b)


def test_concatenate_refuses_other_shapes_and_rates() -> None:
    wide = Dataset(np.zeros((1, 3), np.float32), np.zeros(1, np.int64), ("x",), "table")
    narrow = Dataset(np.zeros((1, 2), np.float32), np.zeros(1, np.int64), ("x",), "table")
    with pytest.raises(DataError, match=r"shape \(2,\) float32 but the first source has \(3,\)"):
        concatenate([wide, narrow])
    fast = Dataset(np.zeros((1, 4), np.float32), np.zeros(1, np.int64), ("x",), "audio", 16000)
    slow = Dataset(np.zeros((1, 4), np.float32), np.zeros(1, np.int64), ("x",), "audio", 8000)
    with pytest.raises(DataError, match="sample rate 8000 Hz but the first source has 16000 Hz"):
        concatenate([fast, slow])
