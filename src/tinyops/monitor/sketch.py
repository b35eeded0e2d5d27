"""The device sketch: one window of inferences folded into the reference profile's bins.

`SketchAccumulator(profile, policy, release=(name, version))` is what a device keeps while
it runs: per profile feature a fixed-bin histogram, the count of predictions per class, a
confidence histogram, the number of inferences, and, only when the policy allows it, a
reservoir of at most `max_samples_per_window` raw summary rows. `observe(row,
probabilities)` adds one inference; `flush(start, end)` returns the JSON body of
`POST /api/v1/device/sketches` for the window and starts the next one empty:

    {"release": {"name": "digits", "version": "1.0.0"},
     "window": {"start": "2026-01-01T10:00:00Z", "end": "2026-01-01T11:00:00Z"},
     "count": 480,
     "histograms": Histograms.to_dict(),           # features, predictions, confidence
     "samples": [{"features": [...], "prediction": 3, "id": "p-17"}]}   # only if allowed

Values are binned by the profile's own histogram functions (THE BIN RULE of reference.py),
so device and server cannot disagree about a bin. For speed in Python a few rows are
buffered and binned together; a C implementation bins each value as it comes
(`i = 0; while (i < m && v > e[i]) i++; counts[i]++;`), which gives the same counts.

Raw rows are drawn by reservoir sampling (Algorithm R) from a `random.Random(seed)`: every
inference of the window has the same chance to be kept, memory stays bounded, and a given
seed and sequence of inferences keep the same rows. With the default allowance 0 no raw
row is ever kept.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError
from tinyops.monitor.policy import MonitoringPolicy
from tinyops.monitor.reference import ReferenceProfile

BUFFER_ROWS = 64
"""Rows kept before they are binned together (a Python speed-up; counts are the same)."""

PREDICTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A prediction id (the fleet's name rule): what feedback labels refer to, unique per device."""


def wire_time(moment: datetime) -> str:
    """ISO 8601 UTC with a 'Z' suffix, as the device protocol writes times."""
    if moment.tzinfo is None:
        raise DataError(f"sketch window times must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class SketchAccumulator:
    """One window of one release's inferences on one device (see the module docstring)."""

    def __init__(
        self,
        profile: ReferenceProfile,
        policy: MonitoringPolicy,
        *,
        release: tuple[str, str],
        seed: int = 0,
    ) -> None:
        self.profile = profile
        self.policy = policy
        self.release = release
        self._rng = random.Random(seed)
        self._n_features = len(profile.features)
        self._n_classes = (
            None if profile.prediction_counts is None else len(profile.prediction_counts)
        )
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self._features = {f.name: np.zeros(f.n_bins, dtype=np.int64) for f in self.profile.features}
        self._predictions = None if self._n_classes is None else np.zeros(self._n_classes, np.int64)
        conf = self.profile.confidence
        self._confidence = (
            None if conf is None or self._n_classes is None else np.zeros(conf.n_bins, np.int64)
        )
        self._rows: list[NDArray[np.float64]] = []
        self._probs: list[NDArray[np.float64]] = []
        self.samples: list[dict[str, Any]] = []

    # ---- observing ---------------------------------------------------------------------

    def observe(
        self,
        summary_row: ArrayLike,
        probabilities: ArrayLike | None = None,
        *,
        prediction_id: str | None = None,
    ) -> None:
        """Add one inference: its summary row (the profile's features, in order) and the
        model's class probabilities (required when the profile has a class distribution)."""
        row = self._row(summary_row)
        probs = self._probabilities(probabilities)
        if prediction_id is not None and (
            not isinstance(prediction_id, str) or not PREDICTION_ID.fullmatch(prediction_id)
        ):
            raise DataError(
                f"prediction_id {prediction_id!r}: 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        self._rows.append(row)
        if probs is not None:
            self._probs.append(probs)
        self._keep_sample(row, probs, prediction_id)
        self.count += 1
        if len(self._rows) >= BUFFER_ROWS:
            self._fold()

    def observe_many(self, rows: ArrayLike, probabilities: ArrayLike | None = None) -> None:
        """Add a batch of inferences (N × features, and N × classes probabilities)."""
        arr = np.asarray(rows, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self._n_features:
            raise DataError(
                f"summary rows must be N × {self._n_features} (the profile's features), "
                f"got shape {list(arr.shape)}"
            )
        if not np.all(np.isfinite(arr)):
            raise DataError("summary rows: values must be finite numbers")
        probs = None
        if self._n_classes is not None or probabilities is not None:
            if probabilities is None:
                raise DataError("probabilities are required: the profile has a class distribution")
            probs = np.asarray(probabilities, dtype=np.float64)
            if probs.ndim != 2 or probs.shape[0] != arr.shape[0]:
                raise DataError(
                    f"probabilities must have one row per summary row ({arr.shape[0]}), "
                    f"got shape {list(probs.shape)}"
                )
            if probs.size:
                self._probabilities(probs[0])  # the width and the profile's classes
            if not np.all(np.isfinite(probs)) or (
                probs.size and (probs.min() < 0 or probs.max() > 1)
            ):
                raise DataError("probabilities must be finite and within [0, 1]")
        self._fold()
        self._add(arr, probs)
        for i, row in enumerate(arr):
            self._keep_sample(row, None if probs is None else probs[i], None)
            self.count += 1

    def _row(self, summary_row: ArrayLike) -> NDArray[np.float64]:
        row = np.asarray(summary_row, dtype=np.float64)
        if row.shape != (self._n_features,):
            raise DataError(
                f"summary row must hold {self._n_features} values (the profile's features "
                f"{list(self.profile.feature_names)[:4]}...), got shape {list(row.shape)}"
            )
        if not np.all(np.isfinite(row)):
            bad = [self.profile.features[j].name for j in np.flatnonzero(~np.isfinite(row))]
            raise DataError(f"summary row: features {bad} are NaN or infinite")
        return row

    def _probabilities(self, probabilities: ArrayLike | None) -> NDArray[np.float64] | None:
        if self._n_classes is None:
            if probabilities is not None:
                raise DataError("probabilities given, but the profile has no class distribution")
            return None
        if probabilities is None:
            raise DataError("probabilities are required: the profile has a class distribution")
        p = np.asarray(probabilities, dtype=np.float64).ravel()
        expected = (1, 2) if self._n_classes == 2 else (self._n_classes,)
        if p.size not in expected:
            raise DataError(
                f"probabilities must hold {self._n_classes} values (one per class), got {p.size}"
            )
        if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
            raise DataError("probabilities must be finite and within [0, 1]")
        return p

    def _keep_sample(
        self,
        row: NDArray[np.float64],
        probs: NDArray[np.float64] | None,
        prediction_id: str | None,
    ) -> None:
        cap = self.policy.max_samples_per_window
        if cap <= 0:
            return
        # Algorithm R: the i-th inference (0-based) replaces a kept one with chance cap/(i+1).
        slot = len(self.samples) if len(self.samples) < cap else self._rng.randrange(self.count + 1)
        if slot >= cap:
            return
        sample: dict[str, Any] = {"features": [float(v) for v in row]}
        if probs is not None:  # a profile without model outputs has no prediction to send
            sample["prediction"] = _predicted_class(probs)
        if prediction_id is not None:
            sample["id"] = prediction_id
        if slot == len(self.samples):
            self.samples.append(sample)
        else:
            self.samples[slot] = sample

    def _fold(self) -> None:
        """Bin the buffered rows into the window's histograms."""
        if not self._rows:
            return
        rows = np.stack(self._rows)
        probs = np.stack(self._probs) if self._probs else None
        self._rows, self._probs = [], []
        self._add(rows, probs)

    def _add(self, rows: NDArray[np.float64], probs: NDArray[np.float64] | None) -> None:
        h = self.profile.histograms(rows, probabilities=probs)
        for name, counts in h.features.items():
            self._features[name] += counts
        if self._predictions is not None and h.predictions is not None:
            self._predictions += h.predictions
        if self._confidence is not None and h.confidence is not None:
            self._confidence += h.confidence

    # ---- the window ----------------------------------------------------------------------

    def flush(self, start: datetime, end: datetime) -> dict[str, Any] | None:
        """The sketch body of the window [start, end) and a fresh, empty window.

        None when no inference was observed (there is nothing to compare).
        """
        window = {"start": wire_time(start), "end": wire_time(end)}  # refuses naive times
        if not start < end:
            raise DataError(
                f"sketch window must start before it ends, got {start.isoformat()} .. "
                f"{end.isoformat()}"
            )
        self._fold()
        if self.count == 0:
            self._reset()
            return None
        body: dict[str, Any] = {
            "release": {"name": self.release[0], "version": self.release[1]},
            "window": window,
            "count": self.count,
            "histograms": {
                "format": "tinyops.drift-histograms",
                "features": {k: v.tolist() for k, v in self._features.items()},
                "predictions": None if self._predictions is None else self._predictions.tolist(),
                "confidence": None if self._confidence is None else self._confidence.tolist(),
            },
        }
        if self.policy.max_samples_per_window > 0:
            body["samples"] = self.samples
        self._reset()
        return body


def _predicted_class(probs: NDArray[np.float64]) -> int:
    if probs.size == 1:  # a sigmoid's P(class 1), as the profile reads it
        return 1 if probs[0] > 0.5 else 0
    return int(np.argmax(probs))


def window_bounds(moment: datetime, window_s: float) -> tuple[datetime, datetime]:
    """The aligned window holding `moment`: [k·window_s, (k+1)·window_s) since the epoch.

    Aligned windows let the server add up the sketches of many devices window by window.
    """
    if window_s <= 0 or not math.isfinite(window_s):
        raise DataError(f"window_s must be a positive number of seconds, got {window_s!r}")
    t = moment.timestamp()
    k = math.floor(t / window_s)
    return (
        datetime.fromtimestamp(k * window_s, UTC),
        datetime.fromtimestamp((k + 1) * window_s, UTC),
    )


__all__ = [
    "BUFFER_ROWS",
    "SketchAccumulator",
    "window_bounds",
    "wire_time",
]
