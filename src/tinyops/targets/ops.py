"""Operators of a .tflite model, their work in multiply-accumulates, and what TFLM lacks.

A TFLite model is a FlatBuffer (schema `tensorflow/lite/schema/schema.fbs`): a list of
operator codes, subgraphs of tensors and operators, and constant buffers. This module reads
that structure directly with the schema bindings that ship *inside* the pinned `tflite-micro`
wheel (`tflite_micro.tensorflow.lite.micro.python.schema_py_generated`), rather than through
`ai_edge_litert.interpreter.Interpreter`, because:

* the LiteRT interpreter must resolve every kernel before it exposes anything, so it refuses
  the very models this module exists to diagnose (Flex/custom ops, ops newer than it);
* tensor shapes, operator codes and custom codes are stored in the file, so reading them needs
  no kernel, no allocation and no delegate (no XNNPACK 'DELEGATE' pseudo-ops to filter);
* the schema bundled with the TFLM runtime is by construction the one that runtime parses.

Work per operator (all counts are per inference, batch as stored in the model):

    CONV_2D            macs = out_h · out_w · out_c · k_h · k_w · in_c     (× batch)
    DEPTHWISE_CONV_2D  macs = out_h · out_w · out_c · k_h · k_w            (× batch)
    FULLY_CONNECTED    macs = rows · out_units · in_units   (rows = output elements / out_units)
    TRANSPOSE_CONV     macs = in_h · in_w · in_c · k_h · k_w · out_c       (× batch)
    BATCH_MATMUL       macs = output elements · inner dimension

`elements` is the element-wise work: the number of values an operator writes (for MAC
operators: the per-output bias add and requantization), and for pooling the values it reads,
output elements · window height · window width. The cost model (`cost.py`) prices both.

Which operators TFLM can run is listed in `tflm_ops.yaml`, derived from the installed runtime
itself (see `tinyops.targets.tflm.probe_registered_ops` and that file's header).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from tinyops.errors import ModelError

# Operators whose cost is dominated by multiply-accumulates.
MAC_OPS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"}
)
POOL_OPS = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"})

# Every TFLite file carries this FlatBuffer file identifier at bytes 4..8.
TFLITE_FILE_IDENTIFIER = b"TFL3"

# numpy-style names of the schema's TensorType enum values.
_TENSOR_TYPE_NAMES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    8: "complex64",
    9: "int8",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
}


# Bytes per element of the fixed-size tensor types (schema TensorType value → bytes); string,
# resource, variant and the packed int4/int2 types have no fixed size and are absent.
TENSOR_TYPE_BYTES = {
    0: 4,  # float32
    1: 2,  # float16
    2: 4,  # int32
    3: 1,  # uint8
    4: 8,  # int64
    6: 1,  # bool
    7: 2,  # int16
    8: 8,  # complex64
    9: 1,  # int8
    10: 8,  # float64
    11: 16,  # complex128
    12: 8,  # uint64
    15: 4,  # uint32
    16: 2,  # uint16
}


@dataclass(frozen=True)
class OpInfo:
    """One operator of a model, in execution order within its subgraph.

    `name` is the builtin operator name (e.g. "CONV_2D") or, for custom operators, the custom
    code (e.g. "FlexRFFT2D"). An omitted optional input (tensor index -1, e.g. a
    FULLY_CONNECTED without bias) appears in `input_shapes` as an empty shape, so positions
    keep their meaning (input 1 is always the filter of a convolution).
    """

    index: int
    name: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    macs: int
    elements: int
    dtype: str
    subgraph: int = 0
    custom: bool = False


@dataclass(frozen=True)
class TflmOpSet:
    """The operators the TFLM runtime registers: builtin names and custom codes."""

    builtin: frozenset[str]
    custom: frozenset[str]
    runtime_version: str

    def supports(self, op: OpInfo) -> bool:
        return op.name in (self.custom if op.custom else self.builtin)


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


@functools.cache
def builtin_operator_names() -> dict[int, str]:
    """Builtin operator code → name, from the schema bundled with the TFLM runtime."""
    enum = _schema().BuiltinOperator
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def load_model(tflite_bytes: bytes, source: str = "<tflite bytes>") -> Any:
    """Parse and structurally check a .tflite FlatBuffer; returns the schema's `ModelT`.

    Every index the runtime would follow (operator codes, tensors, buffers) is checked to be
    in range, because the TFLM C++ runtime does not verify the FlatBuffer and dereferences
    them as they are. Anything malformed raises `ModelError` naming `source`.
    """
    data = bytes(tflite_bytes)
    if len(data) < 8:
        raise ModelError(
            f"{source}: {len(data)} bytes is too short to be a .tflite model "
            "(expected a TFLite FlatBuffer)"
        )
    if data[4:8] != TFLITE_FILE_IDENTIFIER:
        raise ModelError(
            f"{source}: not a TFLite model: FlatBuffer identifier is {data[4:8]!r}, "
            f"expected {TFLITE_FILE_IDENTIFIER!r} (is the file truncated or of another kind?)"
        )
    schema = _schema()
    try:
        root = schema.Model.GetRootAs(data, 0)
        model = schema.ModelT.InitFromObj(root)
    except Exception as exc:  # the FlatBuffer reader raises struct/Index/Value/TypeErrors
        kind = type(exc).__qualname__
        if type(exc).__module__ != "builtins":
            kind = f"{type(exc).__module__}.{kind}"
        raise ModelError(
            f"{source}: corrupt or truncated .tflite FlatBuffer ({kind}: {exc})"
        ) from exc
    _check_structure(model, len(data), source)
    return model


def _check_structure(model: Any, size: int, source: str) -> None:
    def bad(what: str) -> ModelError:
        return ModelError(f"{source}: corrupt .tflite model: {what}")

    codes = model.operatorCodes or []
    buffers = model.buffers or []
    if not model.subgraphs:
        raise bad("it has no subgraph")
    for b_index, buf in enumerate(buffers):
        if buf is not None and buf.offset > 1 and buf.offset + buf.size > size:
            raise bad(f"buffer {b_index} points past the end of the file")
    for s_index, sg in enumerate(model.subgraphs):
        if sg is None:
            raise bad(f"subgraph {s_index} is missing")
        tensors = sg.tensors or []
        for t_index, t in enumerate(tensors):
            if t is None:
                raise bad(f"subgraph {s_index} tensor {t_index} is missing")
            if not 0 <= t.buffer < max(len(buffers), 1):
                raise bad(f"subgraph {s_index} tensor {t_index} refers to buffer {t.buffer}")
            if t.shape is not None and any(int(d) < 0 for d in t.shape):
                raise bad(f"subgraph {s_index} tensor {t_index} has shape {list(t.shape)}")
            _check_constant_size(t, buffers, f"subgraph {s_index} tensor {t_index}", bad)
        for io_name, io in (("input", sg.inputs), ("output", sg.outputs)):
            for i in [] if io is None else io:
                if not 0 <= int(i) < len(tensors):
                    raise bad(f"subgraph {s_index} {io_name} refers to tensor {int(i)}")
        for o_index, op in enumerate(sg.operators or []):
            if op is None or not 0 <= op.opcodeIndex < len(codes) or codes[op.opcodeIndex] is None:
                raise bad(f"subgraph {s_index} operator {o_index} has no valid operator code")
            for i in list([] if op.inputs is None else op.inputs) + list(
                [] if op.outputs is None else op.outputs
            ):
                if not -1 <= int(i) < len(tensors):
                    raise bad(f"subgraph {s_index} operator {o_index} refers to tensor {int(i)}")


def _check_constant_size(
    tensor: Any, buffers: list[Any], where: str, bad: Callable[[str], ModelError]
) -> None:
    """A constant's bytes must match its shape: kernels index weights by the shape alone."""
    if not 0 < tensor.buffer < len(buffers) or buffers[tensor.buffer] is None:
        return
    buf = buffers[tensor.buffer]
    stored = len(buf.data) if buf.data is not None else int(buf.size)
    itemsize = TENSOR_TYPE_BYTES.get(int(tensor.type))
    if stored == 0 or itemsize is None or tensor.sparsity is not None:
        return  # no data, a packed/variable-size type, or a sparse encoding
    expected = _prod([] if tensor.shape is None else tensor.shape) * itemsize
    if stored != expected:
        raise bad(
            f"{where} ({_tensor_name(tensor)}) has shape {[int(d) for d in tensor.shape]} "
            f"({expected} bytes) but its buffer holds {stored} bytes"
        )


def _tensor_name(tensor: Any) -> str:
    name = tensor.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _op_name(code: Any) -> tuple[str, bool]:
    schema = _schema()
    # Codes above 127 live in `builtinCode`; older files only fill `deprecatedBuiltinCode`.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode
        text = custom.decode("utf-8", "replace") if isinstance(custom, bytes) else str(custom)
        return text, True
    return builtin_operator_names().get(builtin, f"BUILTIN_{builtin}"), False


def _macs(name: str, ins: Sequence[tuple[int, ...]], outs: Sequence[tuple[int, ...]]) -> int:
    if not outs or not outs[0]:
        return 0
    out = outs[0]
    if name == "CONV_2D" and len(ins) > 1 and len(ins[1]) == 4:
        _oc, kh, kw, ic = ins[1]  # filter: [out_c, k_h, k_w, in_c]
        return _prod(out) * kh * kw * ic
    if name == "DEPTHWISE_CONV_2D" and len(ins) > 1 and len(ins[1]) == 4:
        _one, kh, kw, _oc = ins[1]  # filter: [1, k_h, k_w, out_c]
        return _prod(out) * kh * kw
    if name == "FULLY_CONNECTED" and len(ins) > 1 and len(ins[1]) == 2:
        out_units, in_units = ins[1]  # weights: [out_units, in_units]
        rows = _prod(out) // out_units if out_units else 0
        return rows * out_units * in_units
    if name == "TRANSPOSE_CONV" and len(ins) > 2 and len(ins[1]) == 4:
        _oc, kh, kw, _ic = ins[1]  # filter: [out_c, k_h, k_w, in_c]; input 2 is the data
        return _prod(ins[2]) * kh * kw * out[-1]
    if name == "BATCH_MATMUL" and ins and len(ins[0]) >= 2:
        return _prod(out) * ins[0][-1]
    return 0


def _elements(name: str, op: Any, outs: Sequence[tuple[int, ...]]) -> int:
    n = sum(_prod(s) for s in outs)
    if name in POOL_OPS and op.builtinOptions is not None:
        window = int(op.builtinOptions.filterHeight) * int(op.builtinOptions.filterWidth)
        return n * max(window, 1)
    return n


def ops_of_model(model: Any) -> list[OpInfo]:
    """The operators of a parsed model (`load_model`), every subgraph in order."""
    codes = model.operatorCodes or []
    result: list[OpInfo] = []
    for s_index, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []

        def shape(i: int, tensors: list[Any] = tensors) -> tuple[int, ...]:
            if i < 0 or tensors[i].shape is None:
                return ()
            return tuple(int(d) for d in tensors[i].shape)

        for o_index, op in enumerate(sg.operators or []):
            name, custom = _op_name(codes[op.opcodeIndex])
            in_idx = [int(i) for i in ([] if op.inputs is None else op.inputs)]
            out_idx = [int(i) for i in ([] if op.outputs is None else op.outputs)]
            ins = tuple(shape(i) for i in in_idx)
            outs = tuple(shape(i) for i in out_idx)
            # The activation dtype: first input that is not a constant (buffer 0 is empty).
            typed = [i for i in in_idx if i >= 0 and tensors[i].buffer == 0] or [
                i for i in in_idx + out_idx if i >= 0
            ]
            dtype = _TENSOR_TYPE_NAMES.get(tensors[typed[0]].type, "unknown") if typed else ""
            result.append(
                OpInfo(
                    index=o_index,
                    name=name,
                    input_shapes=ins,
                    output_shapes=outs,
                    macs=_macs(name, ins, outs),
                    elements=_elements(name, op, outs),
                    dtype=dtype,
                    subgraph=s_index,
                    custom=custom,
                )
            )
    return result


def model_ops(tflite_bytes: bytes, source: str = "<tflite bytes>") -> list[OpInfo]:
    """Parse a .tflite model and list its operators with MACs and element-wise work."""
    return ops_of_model(load_model(tflite_bytes, source))


def op_counts(ops: Iterable[OpInfo]) -> dict[str, int]:
    """Operator name → how many times the model uses it."""
    return dict(sorted(Counter(op.name for op in ops).items()))


def total_macs(ops: Iterable[OpInfo]) -> int:
    return sum(op.macs for op in ops)


@functools.cache
def tflm_op_set() -> TflmOpSet:
    """The operators TFLM registers, as listed in the packaged `tflm_ops.yaml`."""
    text = importlib.resources.files("tinyops.targets").joinpath("tflm_ops.yaml").read_text()
    data = yaml.safe_load(text)
    return TflmOpSet(
        builtin=frozenset(data["builtin"]),
        custom=frozenset(data["custom"]),
        runtime_version=str(data["tflite_micro_version"]),
    )


def unsupported_in(ops: Iterable[OpInfo]) -> list[str]:
    """Names of the operators TFLM cannot resolve, sorted, each once."""
    supported = tflm_op_set()
    return sorted({op.name for op in ops if not supported.supports(op)})


def unsupported_ops(tflite_bytes: bytes, source: str = "<tflite bytes>") -> list[str]:
    """Operators of a .tflite model that the TFLM runtime does not register."""
    return unsupported_in(model_ops(tflite_bytes, source))
