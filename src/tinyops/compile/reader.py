"""Read a .tflite FlatBuffer into the compiler's IR (`ir.Graph`).

The FlatBuffer is parsed with the schema bundled in the pinned TFLM wheel (the same one
`tinyops.targets.ops` uses), after `ops.load_model` has checked every index the model
follows, so a corrupt or truncated file fails here with a message rather than later with
an IndexError. The reader then refuses, one clear `CompileError` each:

- models with more than one subgraph (control flow), or not exactly one input and one
  output (the generated entry point takes one input and one output buffer);
- float models and hybrid models (float activations, int8 weights): the compiler's
  kernels are the int8 reference kernels; the message says how to convert instead;
- operators it has no kernel for, named with their execution index, all of them at once;
- operator options it does not implement (a fused TANH, a shuffled weights format).

Shapes and quantization per operator are checked when kernels are lowered (`lower.py`),
where the arithmetic that depends on them lives.
"""

from __future__ import annotations

from typing import Any

from tinyops.compile.errors import CompileError
from tinyops.compile.ir import (
    Activation,
    AddOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    Graph,
    NoOptions,
    Operator,
    Options,
    Padding,
    Pool2DOptions,
    Quantization,
    SoftmaxOptions,
    Tensor,
)
from tinyops.errors import ModelError

# The operators the compiler has int8 kernels for (kernels/tinyops_kernels.c).
SUPPORTED_OPERATORS = (
    "ADD",
    "AVERAGE_POOL_2D",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "RESHAPE",
    "SOFTMAX",
)

# The schema's TensorType values, by name (only the names matter for error messages).
_TENSOR_TYPES = {
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
    15: "uint32",
    16: "uint16",
    17: "int4",
}
_FLOAT_TYPES = {"float32", "float16", "float64"}


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated

    return schema_py_generated


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _operator_name(code: Any) -> str:
    from tinyops.targets.ops import builtin_operator_names

    # Codes above 127 live in `builtinCode`; older files only fill `deprecatedBuiltinCode`.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == _schema().BuiltinOperator.CUSTOM:
        return f"custom operator {_text(code.customCode)!r}"
    return builtin_operator_names().get(builtin, f"BUILTIN_{builtin}")


def read_tflite(tflite_bytes: bytes, source: str = "<tflite bytes>") -> Graph:
    """Parse and check a .tflite model; `CompileError` naming `source` if it cannot compile."""
    from tinyops.targets.ops import load_model

    data = bytes(tflite_bytes)
    try:
        model = load_model(data, source)
    except ModelError as exc:
        raise CompileError(str(exc)) from exc
    if len(model.subgraphs) != 1:
        raise CompileError(
            f"{source}: the model has {len(model.subgraphs)} subgraphs; the compiler takes "
            "single-graph models (no control flow operators)"
        )
    sg = model.subgraphs[0]
    tensors = tuple(
        _tensor(i, t, model.buffers or [], data, source) for i, t in enumerate(sg.tensors or [])
    )
    names = [_operator_name(model.operatorCodes[op.opcodeIndex]) for op in sg.operators or []]
    inputs = tuple(int(i) for i in ([] if sg.inputs is None else sg.inputs))
    outputs = tuple(int(i) for i in ([] if sg.outputs is None else sg.outputs))
    _require_int8(tensors, names, inputs, outputs, source)
    unsupported = [
        f"operator {i} ({n})" for i, n in enumerate(names) if n not in SUPPORTED_OPERATORS
    ]
    if unsupported:
        shown = ", ".join(unsupported[:8]) + (" ..." if len(unsupported) > 8 else "")
        raise CompileError(
            f"{source}: unsupported operator(s): {shown}; the compiler has kernels for "
            f"{', '.join(SUPPORTED_OPERATORS)}"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise CompileError(
            f"{source}: the model has {len(inputs)} input(s) and {len(outputs)} output(s); "
            "the generated entry point takes exactly one input and one output"
        )
    operators = tuple(
        Operator(
            index=i,
            kind=name,
            inputs=tuple(int(t) for t in ([] if op.inputs is None else op.inputs)),
            outputs=tuple(int(t) for t in ([] if op.outputs is None else op.outputs)),
            options=_options(name, op, i, source),
        )
        for i, (name, op) in enumerate(zip(names, sg.operators or [], strict=True))
    )
    return Graph(source, tensors, operators, inputs, outputs)


def _tensor(index: int, t: Any, buffers: list[Any], file: bytes, source: str) -> Tensor:
    dtype = _TENSOR_TYPES.get(int(t.type), f"type{int(t.type)}")
    shape = tuple(int(d) for d in ([] if t.shape is None else t.shape))
    quant = None
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0:
        scales = tuple(float(s) for s in q.scale)
        zps = tuple(int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [0]))
        if len(zps) == 1 and len(scales) > 1:
            zps = zps * len(scales)
        if len(zps) != len(scales):
            raise CompileError(
                f"{source}: tensor {index} ({_text(t.name)}) has {len(scales)} scales but "
                f"{len(zps)} zero points"
            )
        quant = Quantization(scales, zps, int(q.quantizedDimension))
    data: bytes | None = None
    buf = buffers[t.buffer] if 0 < t.buffer < len(buffers) else None
    if buf is not None:
        if buf.data is not None and len(buf.data) > 0:
            data = bytes(bytearray(buf.data))
        elif buf.offset > 1 and buf.size > 0:
            # Models over 2 GB keep buffers after the FlatBuffer, addressed by offset.
            data = file[int(buf.offset) : int(buf.offset) + int(buf.size)]
    if t.sparsity is not None:
        raise CompileError(
            f"{source}: tensor {index} ({_text(t.name)}) is stored sparse; the compiler "
            "reads dense tensors only"
        )
    return Tensor(index, _text(t.name), shape, dtype, quant, data)


def _require_int8(
    tensors: tuple[Tensor, ...],
    names: list[str],
    inputs: tuple[int, ...],
    outputs: tuple[int, ...],
    source: str,
) -> None:
    """Refuse float and hybrid models, naming the float tensor that gives them away."""
    float_acts = [t for t in tensors if not t.constant and t.dtype in _FLOAT_TYPES]
    if not float_acts:
        for t in tensors:
            if not t.constant and t.dtype not in ("int8", "int32"):
                raise CompileError(
                    f"{source}: tensor {t.index} ({t.name}) is {t.dtype}; the compiler takes "
                    "int8 activations only (int16 activations / 16x8 quantization are not "
                    "supported)"
                )
        return
    first = float_acts[0]
    int8_weights = any(t.constant and t.dtype == "int8" for t in tensors)
    edges = {"QUANTIZE", "DEQUANTIZE"} & set(names)
    if edges and all(t.index in inputs + outputs for t in float_acts):
        raise CompileError(
            f"{source}: the model's input or output is float ({first.name} is {first.dtype}, "
            f"converted by {'/'.join(sorted(edges))}); the compiler takes int8 input and "
            "output: convert with inference_input_type and inference_output_type = tf.int8"
        )
    kind = "a hybrid model (int8 weights, float activations)" if int8_weights else "a float model"
    raise CompileError(
        f"{source}: {kind}: tensor {first.index} ({first.name}) is {first.dtype}; the "
        "compiler takes full-integer int8 models: convert with int8 post-training "
        "quantization (optimize.variants: [int8])"
    )


def _activation(value: int, where: str) -> Activation:
    try:
        return Activation(int(value))
    except ValueError:
        raise CompileError(
            f"{where}: fused activation {int(value)} is not supported (NONE, RELU, "
            "RELU_N1_TO_1 and RELU6 are)"
        ) from None


def _padding(value: int, where: str) -> Padding:
    try:
        return Padding(int(value))
    except ValueError:
        raise CompileError(f"{where}: padding {int(value)} is neither SAME nor VALID") from None


def _options(name: str, op: Any, index: int, source: str) -> Options:
    where = f"{source}: operator {index} ({name})"
    o = op.builtinOptions
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D") and o is None:
        raise CompileError(f"{where} has no options (padding, strides)")
    schema = _schema()
    if name == "CONV_2D":
        return Conv2DOptions(
            padding=_padding(o.padding, where),
            stride_h=int(o.strideH),
            stride_w=int(o.strideW),
            dilation_h=int(o.dilationHFactor),
            dilation_w=int(o.dilationWFactor),
            activation=_activation(o.fusedActivationFunction, where),
        )
    if name == "DEPTHWISE_CONV_2D":
        return DepthwiseConv2DOptions(
            padding=_padding(o.padding, where),
            stride_h=int(o.strideH),
            stride_w=int(o.strideW),
            dilation_h=int(o.dilationHFactor),
            dilation_w=int(o.dilationWFactor),
            depth_multiplier=int(o.depthMultiplier),
            activation=_activation(o.fusedActivationFunction, where),
        )
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return Pool2DOptions(
            padding=_padding(o.padding, where),
            stride_h=int(o.strideH),
            stride_w=int(o.strideW),
            filter_h=int(o.filterHeight),
            filter_w=int(o.filterWidth),
            activation=_activation(o.fusedActivationFunction, where),
        )
    if name == "FULLY_CONNECTED":
        o = o if o is not None else schema.FullyConnectedOptionsT()
        if int(o.weightsFormat) != 0:
            raise CompileError(f"{where}: shuffled weights format is not supported")
        return FullyConnectedOptions(
            activation=_activation(o.fusedActivationFunction, where),
            keep_num_dims=bool(o.keepNumDims),
        )
    if name == "ADD":
        o = o if o is not None else schema.AddOptionsT()
        return AddOptions(activation=_activation(o.fusedActivationFunction, where))
    if name == "SOFTMAX":
        o = o if o is not None else schema.SoftmaxOptionsT()
        return SoftmaxOptions(beta=float(o.beta))
    return NoOptions()
