"""Evaluate TFLite variants on the host, and compare their size, sparsity and accuracy.

`evaluate_tflite` runs a flatbuffer with the LiteRT interpreter using only the builtin
reference/optimized kernels (no XNNPACK delegate, which would rewrite float graphs), one
sample at a time with batch 1 as on the device. Float inputs are quantized with the input
tensor's (scale, zero_point) when the model takes int8, and int8 outputs are dequantized,
through `tinyops.optimize.quant`, the same arithmetic the device harness uses.

`tflite_sparsity` counts zeros in the weight (filter) tensors of CONV_2D, CONV_3D,
DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED operators, read from the flatbuffer:
the same population `pruning.model_sparsity` counts in Keras (kernels, not biases), so the
two agree. A filter that is a DEQUANTIZE output (float16 weights) is traced to its constant
input. Quantized weights are zero where q equals the tensor's zero point (0 for int8
weights, which the TFLite spec makes symmetric).

`compressed_size` is the zlib (level 9) size: a proxy for what a compressing over-the-air
transport sends, and where pruning pays off, since a sparse dense tensor is no smaller raw.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import ModelError
from tinyops.optimize.quant import dequantize, quantize
from tinyops.train.config import TaskName

# zlib compression level of `compressed_size`: the maximum, as an OTA packager would use.
ZLIB_LEVEL = 9


@dataclass
class TfliteEval:
    """Outputs of a TFLite model on a set of samples, and the task's quality metric.

    `outputs` are float32, one row per sample: class probabilities (N x C) for a
    classifier, the flattened reconstruction (N x D) for an autoencoder. `predictions`
    (argmax class ids) and `accuracy` (0..1, when labels were given) are for classifiers;
    `mse` (mean per-sample squared reconstruction error) for autoencoders.
    """

    outputs: NDArray[np.float32]
    predictions: NDArray[np.int64] | None
    accuracy: float | None
    mse: float | None


def _interpreter(tflite_bytes: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(
            model_content=bytes(tflite_bytes),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            num_threads=1,
        )
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"the LiteRT interpreter cannot load this .tflite model: {exc}") from exc
    return interpreter


def _scale_zero_point(detail: Mapping[str, Any]) -> tuple[float, int]:
    scale, zero_point = detail["quantization"]
    return float(scale), int(zero_point)


def evaluate_tflite(
    tflite_bytes: bytes,
    x_float: NDArray[np.floating],
    y: NDArray[np.integer] | None = None,
    *,
    task: TaskName = "classification",
) -> TfliteEval:
    """Run every sample of `x_float` (batch axis first) through the model, batch 1."""
    interpreter = _interpreter(tflite_bytes)
    inputs = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"expected a model with one input and one output, got {len(inputs)} inputs and "
            f"{len(outputs)} outputs"
        )
    in_detail, out_detail = inputs[0], outputs[0]
    in_shape = tuple(int(d) for d in in_detail["shape"])
    x = np.asarray(x_float, dtype=np.float32)
    if len(x) == 0:
        raise ModelError("no samples to evaluate: x_float is empty")
    if tuple(x.shape[1:]) != in_shape[1:] or in_shape[0] != 1:
        raise ModelError(
            f"samples of shape {tuple(x.shape[1:])} do not fit the model input "
            f"{in_shape}; expected batch 1 and sample shape {in_shape[1:]}"
        )
    in_dtype = np.dtype(in_detail["dtype"])
    out_dtype = np.dtype(out_detail["dtype"])
    if in_dtype not in (np.dtype(np.float32), np.dtype(np.int8)):
        raise ModelError(f"model input has dtype {in_dtype}; expected float32 or int8")
    in_scale, in_zero = _scale_zero_point(in_detail)
    out_scale, out_zero = _scale_zero_point(out_detail)

    rows: list[NDArray[np.float32]] = []
    for sample in x:
        batch = sample[np.newaxis, ...]
        if in_dtype == np.int8:
            interpreter.set_tensor(in_detail["index"], quantize(batch, in_scale, in_zero))
        else:
            interpreter.set_tensor(in_detail["index"], batch)
        interpreter.invoke()
        raw = interpreter.get_tensor(out_detail["index"])
        if out_dtype == np.int8:
            rows.append(dequantize(raw, out_scale, out_zero).reshape(-1))
        else:
            rows.append(np.asarray(raw, dtype=np.float32).reshape(-1))
    result = np.stack(rows).astype(np.float32)

    if task == "anomaly":
        flat_x = x.reshape(len(x), -1)
        errors = np.mean((result.astype(np.float64) - flat_x) ** 2, axis=1)
        return TfliteEval(outputs=result, predictions=None, accuracy=None, mse=float(errors.mean()))
    predictions = np.argmax(result, axis=1).astype(np.int64)
    accuracy = None
    if y is not None:
        labels = np.asarray(y).reshape(-1)
        if len(labels) != len(predictions):
            raise ModelError(f"{len(predictions)} samples but {len(labels)} labels were given")
        accuracy = float(np.mean(predictions == labels)) if len(labels) else None
    return TfliteEval(outputs=result, predictions=predictions, accuracy=accuracy, mse=None)


_NUMPY_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
}


def _weight_tensors(model: Any, schema: Any, flatbuffer: bytes) -> list[tuple[Any, NDArray[Any]]]:
    """(tensor, raw element array) of every constant filter of a conv/dense operator."""
    ops = schema.BuiltinOperator
    weighted = {
        ops.CONV_2D,
        ops.CONV_3D,
        ops.DEPTHWISE_CONV_2D,
        ops.TRANSPOSE_CONV,
        ops.FULLY_CONNECTED,
    }
    types = {getattr(schema.TensorType, name): dtype for name, dtype in _NUMPY_TYPES.items()}
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    found: list[tuple[Any, NDArray[Any]]] = []
    for subgraph in model.subgraphs or []:
        producer = {}
        for op in subgraph.operators or []:
            for out in op.outputs if op.outputs is not None else []:
                producer[int(out)] = op
        seen: set[int] = set()
        for op in subgraph.operators or []:
            if codes[op.opcodeIndex] not in weighted or op.inputs is None or len(op.inputs) < 2:
                continue
            index = int(op.inputs[1])
            source = producer.get(index)
            # float16 weights: FILTER = DEQUANTIZE(constant float16 tensor).
            if source is not None and codes[source.opcodeIndex] == ops.DEQUANTIZE:
                index = int(source.inputs[0])
            if index < 0 or index in seen:
                continue
            seen.add(index)
            tensor = subgraph.tensors[index]
            values = _buffer_values(model, tensor, types, flatbuffer)
            if values is not None:
                found.append((tensor, values))
    return found


def _buffer_values(
    model: Any, tensor: Any, types: Mapping[int, Any], flatbuffer: bytes
) -> NDArray[Any] | None:
    dtype = types.get(tensor.type)
    if dtype is None or tensor.buffer <= 0:
        return None
    buffer = model.buffers[tensor.buffer]
    if buffer.data is not None and len(buffer.data):
        raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
    elif buffer.offset > 1 and buffer.size > 0:
        # Models over 2 GB keep buffers after the flatbuffer, addressed by byte offset.
        raw = flatbuffer[buffer.offset : buffer.offset + buffer.size]
    else:
        return None
    return np.frombuffer(raw, dtype=dtype)


def _zero_count(tensor: Any, values: NDArray[Any]) -> int:
    quant = tensor.quantization
    zero_points = None if quant is None else quant.zeroPoint
    if zero_points is None or len(zero_points) == 0 or not np.any(zero_points):
        return int(np.count_nonzero(values == 0))
    zp = np.asarray(zero_points, dtype=np.int64)
    if zp.size == 1:
        return int(np.count_nonzero(values.astype(np.int64) == zp[0]))
    shaped = values.astype(np.int64).reshape(tuple(int(d) for d in tensor.shape))
    axis = int(quant.quantizedDimension)
    broadcast = [1] * shaped.ndim
    broadcast[axis] = zp.size
    return int(np.count_nonzero(shaped == zp.reshape(broadcast)))


def tflite_sparsity(tflite_bytes: bytes) -> float:
    """Share (0..1) of zero weights in the conv/dense filter tensors of a .tflite model."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    except Exception as exc:
        raise ModelError(f"not a readable TFLite flatbuffer: {exc}") from exc
    zeros = total = 0
    for tensor, values in _weight_tensors(model, schema, bytes(tflite_bytes)):
        zeros += _zero_count(tensor, values)
        total += int(values.size)
    return zeros / total if total else 0.0


def compressed_size(tflite_bytes: bytes) -> int:
    """Bytes of the model once zlib-compressed at level 9 (over-the-air transfer proxy)."""
    return len(zlib.compress(bytes(tflite_bytes), ZLIB_LEVEL))


class VariantRow(TypedDict):
    """One row of the variant comparison (sizes in bytes, shares and accuracy in 0..1)."""

    variant: str
    size_bytes: int
    sparsity: float
    compressed_bytes: int
    accuracy: float | None
    mse: float | None
    delta_vs_float: float | None


def variant_report(
    variants: Mapping[str, bytes],
    x_test: NDArray[np.floating],
    y_test: NDArray[np.integer] | None,
    baseline: float,
    *,
    task: TaskName = "classification",
) -> list[VariantRow]:
    """Evaluate each converted variant on the test split and compare it to the float model.

    `baseline` is the Keras float model's test metric: accuracy (0..1) for a classifier,
    mean reconstruction MSE for an autoencoder. `delta_vs_float` is the variant's metric
    minus the baseline (negative = accuracy lost, for a classifier; positive = worse
    reconstruction, for an autoencoder). Rows keep the order of `variants` (include a
    `pruned-int8` entry to report the pruned model).
    """
    rows: list[VariantRow] = []
    for name, flatbuffer in variants.items():
        result = evaluate_tflite(flatbuffer, x_test, y_test, task=task)
        metric = result.mse if task == "anomaly" else result.accuracy
        rows.append(
            VariantRow(
                variant=name,
                size_bytes=len(flatbuffer),
                sparsity=tflite_sparsity(flatbuffer),
                compressed_bytes=compressed_size(flatbuffer),
                accuracy=result.accuracy,
                mse=result.mse,
                delta_vs_float=None if metric is None else metric - baseline,
            )
        )
    return rows
