"""Summaries: how one model input becomes the row of features that drift is measured on.

A drift profile needs a handful of scalar features per inference. For a table that is the
input itself; an image or a spectrogram has thousands of values, far too many to keep a
histogram of each on a microcontroller, so it is summarised first. Three kinds, each a few
additions per input value, deterministic, and the same on the device (C, float32) and in
the bundle stage (NumPy, float64; they agree to float32 rounding):

    columns    tabular input of any shape: every input value is a feature, in C order
               (row-major). Names: the table's column names when the data has them and
               the model input is one value per column, else column_00, column_01, ...
    bands      audio features (T, B) or (T, B, 1) — a spectrogram, log-mel or MFCC with T
               frames of B bands: the mean over the T frames of each band → B features
               band_00 … band_{B-1}.
    channels   images (H, W, C): with C > 1, the mean of each channel over all pixels → C
               features channel_00 …; with one channel (grayscale), the mean of each row
               band instead: the H rows are cut into R = min(H, 8) bands, band k holding
               rows ⌊k·H/R⌋ … ⌊(k+1)·H/R⌋ − 1 (all of them when H ≤ 8), and each band's
               mean over its rows and all columns is a feature row_band_00 … An 8×8 digit
               gives 8 features, one per row.

`auto` (the project default) picks from the data's modality and the model's per-sample
input shape (`resolve_kind`): image data with a 3-D input → channels; audio data with a
(T, B) or (T, B, 1) input → bands; anything else → columns. Without a modality the shape
alone decides: 1-D → columns, 2-D → bands, 3-D → channels.

Feature names carry the index zero-padded to at least two digits (all of one kind have the
same width), so names sort in feature order and stay the same from one build to the next.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError

ResolvedKind = Literal["columns", "bands", "channels"]
RESOLVED_KINDS: tuple[str, ...] = get_args(ResolvedKind)

MAX_ROW_BANDS = 8
"""Row bands a single-channel image is cut into (fewer when it has fewer rows)."""

MAX_FEATURES = 1024
"""More summary features than this makes a profile and a sketch too big for a device."""


def _names(prefix: str, n: int) -> tuple[str, ...]:
    width = max(2, len(str(n - 1)))
    return tuple(f"{prefix}_{i:0{width}d}" for i in range(n))


def resolve_kind(
    kind: str, input_shape: Sequence[int], modality: str | None = None
) -> ResolvedKind:
    """The summary kind for a model input of `input_shape` (one sample, no batch axis).

    `kind` "auto" picks as the module docstring says; an explicit kind is checked against
    the shape. DataError naming the shape when it does not fit.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise DataError(f"summaries: the model input shape {list(shape)} has no values")
    if kind == "auto":
        if modality == "image" and len(shape) == 3:
            return "channels"
        if modality == "audio" and _is_spectrogram(shape):
            return "bands"
        if modality is None and len(shape) in (2, 3):
            return "bands" if len(shape) == 2 else "channels"
        return "columns"
    if kind == "bands" and not _is_spectrogram(shape):
        raise DataError(
            f"summaries 'bands' needs a (frames, bands) or (frames, bands, 1) model input, "
            f"got {list(shape)}"
        )
    if kind == "channels" and len(shape) != 3:
        raise DataError(
            f"summaries 'channels' needs an image model input (height, width, channels), "
            f"got {list(shape)}"
        )
    if kind not in RESOLVED_KINDS:
        raise DataError(f"summaries must be one of auto, {', '.join(RESOLVED_KINDS)}; got {kind!r}")
    resolved: ResolvedKind = kind  # type: ignore[assignment]  # checked just above
    return resolved


def _is_spectrogram(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)


def row_bands(height: int) -> tuple[tuple[int, int], ...]:
    """(first row, end row) of each row band of a single-channel image `height` rows tall."""
    n = min(height, MAX_ROW_BANDS)
    return tuple((k * height // n, (k + 1) * height // n) for k in range(n))


@dataclass(frozen=True)
class Summarizer:
    """Turns model inputs of one shape into summary rows of one kind (see module doc)."""

    kind: ResolvedKind
    input_shape: tuple[int, ...]
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def summarize(self, x: ArrayLike) -> NDArray[np.float64]:
        """Summary rows (N × features) of a batch of inputs (N, *input_shape)."""
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise DataError(f"summaries: model inputs must be numbers, got dtype {arr.dtype}")
        if arr.shape[1:] != self.input_shape:
            raise DataError(
                f"summaries: inputs must have shape (N, {', '.join(map(str, self.input_shape))})"
                f", got {list(arr.shape)}"
            )
        n = arr.shape[0]
        v = arr.astype(np.float64, copy=False)
        if self.kind == "columns":
            return v.reshape(n, -1).copy()
        if self.kind == "bands":
            t, b = self.input_shape[0], self.input_shape[1]
            out: NDArray[np.float64] = v.reshape(n, t, b).mean(axis=1)
            return out
        h, w, c = self.input_shape
        if c > 1:
            per_channel: NDArray[np.float64] = v.reshape(n, h * w, c).mean(axis=1)
            return per_channel
        row_sums = v.reshape(n, h, w).sum(axis=2)
        bands = row_bands(h)
        starts = np.array([lo for lo, _ in bands], dtype=np.intp)
        rows = np.array([hi - lo for lo, hi in bands], dtype=np.float64)
        summed: NDArray[np.float64] = np.add.reduceat(row_sums, starts, axis=1)
        return summed / (rows * w)

    def summarize_one(self, sample: ArrayLike) -> NDArray[np.float64]:
        """The summary row (features,) of one input of `input_shape`."""
        arr = np.asarray(sample)
        row: NDArray[np.float64] = self.summarize(arr.reshape(1, *arr.shape))[0]
        return row


def summarizer(
    kind: str,
    input_shape: Sequence[int],
    *,
    modality: str | None = None,
    column_names: Sequence[str] | None = None,
) -> Summarizer:
    """The Summarizer of `kind` ("auto" resolved with `modality`) for inputs of `input_shape`.

    `column_names` (the table's columns) name the features of the 'columns' kind when there
    is one per input value; otherwise the generic names are used.
    """
    shape = tuple(int(d) for d in input_shape)
    resolved = resolve_kind(kind, shape, modality)
    if resolved == "columns":
        n = math.prod(shape)
        names = _names("column", n)
        if column_names is not None and len(column_names) == n:
            given = tuple(str(c) for c in column_names)
            if all(given) and len(set(given)) == n:
                names = given
    elif resolved == "bands":
        names = _names("band", shape[1])
    elif shape[2] > 1:
        names = _names("channel", shape[2])
    else:
        names = _names("row_band", len(row_bands(shape[0])))
    if len(names) > MAX_FEATURES:
        raise DataError(
            f"summaries {resolved!r} of a {list(shape)} model input give {len(names)} "
            f"features; at most {MAX_FEATURES} fit a device sketch (set monitoring.summaries "
            "to 'bands' or 'channels')"
        )
    return Summarizer(kind=resolved, input_shape=shape, feature_names=names)


__all__ = [
    "MAX_FEATURES",
    "MAX_ROW_BANDS",
    "RESOLVED_KINDS",
    "ResolvedKind",
    "Summarizer",
    "resolve_kind",
    "row_bands",
    "summarizer",
]
