"""Golden tests for the TFLite affine int8 mapping (round half away from zero, clamp)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyops.optimize.quant import dequantize, quantize


def test_quantize_golden_values() -> None:
    x = np.array([0.0, 0.5, -0.5, 0.25, 1.0, -1.0, 10.0, -10.0])
    # scale 0.5, zero point -3: q = round(x / 0.5) - 3
    got = quantize(x, 0.5, -3)
    assert got.dtype == np.int8
    assert got.tolist() == [-3, -2, -4, -2, -1, -5, 17, -23]


def test_quantize_rounds_half_away_from_zero_not_to_even() -> None:
    # 2.5 and -2.5 are exact halves: numpy's round would give 2 and -2.
    got = quantize(np.array([2.5, -2.5, 3.5]), 1.0, 0)
    assert got.tolist() == [3, -3, 4]


def test_quantize_clamps_to_int8() -> None:
    got = quantize(np.array([1000.0, -1000.0]), 1.0, 0)
    assert got.tolist() == [127, -128]


def test_dequantize_inverts_on_grid() -> None:
    q = np.array([-128, -1, 0, 5, 127], dtype=np.int8)
    x = dequantize(q, 0.25, 4)
    assert x.dtype == np.float32
    assert x.tolist() == [-33.0, -1.25, -1.0, 0.25, 30.75]
    assert quantize(x, 0.25, 4).tolist() == q.tolist()


def test_nonpositive_scale_rejected() -> None:
    with pytest.raises(ValueError, match="scale must be > 0"):
        quantize(np.zeros(2), 0.0, 0)
