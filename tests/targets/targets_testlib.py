"""Helpers of the targets tests: the MLPerf Tiny fixture table and hand-built .tflite files.

The hand-built models are written with the TFLite schema bindings bundled in the tflite-micro
wheel, so their shapes, weights and quantization are known exactly and the expected outputs,
MACs and element counts can be computed by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MLPERF_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mlperf-tiny"

# From the fixture README table: file → (operators, bytes, TFLM arena total in bytes).
MLPERF_TABLE: dict[str, tuple[set[str], int, int]] = {
    "kws_ref_model.tflite": (
        {
            "CONV_2D",
            "DEPTHWISE_CONV_2D",
            "AVERAGE_POOL_2D",
            "FULLY_CONNECTED",
            "RESHAPE",
            "SOFTMAX",
        },
        53_936,
        24_272,
    ),
    "vww_96_int8.tflite": (
        {
            "CONV_2D",
            "DEPTHWISE_CONV_2D",
            "AVERAGE_POOL_2D",
            "FULLY_CONNECTED",
            "RESHAPE",
            "SOFTMAX",
        },
        333_288,
        103_680,
    ),
    "pretrainedResnet_quant.tflite": (
        {"CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX"},
        98_496,
        55_984,
    ),
    "ad01_int8.tflite": ({"FULLY_CONNECTED"}, 276_976, 3_984),
    "str_ww_ref_model.tflite": (
        {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE", "SOFTMAX"},
        74_520,
        16_640,
    ),
}


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


class TinyModel:
    """Builds a one-subgraph .tflite: add tensors and operators, then `to_bytes()`."""

    def __init__(self) -> None:
        self.s = _schema()
        self.codes: list[Any] = []
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [self.s.BufferT()]  # buffer 0: the empty sentinel
        self.operators: list[Any] = []

    def tensor(
        self,
        shape: Sequence[int],
        dtype: str = "int8",
        data: np.ndarray | None = None,
        scale: Sequence[float] | None = None,
        zero_point: Sequence[int] | None = None,
    ) -> int:
        s = self.s
        t = s.TensorT()
        t.shape = list(shape)
        t.type = {"int8": s.TensorType.INT8, "int32": s.TensorType.INT32}.get(
            dtype, s.TensorType.FLOAT32
        )
        t.name = f"t{len(self.tensors)}"
        buf = s.BufferT()
        if data is not None:
            buf.data = np.ascontiguousarray(data).tobytes()
        self.buffers.append(buf)
        t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale = list(scale)
            q.zeroPoint = list(zero_point if zero_point is not None else [0] * len(scale))
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        name: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Any = None,
        options_type: str | None = None,
        custom_code: str | None = None,
    ) -> None:
        s = self.s
        code_value = getattr(s.BuiltinOperator, name)
        code = s.OperatorCodeT()
        code.builtinCode = code_value
        code.deprecatedBuiltinCode = min(code_value, 127)
        code.customCode = custom_code
        code.version = 1
        self.codes.append(code)
        o = s.OperatorT()
        o.opcodeIndex = len(self.codes) - 1
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_type or "NONE")
            o.builtinOptions = options
        self.operators.append(o)

    def to_bytes(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        import flatbuffers

        s = self.s
        m = s.ModelT()
        m.version = 3
        m.operatorCodes = self.codes
        sg = s.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.operators
        sg.inputs, sg.outputs = list(inputs), list(outputs)
        m.subgraphs, m.buffers = [sg], self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def fc_int8_model() -> bytes:
    """y = W·x + b with exactly representable int8 quantization.

    x: int8 [1,4], scale 0.5;  W = [[1,0,0,0],[0.5,0.5,0.5,0.5]] stored as int8 scale 0.25
    ([[4,0,0,0],[2,2,2,2]]);  b = [0, 1] as int32 scale 0.125 ([0, 8]);  y: int8 [1,2], scale 1.
    """
    m = TinyModel()
    x = m.tensor([1, 4], "int8", scale=[0.5])
    w = m.tensor([2, 4], "int8", np.array([[4, 0, 0, 0], [2, 2, 2, 2]], np.int8), scale=[0.25])
    b = m.tensor([2], "int32", np.array([0, 8], np.int32), scale=[0.125])
    y = m.tensor([1, 2], "int8", scale=[1.0])
    m.op(
        "FULLY_CONNECTED",
        [x, w, b],
        [y],
        m.s.FullyConnectedOptionsT(),
        "FullyConnectedOptions",
    )
    return m.to_bytes([x], [y])
