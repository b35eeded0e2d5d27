"""Duplicate screening: exact copies and copies that disagree on their label.

Two samples are the same if their bytes are identical (so 0.0 and -0.0 differ, and a
NaN equals a NaN with the same bit pattern). Then:

- exact duplicates, the same sample with the same label, add no information but weigh
  the sample more and leak between train and test splits: the first copy is kept;
- conflicting labels, the same sample under different labels, are label noise or a
  poisoning attempt: no label can be trusted, so every copy is removed.

An unlabeled copy (label -1) never conflicts with a labelled one: it is a different
(sample, label) pair and is kept.

Everything is vectorised: samples are grouped by sorting a view of their bytes
(`np.unique` on a void dtype), which takes well under a second for a million small rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinyops.data.dataset import Dataset

# How many conflicting samples a report lists by index, to keep manifests small.
_EXAMPLES = 10


@dataclass(frozen=True)
class DedupReport:
    """What `remove_duplicates` removed, in samples."""

    samples_in: int
    samples_out: int
    removed: int
    """Exact duplicates removed (same bytes, same label); the first copy is kept."""
    conflicting_labels: int
    """Samples removed because the same bytes appear under different labels."""
    conflicting_groups: int
    """Distinct samples that had conflicting labels."""
    conflict_examples: tuple[int, ...] = ()
    """Input indices of a few removed conflicting samples, to look at by hand."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples_in": self.samples_in,
            "samples_out": self.samples_out,
            "removed": self.removed,
            "conflicting_labels": self.conflicting_labels,
            "conflicting_groups": self.conflicting_groups,
            "conflict_examples": list(self.conflict_examples),
        }


def sample_groups(x: NDArray[Any]) -> NDArray[np.intp]:
    """For each sample, the index of its group of byte-identical samples (0..groups-1)."""
    n = x.shape[0]
    rows = np.ascontiguousarray(x).reshape(n, math.prod(x.shape[1:]))
    row_bytes = rows.shape[1] * rows.dtype.itemsize
    if n == 0 or row_bytes == 0:
        return np.zeros(n, dtype=np.intp)
    # One opaque item per row: sorting these compares whole rows as byte strings.
    keys = rows.view(np.dtype((np.void, row_bytes))).ravel()
    _, inverse = np.unique(keys, return_inverse=True)
    return np.asarray(inverse, dtype=np.intp).ravel()


def remove_duplicates(ds: Dataset) -> tuple[Dataset, DedupReport]:
    """Drop exact duplicates (keeping the first) and every copy of a conflicting sample.

    The kept samples stay in their original order.
    """
    n = len(ds)
    groups = sample_groups(ds.x)
    # One integer per (sample group, label) pair; label -1 maps to slot 0.
    slots = len(ds.classes) + 1
    pair = groups.astype(np.int64) * slots + (ds.y + 1)
    pairs, first = np.unique(pair, return_index=True)
    # A group conflicts if it holds more than one distinct real label.
    pair_group = pairs // slots
    labelled = pairs % slots != 0
    labels_per_group = np.bincount(pair_group[labelled], minlength=int(groups.max(initial=-1)) + 1)
    conflicting = labels_per_group > 1
    keep = np.sort(first[~conflicting[pair_group]])
    conflicted_rows = np.flatnonzero(conflicting[groups])
    report = DedupReport(
        samples_in=n,
        samples_out=int(keep.size),
        removed=n - int(keep.size) - int(conflicted_rows.size),
        conflicting_labels=int(conflicted_rows.size),
        conflicting_groups=int(conflicting.sum()),
        conflict_examples=tuple(int(i) for i in conflicted_rows[:_EXAMPLES]),
    )
    return ds.take(keep), report
