"""Helpers of the compiler tests: compile + build + run against TFLM, and a .tflite builder.

`BitExactRun` compiles a model, builds it with the host compiler under the strict flags,
runs a batch of seeded random int8 inputs through the generated program in ONE process,
runs the same inputs through the TFLM runtime and keeps both outputs for comparison.

Inputs mix two distributions: uniform over all of int8 (saturates activations, reaches
every clamp) and a narrow normal around the input zero point (the values real data has,
where softmax outputs are not all saturated).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from tinyops.compile import (
    CompiledModel,
    build_host_runner,
    compile_model,
    run_host,
    write_library,
)
from tinyops.compile.ir import Activation, AddOptions, Graph, NoOptions, Operator, Tensor

INFERENCES = 128


def sized_graph(ops: list[tuple[str, tuple[int, ...], int]], sizes: list[int]) -> Graph:
    """A planner test graph: tensors 0..n-1 of the given byte sizes (int8, no constants),
    operators (kind, input tensors, output tensor); tensor 0 is the input, the last the
    output."""
    tensors = tuple(Tensor(i, f"t{i}", (n,), "int8", None) for i, n in enumerate(sizes))
    operators = tuple(
        Operator(
            i, kind, ins, (out,), AddOptions(Activation.NONE) if kind == "ADD" else NoOptions()
        )
        for i, (kind, ins, out) in enumerate(ops)
    )
    return Graph("<test>", tensors, operators, (0,), (len(sizes) - 1,))


def require_gcc() -> str:
    """The host C compiler, or a skip (a failure under CI=true) when there is none."""
    from ci_env import in_ci

    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        msg = "no host C compiler (gcc) to build the generated C"
        if in_ci():
            pytest.fail(msg + " (CI=true: gcc is required)")
        pytest.skip(msg)
    return cc


def random_inputs(shape: Sequence[int], zero_point: int, n: int, seed: int) -> NDArray[np.int8]:
    rng = np.random.default_rng(seed)
    half = n // 2
    uniform = rng.integers(-128, 128, size=(half, *shape), dtype=np.int64)
    narrow = np.rint(rng.normal(zero_point, 12.0, size=(n - half, *shape)))
    values: NDArray[np.int8] = np.clip(np.concatenate([uniform, narrow]), -128, 127).astype(np.int8)
    return values


@dataclass
class BitExactRun:
    compiled: CompiledModel
    inputs: NDArray[np.int8]
    ours: NDArray[np.int8]
    tflm: NDArray[np.int8]
    tflm_arena: int

    def mismatches(self) -> int:
        return int(np.count_nonzero(self.ours != self.tflm))


def bit_exact_run(
    tflite: bytes,
    name: str,
    workdir: Path,
    *,
    n: int = INFERENCES,
    seed: int = 0,
    source: str | None = None,
) -> BitExactRun:
    from tinyops.targets.tflm import TflmModel

    require_gcc()
    compiled = compile_model(tflite, name, source or f"<{name}>")
    lib = workdir / f"lib_{name}"
    write_library(compiled, lib)
    exe = build_host_runner(lib, name, workdir)
    tflm = TflmModel(tflite, source=source or name)
    shape = tflm.input_details[0].shape
    x = random_inputs(shape[1:], tflm.input_details[0].zero_point, n, seed)
    ours = run_host(exe, x.reshape(n, -1), compiled.graph.output.elements)
    theirs = np.stack([tflm.invoke_raw([xi.reshape(shape)])[0].reshape(-1) for xi in x])
    return BitExactRun(compiled, x, ours, theirs.astype(np.int8), tflm.arena.total)


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


class ModelBuilder:
    """A one-subgraph .tflite built from the schema: exact shapes, types and operators."""

    def __init__(self) -> None:
        self.s = _schema()
        self.codes: list[Any] = []
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [self.s.BufferT()]
        self.operators: list[Any] = []

    def tensor(
        self,
        shape: Sequence[int],
        dtype: str = "int8",
        data: NDArray[Any] | None = None,
        scale: Sequence[float] | None = (0.1,),
        zero_point: Sequence[int] | None = None,
    ) -> int:
        s = self.s
        t = s.TensorT()
        t.shape = list(shape)
        t.type = {
            "int8": s.TensorType.INT8,
            "int32": s.TensorType.INT32,
            "int16": s.TensorType.INT16,
            "float32": s.TensorType.FLOAT32,
        }[dtype]
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
        options_type: str = "NONE",
    ) -> None:
        s = self.s
        value = getattr(s.BuiltinOperator, name)
        code = s.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = value, min(value, 127), 1
        self.codes.append(code)
        o = s.OperatorT()
        o.opcodeIndex = len(self.codes) - 1
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_type)
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


def fc_model(activation_dtype: str = "int8", extra_op: str | None = None) -> bytes:
    """x[1,4] → FULLY_CONNECTED → y[1,2] (→ `extra_op` → z[1,2] when given)."""
    b = ModelBuilder()
    x = b.tensor([1, 4], activation_dtype, scale=[0.5] if activation_dtype != "float32" else None)
    w = b.tensor([2, 4], "int8", np.array([[4, 0, 0, 0], [2, 2, 2, 2]], np.int8), scale=[0.25])
    bias = b.tensor([2], "int32", np.array([0, 8], np.int32), scale=[0.125])
    y = b.tensor([1, 2], activation_dtype, scale=[1.0] if activation_dtype != "float32" else None)
    b.op(
        "FULLY_CONNECTED", [x, w, bias], [y], b.s.FullyConnectedOptionsT(), "FullyConnectedOptions"
    )
    out = y
    if extra_op is not None:
        out = b.tensor([1, 2], activation_dtype, scale=[1.0])
        b.op(extra_op, [y], [out])
    return b.to_bytes([x], [out])


def require_arm_gcc() -> str:
    """arm-none-eabi-gcc, or a skip (a failure under CI=true) when it is not installed."""
    from ci_env import in_ci

    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        msg = "arm-none-eabi-gcc not installed (apt-get install gcc-arm-none-eabi)"
        if in_ci():
            pytest.fail(msg + " (CI=true: the cross toolchain is required)")
        pytest.skip(msg)
    return cc
