"""Quantization parameters: TFLite's QuantizeMultiplier and Prepare-time arithmetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyops.compile.ir import Activation
from tinyops.compile.quant import (
    activation_range,
    add_params,
    quantize_multiplier,
    round_half_away,
    softmax_params,
)


def test_round_half_away_from_zero() -> None:
    assert [round_half_away(v) for v in (0.5, 1.5, 2.5, -0.5, -2.5, 2.4999)] == [
        1,
        2,
        3,
        -1,
        -3,
        2,
    ]


@pytest.mark.parametrize(
    ("real", "expected"),
    [
        (0.0, (0, 0)),
        (0.5, (1 << 30, 0)),
        (1.0, (1 << 30, 1)),
        (0.25, (1 << 30, -1)),
        (0.75, (3 << 29, 0)),
        # A mantissa that rounds up to 2^31 is halved and the shift bumped.
        (1.0 - 2.0**-40, (1 << 30, 1)),
        # Below 2^-32 the multiplier is flushed to zero.
        (2.0**-40, (0, 0)),
    ],
)
def test_quantize_multiplier_known_values(real: float, expected: tuple[int, int]) -> None:
    assert quantize_multiplier(real) == expected


@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
def test_quantize_multiplier_represents_the_real(real: float) -> None:
    m, shift = quantize_multiplier(real)
    assert (1 << 30) <= m < (1 << 31)
    assert math.isclose(m * 2.0 ** (shift - 31), real, rel_tol=2.0**-30)


def test_activation_ranges() -> None:
    assert activation_range(Activation.NONE, 0.1, 3) == (-128, 127)
    assert activation_range(Activation.RELU, 0.1, -20) == (-20, 127)
    # RELU6 at scale 0.05: 6 / 0.05 = 120 steps above the zero point, clamped to int8.
    assert activation_range(Activation.RELU6, 0.05, -128) == (-128, -8)
    assert activation_range(Activation.RELU6, 0.01, 0) == (0, 127)
    assert activation_range(Activation.RELU_N1_TO_1, 0.5, 0) == (-2, 2)


def test_softmax_params_for_a_typical_input_scale() -> None:
    p = softmax_params(1.0, 0.125)
    # 0.125 * 2^26 = 2^23 → multiplier 2^30, left shift 24; radius 31 * 2^26 / 2^24 = 124.
    assert (p.input_multiplier, p.input_left_shift, p.diff_min) == (1 << 30, 24, -124)


def test_add_params_rescale_to_twice_the_larger_scale() -> None:
    p = add_params(0.5, 1, 0.25, -3, 1.0, 5)
    assert (p.input1_offset, p.input2_offset, p.output_offset, p.left_shift) == (-1, 3, 5, 20)
    # input 1: 0.5 / 1.0 = 0.5 → (2^30, 0); input 2: 0.25 → (2^30, -1).
    assert (p.input1_multiplier, p.input1_shift) == (1 << 30, 0)
    assert (p.input2_multiplier, p.input2_shift) == (1 << 30, -1)
    # output: 1.0 / (2^20 * 1.0) = 2^-20 → (2^30, -19).
    assert (p.output_multiplier, p.output_shift) == (1 << 30, -19)
