"""Quantization parameters computed exactly as TFLite / TFLM compute them at Prepare time.

Bit-exactness with TFLM starts here: the kernels' integer arithmetic can only match if
their multipliers, shifts and clamps are the very integers TFLM derives from the model's
float scales. So each function below repeats TFLite's computation step for step, in the
same precision:

- `quantize_multiplier`: TFLite's QuantizeMultiplier: frexp of the double multiplier,
  the mantissa times 2^31 rounded half away from zero (std::round, not Python's
  banker's rounding), a mantissa of exactly 2^31 halved, tiny multipliers flushed to 0.
- scales are float32 in the model and are widened to double *before* multiplying, as
  TFLM's PopulateConvolutionQuantizationParams and GetQuantizedConvolutionMultipler do.
- `activation_range`: CalculateActivationRangeQuantized, whose quantize step divides in
  float32 (`f / scale` with both float) before rounding.
- `softmax_params`, `add_params`: TFLM's softmax and add Prepare (input multiplier and
  left shift, diff_min; left_shift 20 and the three rescaling multipliers).

TFLM is built without TFLITE_SINGLE_ROUNDING, so the kernels use the two-step rounding
(SaturatingRoundingDoublingHighMul then RoundingDivideByPOT); that choice also fixes the
softmax multiplier cap at 2^31 − 1 below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tinyops.compile.ir import Activation

INT8_MIN = -128
INT8_MAX = 127
# The integer bits of softmax's scaled input differences (Q5.26), kScaledDiffIntegerBits.
SOFTMAX_DIFF_INTEGER_BITS = 5
# ADD rescales both int8 inputs to a common scale with this many bits of headroom.
ADD_LEFT_SHIFT = 20


def round_half_away(x: float) -> int:
    """std::round: halves go away from zero (Python's round() goes to even)."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(multiplier, shift) with real ≈ multiplier × 2^(shift − 31), multiplier in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    q = round_half_away(mantissa * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        shift, q = 0, 0
    return q, shift


def activation_range(activation: Activation, scale: float, zero_point: int) -> tuple[int, int]:
    """The int8 clamp [min, max] a fused activation imposes on an output tensor."""

    def quantize(f: float) -> int:
        # float32 division, as `f / scale` on two floats in CalculateActivationRangeQuantized.
        return zero_point + round_half_away(float(np.float32(f) / np.float32(scale)))

    lo, hi = INT8_MIN, INT8_MAX
    if activation is Activation.RELU:
        return max(lo, quantize(0.0)), hi
    if activation is Activation.RELU6:
        return max(lo, quantize(0.0)), min(hi, quantize(6.0))
    if activation is Activation.RELU_N1_TO_1:
        return max(lo, quantize(-1.0)), min(hi, quantize(1.0))
    return lo, hi


def channel_multipliers(
    input_scale: float, filter_scales: tuple[float, ...], output_scale: float, channels: int
) -> tuple[list[int], list[int]]:
    """Per-output-channel (multipliers, shifts) of a convolution; a single scale broadcasts."""
    mults: list[int] = []
    shifts: list[int] = []
    for c in range(channels):
        filter_scale = filter_scales[c] if len(filter_scales) > 1 else filter_scales[0]
        m, s = quantize_multiplier(float(input_scale) * float(filter_scale) / float(output_scale))
        mults.append(m)
        shifts.append(s)
    return mults, shifts


@dataclass(frozen=True)
class SoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int


def softmax_params(beta: float, input_scale: float) -> SoftmaxParams:
    """TFLM's int8 softmax Prepare (PreprocessSoftmaxScaling, CalculateInputRadius)."""
    bits = SOFTMAX_DIFF_INTEGER_BITS
    real = min(
        float(beta) * float(input_scale) * float(1 << (31 - bits)),
        float((1 << 31) - 1),
    )
    multiplier, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        raise ValueError(f"softmax input multiplier {real} is below one (left shift {left_shift})")
    radius = math.floor(((1 << bits) - 1) * (1 << (31 - bits)) / (1 << left_shift))
    return SoftmaxParams(multiplier, left_shift, -radius)


@dataclass(frozen=True)
class AddParams:
    input1_offset: int
    input2_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    output_offset: int
    left_shift: int


def add_params(
    scale1: float, zp1: int, scale2: float, zp2: int, out_scale: float, out_zp: int
) -> AddParams:
    """TFLM's int8 ADD Prepare: both inputs to twice the larger scale, then to the output."""
    twice_max = 2.0 * float(max(np.float32(scale1), np.float32(scale2)))
    m1, s1 = quantize_multiplier(float(scale1) / twice_max)
    m2, s2 = quantize_multiplier(float(scale2) / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * float(out_scale)))
    if max(s1, s2, so) > 0:
        raise ValueError("ADD rescaling multipliers must be below one")
    return AddParams(-zp1, -zp2, m1, s1, m2, s2, mo, so, out_zp, ADD_LEFT_SHIFT)
