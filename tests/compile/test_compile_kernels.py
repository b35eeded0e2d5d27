"""Per-kernel golden tests: one small Keras model per operator variant, converted to int8
with the TFLite converter, compiled, built, and compared byte for byte with TFLM on 128
seeded random inputs. Each case exercises what the MLPerf models do not: SAME padding
with stride 2 (asymmetric padding), dilation, depth multiplier 2, RELU6 clamps, partial
pooling windows at the edges, ADD with two different input scales, SOFTMAX on a wide
range of input scales.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from compile_testlib import bit_exact_run

pytestmark = pytest.mark.slow


def _conv_same_stride2(layers: Any, x: Any) -> Any:
    return layers.Conv2D(5, 3, strides=2, padding="same", activation="relu")(x)


def _conv_valid_dilated_relu6(layers: Any, x: Any) -> Any:
    return layers.Conv2D(
        4, (3, 2), dilation_rate=2, padding="valid", activation="relu6", use_bias=False
    )(x)


def _conv_same_even_kernel(layers: Any, x: Any) -> Any:
    return layers.Conv2D(3, 4, strides=(2, 3), padding="same")(x)


def _depthwise_multiplier2(layers: Any, x: Any) -> Any:
    return layers.DepthwiseConv2D(
        3, strides=2, depth_multiplier=2, padding="same", activation="relu"
    )(x)


def _depthwise_dilated_valid(layers: Any, x: Any) -> Any:
    return layers.DepthwiseConv2D(3, dilation_rate=2, padding="valid")(x)


def _dense(layers: Any, x: Any) -> Any:
    return layers.Dense(7, activation="relu")(layers.Flatten()(x))


def _average_pool_same(layers: Any, x: Any) -> Any:
    # Only a pool cannot be converted alone (it would be a no-op on the quantized input);
    # a convolution in front gives it its own tensors.
    x = layers.Conv2D(3, 1)(x)
    return layers.AveragePooling2D(3, strides=2, padding="same")(x)


def _max_pool_valid(layers: Any, x: Any) -> Any:
    x = layers.Conv2D(3, 1)(x)
    return layers.MaxPooling2D((2, 3), strides=(2, 2), padding="valid")(x)


def _add_two_scales(layers: Any, x: Any) -> Any:
    a = layers.Conv2D(3, 1)(x)
    b = layers.Conv2D(3, 3, padding="same")(x)
    return layers.ReLU()(layers.Add()([a, layers.Rescaling(4.0)(b)]))


def _softmax(layers: Any, x: Any) -> Any:
    return layers.Softmax()(layers.Dense(10)(layers.Flatten()(x)))


def _softmax_wide(layers: Any, x: Any) -> Any:
    # Large logits: the input scale is coarse and most differences fall below diff_min.
    return layers.Softmax()(layers.Rescaling(40.0)(layers.Dense(6)(layers.Flatten()(x))))


CASES: dict[str, tuple[tuple[int, ...], Callable[[Any, Any], Any], set[str]]] = {
    "conv_same_stride2": ((9, 9, 3), _conv_same_stride2, {"CONV_2D"}),
    "conv_valid_dilated_relu6": ((10, 9, 2), _conv_valid_dilated_relu6, {"CONV_2D"}),
    "conv_same_even_kernel": ((8, 10, 2), _conv_same_even_kernel, {"CONV_2D"}),
    "depthwise_multiplier2": ((8, 7, 3), _depthwise_multiplier2, {"DEPTHWISE_CONV_2D"}),
    "depthwise_dilated_valid": ((9, 9, 4), _depthwise_dilated_valid, {"DEPTHWISE_CONV_2D"}),
    "dense": ((5, 4), _dense, {"FULLY_CONNECTED"}),
    "average_pool_same": ((7, 7, 2), _average_pool_same, {"AVERAGE_POOL_2D"}),
    "max_pool_valid": ((8, 9, 2), _max_pool_valid, {"MAX_POOL_2D"}),
    "add_two_scales": ((6, 6, 3), _add_two_scales, {"ADD"}),
    "softmax": ((3, 4), _softmax, {"SOFTMAX"}),
    "softmax_wide": ((3, 4), _softmax_wide, {"SOFTMAX"}),
}


def _int8_model(shape: tuple[int, ...], body: Callable[[Any, Any], Any]) -> bytes:
    import keras

    from tinyops.optimize.convert import convert

    keras.utils.set_random_seed(7)
    inputs = keras.Input(shape)
    model = keras.Model(inputs, body(keras.layers, inputs))
    samples = np.random.default_rng(1).normal(0.0, 1.0, size=(64, *shape)).astype(np.float32)
    return convert(model, "int8", samples)


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_bit_exact_with_tflm(case: str, tmp_path: Path) -> None:
    shape, body, must_have = CASES[case]
    tflite = _int8_model(shape, body)
    run = bit_exact_run(tflite, case, tmp_path, seed=11)
    kinds = {op.kind for op in run.compiled.graph.operators}
    assert must_have <= kinds, kinds
    assert run.mismatches() == 0, f"{run.mismatches()} of {run.ours.size} output bytes differ"
    assert len({row.tobytes() for row in run.ours}) > 1
