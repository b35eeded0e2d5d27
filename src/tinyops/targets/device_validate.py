"""Device validation: run every evaluation sample through the TFLM runtime itself.

Host evaluation of a quantized model uses the LiteRT interpreter; the device runs TFLM.
Both should agree, but kernel differences, rounding and quantization of the inputs can make
them drift. This runs the exact .tflite bytes through TFLM (`tflm.TflmModel`), one sample at
a time as the device does, and reports:

    accuracy             share of samples whose TFLM class equals the label
    agreement            share of samples whose TFLM class equals the float reference's class
    max_abs_output_diff  largest |TFLM output - reference output| over all samples and values

The class of an output row is its argmax; a single-unit output (a sigmoid) is thresholded at
0.5. Labels may be class indices or one-hot rows. Gates are the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import DataError
from tinyops.targets.tflm import TflmModel


@dataclass(frozen=True)
class DeviceValidation:
    """Outcome of running `n` samples through TFLM; None where there was nothing to compare."""

    accuracy: float | None
    agreement: float | None
    max_abs_output_diff: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "agreement": self.agreement,
            "max_abs_output_diff": self.max_abs_output_diff,
            "n": self.n,
        }


def classes(outputs: NDArray[Any]) -> NDArray[np.int64]:
    """Predicted class per row: argmax, or output > 0.5 for a single-unit output."""
    flat = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    if flat.shape[1] == 1:
        picked: NDArray[np.int64] = (flat[:, 0] > 0.5).astype(np.int64)
    else:
        picked = np.argmax(flat, axis=1).astype(np.int64)
    return picked


def _labels(y: NDArray[Any], n: int) -> NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:  # one-hot rows
        arr = np.argmax(arr, axis=1)
    arr = arr.reshape(-1)
    if len(arr) != n:
        raise DataError(f"device validation: {len(arr)} labels for {n} samples")
    return arr.astype(np.int64)


def validate_outputs(
    device_outputs: NDArray[Any],
    y: NDArray[Any] | None,
    reference_outputs: NDArray[Any] | None,
) -> DeviceValidation:
    """Score device outputs against labels and a float reference (see module docstring)."""
    out = np.asarray(device_outputs, dtype=np.float32)
    n = len(out)
    accuracy = agreement = max_diff = None
    if n and y is not None:
        accuracy = float(np.mean(classes(out) == _labels(y, n)))
    if n and reference_outputs is not None:
        ref = np.asarray(reference_outputs, dtype=np.float32)
        if ref.shape[0] != n or ref.size != out.size:
            raise DataError(
                f"device validation: reference outputs have shape {list(ref.shape)}, "
                f"expected {n} rows like the device outputs {list(out.shape)}"
            )
        ref = ref.reshape(out.shape)
        agreement = float(np.mean(classes(out) == classes(ref)))
        max_diff = float(np.max(np.abs(out - ref)))
    return DeviceValidation(
        accuracy=accuracy, agreement=agreement, max_abs_output_diff=max_diff, n=n
    )


def validate_on_device(
    tflite_bytes: bytes,
    x_float: NDArray[Any],
    y: NDArray[Any] | None,
    reference_outputs: NDArray[Any] | None = None,
    source: str = "<tflite bytes>",
) -> DeviceValidation:
    """Run every sample of `x_float` through TFLM and score it against `y` and the reference."""
    model = TflmModel(tflite_bytes, source=source)
    return validate_outputs(model.run(x_float), y, reference_outputs)
