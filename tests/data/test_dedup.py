"""Exact duplicates and samples whose copies disagree on their label."""

from __future__ import annotations

import numpy as np

from tinyops.data import Dataset, remove_duplicates
from tinyops.data.dedup import sample_groups


def table(x: list[list[float]], y: list[int]) -> Dataset:
    return Dataset(
        np.array(x, dtype=np.float32), np.array(y, dtype=np.int64), ("a", "b", "c"), "table"
    )


def test_sample_groups_by_bytes() -> None:
    x = np.array([[1, 2], [3, 4], [1, 2], [0.0, -0.0], [0.0, 0.0]], dtype=np.float32)
    groups = sample_groups(x)
    assert groups[0] == groups[2]
    # -0.0 and 0.0 are equal numbers but different bytes.
    assert len(set(groups.tolist())) == 4


def test_exact_duplicates_keep_the_first_copy_in_order() -> None:
    ds = table([[5, 5], [1, 1], [5, 5], [2, 2], [1, 1], [5, 5]], [0, 1, 0, 2, 1, 0])
    kept, report = remove_duplicates(ds)
    np.testing.assert_array_equal(kept.x, [[5, 5], [1, 1], [2, 2]])
    np.testing.assert_array_equal(kept.y, [0, 1, 2])
    assert report.samples_in == 6 and report.samples_out == 3
    assert report.removed == 3 and report.conflicting_labels == 0


def test_conflicting_labels_remove_every_copy() -> None:
    ds = table(
        [[7, 7], [1, 1], [7, 7], [2, 2], [7, 7], [2, 2], [3, 3]],
        [0, 1, 1, 2, 0, 2, 0],
    )
    kept, report = remove_duplicates(ds)
    # [7, 7] is labelled a, b and a: all three copies go. [2, 2] twice as c: one copy goes.
    np.testing.assert_array_equal(kept.x, [[1, 1], [2, 2], [3, 3]])
    np.testing.assert_array_equal(kept.y, [1, 2, 0])
    assert report.conflicting_labels == 3
    assert report.conflicting_groups == 1
    assert report.conflict_examples == (0, 2, 4)
    assert report.removed == 1
    assert report.to_dict() == {
        "samples_in": 7,
        "samples_out": 3,
        "removed": 1,
        "conflicting_labels": 3,
        "conflicting_groups": 1,
        "conflict_examples": [0, 2, 4],
    }


def test_unlabeled_copy_does_not_conflict() -> None:
    ds = table([[4, 4], [4, 4], [4, 4]], [-1, 1, -1])
    kept, report = remove_duplicates(ds)
    np.testing.assert_array_equal(kept.y, [-1, 1])
    assert report.removed == 1 and report.conflicting_labels == 0


def test_images_compare_whole_samples() -> None:
    x = np.zeros((3, 2, 2, 1), dtype=np.uint8)
    x[1, 1, 1, 0] = 1  # differs from sample 0 in its last pixel only
    ds = Dataset(x, np.zeros(3, np.int64), ("a",), "image")
    kept, report = remove_duplicates(ds)
    assert len(kept) == 2 and report.removed == 1


def test_a_million_rows_are_screened() -> None:
    rng = np.random.default_rng(0)
    # 1M rows of 4 features drawn from 10**4 patterns, each pattern with a fixed label:
    # so every repeat is an exact duplicate and none conflicts.
    patterns = rng.integers(0, 10**4, size=1_000_000)
    x = np.stack([patterns % 10, patterns // 10 % 10, patterns // 100 % 10, patterns // 1000], 1)
    ds = Dataset(x.astype(np.float32), (patterns % 3).astype(np.int64), ("a", "b", "c"), "table")
    kept, report = remove_duplicates(ds)
    assert len(kept) == len(np.unique(patterns)) == report.samples_out
    assert report.removed == 1_000_000 - len(kept) and report.conflicting_labels == 0
    # No kept row repeats another.
    assert len(np.unique(kept.x, axis=0)) == len(kept)
