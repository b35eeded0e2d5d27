"""The in-memory data set every data stage hands to the next.

A `Dataset` is a pair of arrays, samples `x` and labels `y`, plus what is needed to read
them: class names, the modality, the sample rate of audio, and the names of table columns
(or the vocabulary of text). Array conventions, by modality:

    table   x float32 (N, F)          one row of F features per sample
    audio   x float32 (N, S)          S samples per clip, scaled to [-1, 1]
    image   x uint8   (N, H, W, C)    C = 1 (gray) or 3 (RGB); video frames too
    text    x int32   (N, L)          token ids, 0 = padding, 1 = out of vocabulary
    y       int64     (N,)            index into `classes`; -1 = unlabeled

`concatenate` merges data sets read from several sources: class lists are merged by name
and sorted, so the label indices of the result do not depend on source order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import DataError

Modality = Literal["table", "audio", "image", "text"]

# The dtype each modality's samples are stored in; see the module docstring.
SAMPLE_DTYPES: dict[str, np.dtype[Any]] = {
    "table": np.dtype(np.float32),
    "audio": np.dtype(np.float32),
    "image": np.dtype(np.uint8),
    "text": np.dtype(np.int32),
}

UNLABELED = -1
"""Label value of a sample without a class."""


@dataclass(frozen=True)
class SourceFingerprint:
    """Where samples came from: recorded in a snapshot's manifest for lineage.

    `sha256` is over the source file's bytes; for a folder, over its sorted relative file
    paths and their hashes; for a bundled scikit-learn set, over the arrays' bytes.
    """

    kind: str
    location: str
    sha256: str
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "location": self.location,
            "sha256": self.sha256,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Dataset:
    """Samples, labels and the facts needed to interpret them (see the module docstring)."""

    x: NDArray[Any]
    y: NDArray[np.int64]
    classes: tuple[str, ...]
    modality: Modality
    sample_rate: int | None = None
    feature_names: tuple[str, ...] | None = None
    sources: tuple[SourceFingerprint, ...] = ()

    def __post_init__(self) -> None:
        if self.modality not in get_args(Modality):
            raise DataError(
                f"modality {self.modality!r} is unknown; expected one of {get_args(Modality)}"
            )
        if self.x.ndim < 2:
            raise DataError(
                f"x must have a sample axis and at least one more, got shape {self.x.shape}"
            )
        if self.y.ndim != 1 or self.y.dtype != np.int64:
            raise DataError(f"y must be int64 of shape (N,), got {self.y.dtype} {self.y.shape}")
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]} labels")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"class names must be unique, got {list(self.classes)}")
        if self.y.size and (self.y.min() < UNLABELED or self.y.max() >= len(self.classes)):
            raise DataError(
                f"labels must lie in [-1, {len(self.classes) - 1}] for "
                f"{len(self.classes)} classes, found [{self.y.min()}, {self.y.max()}]"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. (16000,) for 1 s of 16 kHz audio."""
        return tuple(int(d) for d in self.x.shape[1:])

    def take(self, indices: NDArray[np.integer[Any]]) -> Dataset:
        """The samples at `indices`, in that order; everything else unchanged."""
        return replace(self, x=self.x[indices], y=self.y[indices])


def concatenate(datasets: Sequence[Dataset]) -> Dataset:
    """Join data sets read from several sources into one.

    All parts must share modality, sample shape, dtype, sample rate and feature names
    (table columns or text vocabulary): otherwise their values would mean different
    things. Classes are merged by name and sorted; labels are re-indexed to match.
    """
    if not datasets:
        raise DataError("no data sources: expected at least one")
    first = datasets[0]
    for part in datasets[1:]:
        where = f"source {part.sources[0].location!r}" if part.sources else "a source"
        first_where = f"{first.sources[0].location!r}" if first.sources else "the first source"
        if part.modality != first.modality:
            raise DataError(
                f"{where} holds {part.modality} data but {first_where} holds "
                f"{first.modality}: every source must have the same modality"
            )
        if part.sample_shape != first.sample_shape or part.x.dtype != first.x.dtype:
            raise DataError(
                f"{where} has samples of shape {part.sample_shape} {part.x.dtype} but "
                f"{first_where} has {first.sample_shape} {first.x.dtype}: every source "
                "must give samples of the same shape and dtype"
            )
        if part.sample_rate != first.sample_rate:
            raise DataError(
                f"{where} has sample rate {part.sample_rate} Hz but {first_where} has "
                f"{first.sample_rate} Hz"
            )
        if part.feature_names != first.feature_names:
            raise DataError(
                f"{where} has features {_short(part.feature_names)} but {first_where} "
                f"has {_short(first.feature_names)}: columns (or text vocabularies) must "
                "be the same"
            )
    classes = tuple(sorted({c for part in datasets for c in part.classes}))
    index = {name: i for i, name in enumerate(classes)}
    labels = []
    for part in datasets:
        mapping = np.array([index[c] for c in part.classes], dtype=np.int64)
        y = np.full(part.y.shape, UNLABELED, dtype=np.int64)
        labelled = part.y >= 0
        y[labelled] = mapping[part.y[labelled]]
        labels.append(y)
    return Dataset(
        x=np.concatenate([part.x for part in datasets]) if len(datasets) > 1 else first.x,
        y=np.concatenate(labels),
        classes=classes,
        modality=first.modality,
        sample_rate=first.sample_rate,
        feature_names=first.feature_names,
        sources=tuple(fp for part in datasets for fp in part.sources),
    )


def _short(names: tuple[str, ...] | None, limit: int = 8) -> str:
    if names is None:
        return "none"
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"
