from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from targets_testlib import MLPERF_TABLE, TinyModel

from tinyops.errors import ModelError
from tinyops.targets.ops import (
    model_ops,
    op_counts,
    tflm_op_set,
    total_macs,
    unsupported_ops,
)
from tinyops.targets.tflm import probe_registered_ops, tflm_version


@pytest.mark.fixtures
@pytest.mark.parametrize("name", sorted(MLPERF_TABLE))
def test_operators_match_the_fixture_table(name: str, mlperf_bytes: Callable[[str], bytes]) -> None:
    data = mlperf_bytes(name)
    operators, size, _arena = MLPERF_TABLE[name]
    assert len(data) == size
    ops = model_ops(data, name)
    assert set(op_counts(ops)) == operators
    assert {op.dtype for op in ops} == {"int8"}
    assert unsupported_ops(data, name) == []


@pytest.mark.fixtures
def test_kws_macs_by_hand(mlperf_bytes: Callable[[str], bytes]) -> None:
    # DS-CNN on a 49x10 MFCC map, 64 channels, feature map 25x5 after the strided first conv:
    first_conv = 25 * 5 * 64 * (10 * 4 * 1)  # 10x4 kernel over 1 channel = 320,000
    pointwise = 4 * (25 * 5 * 64 * (1 * 1 * 64))  # four 1x1 convs 64→64 = 2,048,000
    depthwise = 4 * (25 * 5 * 64 * (3 * 3))  # four 3x3 depthwise = 288,000
    classifier = 64 * 12  # FULLY_CONNECTED 64 → 12 = 768
    ops = model_ops(mlperf_bytes("kws_ref_model.tflite"))
    assert total_macs(ops) == first_conv + pointwise + depthwise + classifier == 2_656_768
    assert sum(op.macs for op in ops if op.name == "DEPTHWISE_CONV_2D") == depthwise
    # The average pool reads its 25x5 window once per each of the 64 outputs.
    pool = next(op for op in ops if op.name == "AVERAGE_POOL_2D")
    assert (pool.macs, pool.elements) == (0, 25 * 5 * 64)


@pytest.mark.fixtures
def test_published_mac_counts(mlperf_bytes: Callable[[str], bytes]) -> None:
    # MLPerf Tiny quotes VWW ≈ 7.5 M, IC (ResNet-8) ≈ 12.5 M, AD ≈ 0.26 M MACs.
    macs = {
        name: total_macs(model_ops(mlperf_bytes(name)))
        for name in ("vww_96_int8.tflite", "pretrainedResnet_quant.tflite", "ad01_int8.tflite")
    }
    assert macs == {
        "vww_96_int8.tflite": 7_489_664,
        "pretrainedResnet_quant.tflite": 12_501_632,
        "ad01_int8.tflite": 264_192,
    }


def test_fc_macs_and_shapes_on_a_hand_built_model(fc_model_bytes: bytes) -> None:
    (op,) = model_ops(fc_model_bytes)
    assert op.name == "FULLY_CONNECTED"
    assert op.input_shapes == ((1, 4), (2, 4), (2,))
    assert op.output_shapes == ((1, 2),)
    assert (op.macs, op.elements, op.dtype) == (2 * 4, 2, "int8")


def test_mac_formulas_per_operator(tiny_model: type[TinyModel]) -> None:
    m = tiny_model()
    s = m.s
    x = m.tensor([1, 8, 8, 3])
    # CONV_2D 3x3, 3 → 4 channels, stride 2: out 4x4x4 → 4·4·4·3·3·3 = 1,728 MACs
    conv_w = m.tensor([4, 3, 3, 3], data=np.zeros((4, 3, 3, 3), np.int8))
    conv_out = m.tensor([1, 4, 4, 4])
    m.op("CONV_2D", [x, conv_w, -1], [conv_out], s.Conv2DOptionsT(), "Conv2DOptions")
    # DEPTHWISE 3x3 on 4 channels, out 4x4x4 → 4·4·4·3·3 = 576 MACs
    dw_w = m.tensor([1, 3, 3, 4], data=np.zeros((1, 3, 3, 4), np.int8))
    dw_out = m.tensor([1, 4, 4, 4])
    m.op(
        "DEPTHWISE_CONV_2D",
        [conv_out, dw_w, -1],
        [dw_out],
        s.DepthwiseConv2DOptionsT(),
        "DepthwiseConv2DOptions",
    )
    # MAX_POOL 2x2 → out 2x2x4 = 16 values, each reading 4: 64 elements, no MACs
    pool = s.Pool2DOptionsT()
    pool.filterHeight, pool.filterWidth = 2, 2
    pool_out = m.tensor([1, 2, 2, 4])
    m.op("MAX_POOL_2D", [dw_out], [pool_out], pool, "Pool2DOptions")
    # FULLY_CONNECTED over 2 rows (batch 2) of 8 inputs to 5 units → 2·5·8 = 80 MACs
    fc_in = m.tensor([2, 8])
    fc_w = m.tensor([5, 8], data=np.zeros((5, 8), np.int8))
    fc_out = m.tensor([2, 5])
    m.op("FULLY_CONNECTED", [fc_in, fc_w, -1], [fc_out])
    ops = model_ops(m.to_bytes([x], [pool_out]))
    assert [(op.name, op.macs, op.elements) for op in ops] == [
        ("CONV_2D", 1_728, 64),
        ("DEPTHWISE_CONV_2D", 576, 64),
        ("MAX_POOL_2D", 0, 64),
        ("FULLY_CONNECTED", 80, 10),
    ]
    # An omitted optional input (bias -1) keeps its position as an empty shape.
    assert ops[0].input_shapes[2] == ()


def test_truncated_model_is_a_model_error_naming_the_source(fc_model_bytes: bytes) -> None:
    with pytest.raises(ModelError, match=r"^half\.tflite: "):
        model_ops(fc_model_bytes[: len(fc_model_bytes) // 2], "half.tflite")


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00" * 7, b"GIF89a not a model at all", b"\x10\x00\x00\x00TFL3" + b"\xff" * 40],
)
def test_garbage_is_a_model_error(data: bytes) -> None:
    with pytest.raises(ModelError, match=r"^junk\.tflite: "):
        model_ops(data, "junk.tflite")


@pytest.mark.fixtures
def test_weights_that_disagree_with_their_shape_are_rejected(
    mlperf_bytes: Callable[[str], bytes],
) -> None:
    # One byte changed inside the first conv filter's shape vector: the TFLM runtime would
    # index 2.9 TB of weights and crash (found by fuzzing); the structural check names it.
    data = bytearray(mlperf_bytes("kws_ref_model.tflite"))
    data[37303] = 68
    with pytest.raises(ModelError, match=r"tensor 17 .*but its buffer holds 2560 bytes"):
        model_ops(bytes(data), "kws.tflite")


def test_flex_op_is_unsupported(flex_model_bytes: bytes) -> None:
    assert unsupported_ops(flex_model_bytes) == ["FlexRFFT2D"]
    (op,) = model_ops(flex_model_bytes)
    assert (op.name, op.custom, op.dtype) == ("FlexRFFT2D", True, "float32")


@pytest.mark.slow
def test_converted_rfft2d_model_is_unsupported(rfft2d_model_bytes: bytes) -> None:
    assert unsupported_ops(rfft2d_model_bytes, "rfft.tflite") == ["COMPLEX_ABS", "RFFT2D"]


def test_op_list_matches_the_installed_runtime() -> None:
    listed = tflm_op_set()
    assert listed.runtime_version == tflm_version()
    builtin, custom = probe_registered_ops(custom_codes=[*sorted(listed.custom), "FlexRFFT2D"])
    assert set(builtin) == listed.builtin
    assert set(custom) == listed.custom  # FlexRFFT2D is not found
    # Sanity of the probe itself: the MLPerf Tiny operators are there, RFFT2D is not.
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= listed.builtin
    assert "RFFT2D" not in listed.builtin
