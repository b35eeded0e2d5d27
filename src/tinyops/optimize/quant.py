"""Affine int8 quantization, as the TFLite quantization spec defines it.

    real = scale * (q - zero_point)        q = clamp(round(real / scale) + zero_point, -128, 127)

Rounding is half away from zero, as TFLite's reference kernels round. These two functions
are the only place tinyops converts between a model's float domain and its int8 tensors,
so the host evaluation, the TFLM device run and the golden vectors of a bundle agree.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

INT8_MIN = -128
INT8_MAX = 127


def quantize(x: NDArray[np.floating], scale: float, zero_point: int) -> NDArray[np.int8]:
    """Map float values to int8 with the tensor's (scale, zero_point)."""
    if scale <= 0:
        raise ValueError(f"quantization scale must be > 0, got {scale}")
    scaled = np.asarray(x, dtype=np.float64) / scale
    # np.round rounds half to even; TFLite rounds half away from zero.
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    out: NDArray[np.int8] = np.clip(rounded + zero_point, INT8_MIN, INT8_MAX).astype(np.int8)
    return out


def dequantize(q: NDArray[np.integer], scale: float, zero_point: int) -> NDArray[np.float32]:
    """Map int8 values back to floats."""
    return (scale * (np.asarray(q, dtype=np.float32) - np.float32(zero_point))).astype(np.float32)
