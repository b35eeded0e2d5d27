"""The reader: .tflite → IR, and one clear CompileError for each kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ci_env import require_fixtures
from compile_testlib import ModelBuilder, fc_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyops.compile import CompileError, compile_model, read_tflite
from tinyops.compile.ir import Activation, Conv2DOptions, DepthwiseConv2DOptions, Padding


@pytest.fixture(scope="module")
def kws() -> tuple[Path, bytes]:
    path = require_fixtures() / "kws_ref_model.tflite"
    return path, path.read_bytes()


@pytest.mark.fixtures
def test_reads_the_kws_model(kws: tuple[Path, bytes]) -> None:
    path, data = kws
    g = read_tflite(data, str(path))
    kinds = [op.kind for op in g.operators]
    assert kinds[0] == "CONV_2D" and kinds[-1] == "SOFTMAX" and len(kinds) == 13
    assert g.input.shape == (1, 49, 10, 1) and g.input.dtype == "int8"
    assert g.output.shape == (1, 12)
    first = g.operators[0]
    assert isinstance(first.options, Conv2DOptions)
    assert first.options.activation is Activation.RELU
    dw = next(op for op in g.operators if op.kind == "DEPTHWISE_CONV_2D")
    assert isinstance(dw.options, DepthwiseConv2DOptions)
    assert dw.options.padding is Padding.SAME and dw.options.depth_multiplier == 1
    w = g.tensor(dw.inputs[1])
    assert w.constant and w.quant is not None and w.quant.per_channel
    assert (w.quant.axis, len(w.quant.scales)) == (3, w.shape[3])
    assert w.values().shape == w.shape and w.values().dtype == np.int8
    bias = g.tensor(dw.inputs[2])
    assert bias.dtype == "int32" and bias.nbytes == 4 * w.shape[3]


def test_garbage_and_empty_files_are_refused() -> None:
    with pytest.raises(CompileError, match=r"^m\.tflite: .*too short"):
        read_tflite(b"", "m.tflite")
    with pytest.raises(CompileError, match=r"^m\.tflite: not a TFLite model"):
        read_tflite(b"hello world, not a model", "m.tflite")


@pytest.mark.fixtures
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cut=st.integers(min_value=0, max_value=53_935))
def test_truncated_files_fail_with_compile_error(kws: tuple[Path, bytes], cut: int) -> None:
    path, data = kws
    with pytest.raises(CompileError, match=f"^{path}: "):
        compile_model(data[:cut], "kws", str(path))


@pytest.mark.fixtures
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupt_headers_fail_cleanly_or_compile(
    kws: tuple[Path, bytes], edits: list[tuple[int, int]]
) -> None:
    # Byte flips in the FlatBuffer's tables: either a CompileError naming the file, or a
    # model that still compiles; never another exception.
    path, data = kws
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos] = value
    try:
        compile_model(bytes(buf), "kws", str(path))
    except CompileError as exc:
        assert str(exc).startswith(f"{path}: ")


def test_float_model_is_refused() -> None:
    b = ModelBuilder()
    x = b.tensor([1, 4], "float32", scale=None)
    w = b.tensor([2, 4], "float32", np.ones((2, 4), np.float32), scale=None)
    y = b.tensor([1, 2], "float32", scale=None)
    b.op("FULLY_CONNECTED", [x, w, -1], [y], b.s.FullyConnectedOptionsT(), "FullyConnectedOptions")
    with pytest.raises(
        CompileError, match=r"^f\.tflite: a float model: tensor 0 \(t0\) is float32"
    ):
        read_tflite(b.to_bytes([x], [y]), "f.tflite")


def test_hybrid_model_is_refused() -> None:
    with pytest.raises(CompileError, match=r"hybrid model \(int8 weights, float activations\)"):
        read_tflite(fc_model("float32"), "h.tflite")


def test_int16_activations_are_refused() -> None:
    with pytest.raises(CompileError, match=r"tensor 0 \(t0\) is int16.*16x8"):
        read_tflite(fc_model("int16"), "q16.tflite")


def test_unsupported_operator_named_with_its_index() -> None:
    with pytest.raises(
        CompileError, match=r"^u\.tflite: unsupported operator\(s\): operator 1 \(TANH\);"
    ):
        read_tflite(fc_model(extra_op="TANH"), "u.tflite")


def test_two_inputs_are_refused() -> None:
    b = ModelBuilder()
    x1, x2, y = b.tensor([1, 4]), b.tensor([1, 4]), b.tensor([1, 4])
    b.op("ADD", [x1, x2], [y], b.s.AddOptionsT(), "AddOptions")
    with pytest.raises(CompileError, match=r"2 input\(s\) and 1 output\(s\)"):
        read_tflite(b.to_bytes([x1, x2], [y]), "two.tflite")


def test_inconsistent_conv_output_shape_names_the_operator() -> None:
    b = ModelBuilder()
    x = b.tensor([1, 8, 8, 1])
    w = b.tensor([2, 3, 3, 1], "int8", np.ones((2, 3, 3, 1), np.int8), scale=[0.1, 0.2])
    y = b.tensor([1, 5, 5, 2])  # VALID 3x3 stride 1 on 8x8 gives 6x6
    opts = b.s.Conv2DOptionsT()
    opts.padding, opts.strideH, opts.strideW = 1, 1, 1
    opts.dilationHFactor = opts.dilationWFactor = 1
    b.op("CONV_2D", [x, w, -1], [y], opts, "Conv2DOptions")
    with pytest.raises(
        CompileError,
        match=r"^c\.tflite: operator 0 \(CONV_2D\): output is 5x5 but VALID padding .* 6x6",
    ):
        compile_model(b.to_bytes([x], [y]), "c", "c.tflite")


def test_bad_model_name_is_refused() -> None:
    with pytest.raises(CompileError, match="lower-case C identifier"):
        compile_model(fc_model(), "Bad-Name", "n.tflite")
