"""Lowering: each IR operator becomes one kernel call with its integer parameters.

This is where an operator's shapes and quantization are checked against what its kernel
implements, and where TFLM's Prepare-time arithmetic happens (`quant.py`): padding and
output sizes (ComputePaddingHeightWidth), per-channel multipliers and shifts, activation
clamps, ADD and SOFTMAX rescaling. The result is plain data that the emitter prints:

- `KernelCall.fields`: the parameter struct's fields in declaration order, each an int or
  a `Ref` to a constant array (weights, bias, multipliers) or `NULL`;
- `KernelCall.operands`: the tensors the kernel reads as data pointers (activations, or
  a constant operand of ADD), then `output`, the tensor it writes.

Every refusal is a `CompileError` naming the file, the operator index and kind, and the
tensor or option at fault.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinyops.compile import quant
from tinyops.compile.errors import CompileError
from tinyops.compile.ir import (
    AddOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    Graph,
    Operator,
    Padding,
    Pool2DOptions,
    SoftmaxOptions,
    Tensor,
)
from tinyops.compile.planner import Fusion, InPlace


@dataclass(frozen=True)
class Ref:
    """A field that points at a constant array (`name`), or NULL when `name` is None."""

    name: str | None


@dataclass(frozen=True)
class ConstArray:
    """A constant array in flash: `ctype` elements, in C order."""

    name: str
    ctype: str
    values: NDArray[Any]

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * {"int8_t": 1, "int32_t": 4}[self.ctype]


Field = int | Ref


@dataclass(frozen=True)
class KernelCall:
    op_index: int
    kind: str
    function: str
    params_type: str
    fields: tuple[tuple[str, Field], ...]
    arrays: tuple[ConstArray, ...]
    operands: tuple[int, ...]
    output: int


def tensor_array_name(index: int) -> str:
    return f"tensor_{index}"


def tensor_array(t: Tensor) -> ConstArray:
    ctype = {"int8": "int8_t", "int32": "int32_t"}[t.dtype]
    return ConstArray(tensor_array_name(t.index), ctype, t.values().reshape(-1))


class _Op:
    """Helpers bound to one operator, for short checks with precise messages."""

    def __init__(self, graph: Graph, op: Operator) -> None:
        self.graph = graph
        self.op = op
        self.where = f"{graph.source}: operator {op.index} ({op.kind})"

    def fail(self, what: str) -> CompileError:
        return CompileError(f"{self.where}: {what}")

    def input(self, position: int, *, optional: bool = False) -> Tensor | None:
        if position >= len(self.op.inputs) or self.op.inputs[position] < 0:
            if optional:
                return None
            raise self.fail(f"input {position} is missing")
        return self.graph.tensor(self.op.inputs[position])

    def tensor_in(self, position: int) -> Tensor:
        t = self.input(position)
        assert t is not None
        return t

    def output(self) -> Tensor:
        if len(self.op.outputs) != 1:
            raise self.fail(f"has {len(self.op.outputs)} outputs, expected 1")
        return self.graph.tensor(self.op.outputs[0])

    def int8_activation(self, t: Tensor, role: str) -> Tensor:
        if t.dtype != "int8" or t.quant is None:
            raise self.fail(f"{role} tensor {t.index} ({t.name}) must be quantized int8")
        if t.quant.per_channel:
            raise self.fail(f"{role} tensor {t.index} ({t.name}) has per-channel quantization")
        return t

    def rank(self, t: Tensor, n: int, role: str) -> tuple[int, ...]:
        if len(t.shape) != n:
            raise self.fail(
                f"{role} tensor {t.index} ({t.name}) has shape {list(t.shape)}, "
                f"expected {n} dimensions"
            )
        return t.shape

    def constant(self, t: Tensor, dtype: str, role: str) -> Tensor:
        if not t.constant:
            raise self.fail(f"{role} tensor {t.index} ({t.name}) must be a constant")
        if t.dtype != dtype:
            raise self.fail(f"{role} tensor {t.index} ({t.name}) is {t.dtype}, expected {dtype}")
        return t


def _out_size(padding: Padding, size: int, filt: int, stride: int, dilation: int) -> int:
    effective = (filt - 1) * dilation + 1
    if padding is Padding.SAME:
        return (size + stride - 1) // stride
    return (size + stride - effective) // stride


def _pad(size: int, filt: int, stride: int, dilation: int, out: int) -> int:
    effective = (filt - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2


def _geometry(
    o: _Op,
    in_hw: tuple[int, int],
    k_hw: tuple[int, int],
    out_hw: tuple[int, int],
    padding: Padding,
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> list[tuple[str, Field]]:
    """Stride, dilation and padding fields; the model's output size must be TFLite's."""
    if min(stride) < 1 or min(dilation) < 1:
        raise o.fail(f"strides {list(stride)} and dilations {list(dilation)} must be >= 1")
    expected = tuple(
        _out_size(padding, in_hw[i], k_hw[i], stride[i], dilation[i]) for i in range(2)
    )
    if expected != out_hw:
        raise o.fail(
            f"output is {out_hw[0]}x{out_hw[1]} but {padding.name} padding with strides "
            f"{list(stride)} gives {expected[0]}x{expected[1]}"
        )
    pads = [_pad(in_hw[i], k_hw[i], stride[i], dilation[i], out_hw[i]) for i in range(2)]
    return [
        ("stride_h", stride[0]),
        ("stride_w", stride[1]),
        ("dil_h", dilation[0]),
        ("dil_w", dilation[1]),
        ("pad_h", pads[0]),
        ("pad_w", pads[1]),
    ]


def _bias(o: _Op, position: int, channels: int) -> tuple[Field, list[ConstArray]]:
    b = o.input(position, optional=True)
    if b is None:
        return Ref(None), []
    o.constant(b, "int32", "bias")
    if b.elements != channels:
        raise o.fail(f"bias tensor {b.index} has {b.elements} values for {channels} channels")
    return Ref(tensor_array_name(b.index)), [tensor_array(b)]


# Patches up to this many bytes take the kernel's im2col path (TINYOPS_IM2COL_MAX in
# kernels/tinyops_kernels.c, which must equal it): only those may fold the input offset.
IM2COL_MAX = 1024


def interleave_4x4(w: NDArray[Any]) -> NDArray[Any]:
    """A [out_c][in_c] filter as blocks of 4 outputs x 4 inputs, row by row in each block.

    The 1x1 kernel (dot4_interleaved) reads four output channels' weights for four
    input channels from one pointer: w'[(o/4, i/4, o%4, i%4)] = w[o, i]."""
    out_c, in_c = w.shape
    return np.ascontiguousarray(
        w.reshape(out_c // 4, 4, in_c // 4, 4).transpose(0, 2, 1, 3)
    ).reshape(-1)


def _folded_bias(
    o: _Op, position: int, weights: Tensor, channels: int, in_offset: int
) -> tuple[Field, list[ConstArray]]:
    """The bias with the input offset folded in: bias[c] + in_offset * sum(w[c, ...]).

    sum((x + off) * w) = sum(x * w) + off * sum(w) exactly in int32, so a kernel whose
    every tap reads a real input value (1x1 convolutions never pad; FULLY_CONNECTED) can
    take in_offset 0 and this bias instead, and its inner loop skips one add per value
    (on Cortex-M4 it also frees the register the offset pair occupied)."""
    b = o.input(position, optional=True)
    base = np.zeros(channels, dtype=np.int64)
    if b is not None:
        o.constant(b, "int32", "bias")
        if b.elements != channels:
            raise o.fail(f"bias tensor {b.index} has {b.elements} values for {channels} channels")
        base = b.values().reshape(-1).astype(np.int64)
    w = weights.values().reshape(channels, -1).astype(np.int64)
    folded = base + in_offset * w.sum(axis=1)
    if folded.min(initial=0) < -(2**31) or folded.max(initial=0) >= 2**31:
        raise o.fail("bias with the input offset folded in does not fit int32")
    name = f"op{o.op.index}_bias"
    return Ref(name), [ConstArray(name, "int32_t", folded)]


def _lower_conv(o: _Op, depthwise: bool) -> KernelCall:
    opts = o.op.options
    assert isinstance(opts, Conv2DOptions | DepthwiseConv2DOptions)
    x = o.int8_activation(o.tensor_in(0), "input")
    w = o.constant(o.tensor_in(1), "int8", "filter")
    y = o.int8_activation(o.output(), "output")
    batches, in_h, in_w, in_c = o.rank(x, 4, "input")
    ob, out_h, out_w, out_c = o.rank(y, 4, "output")
    one, k_h, k_w, w_last = o.rank(w, 4, "filter")
    if ob != batches:
        raise o.fail(f"batch {ob} of the output differs from the input's {batches}")
    multiplier = 1
    if depthwise:
        assert isinstance(opts, DepthwiseConv2DOptions)
        multiplier = out_c // in_c if in_c else 0
        if one != 1 or w_last != out_c or in_c * multiplier != out_c:
            raise o.fail(
                f"filter shape {list(w.shape)} does not fit input channels {in_c} and output "
                f"channels {out_c}"
            )
        axis = 3
    else:
        if one != out_c or w_last != in_c:
            raise o.fail(
                f"filter shape {list(w.shape)} does not fit input channels {in_c} and output "
                f"channels {out_c} (grouped convolutions are not supported)"
            )
        axis = 0
    wq = w.quant
    if wq is None:
        raise o.fail(f"filter tensor {w.index} ({w.name}) is not quantized")
    if any(z != 0 for z in wq.zero_points):
        raise o.fail(f"filter tensor {w.index} ({w.name}) has a non-zero zero point")
    if wq.per_channel and (wq.axis != axis or len(wq.scales) != out_c):
        raise o.fail(
            f"filter tensor {w.index} has {len(wq.scales)} scales along axis {wq.axis}; "
            f"expected {out_c} along axis {axis}"
        )
    assert x.quant is not None and y.quant is not None
    mults, shifts = quant.channel_multipliers(x.quant.scale, wq.scales, y.quant.scale, out_c)
    act_min, act_max = quant.activation_range(opts.activation, y.quant.scale, y.quant.zero_point)
    in_offset = -x.quant.zero_point
    interleaved = 0
    filter_array = tensor_array(w)
    patch = k_h * k_w * in_c
    if not depthwise and (patch <= IM2COL_MAX or (k_h == 1 and k_w == 1)):
        # Every tap reads a real input value (1x1) or the zero point written into the
        # im2col patch for padding, whose x * w is exactly -in_offset * w: fold the input
        # offset into the bias.
        bias, bias_arrays = _folded_bias(o, 2, w, out_c, in_offset)
        in_offset = 0
        if patch % 4 == 0 and out_c % 4 == 0:
            interleaved = 1
            filter_array = ConstArray(
                filter_array.name, "int8_t", interleave_4x4(w.values().reshape(out_c, patch))
            )
    else:
        bias, bias_arrays = _bias(o, 2, out_c)
    i = o.op.index
    arrays = [
        filter_array,
        *bias_arrays,
        ConstArray(f"op{i}_mult", "int32_t", np.asarray(mults, dtype=np.int64)),
        ConstArray(f"op{i}_shift", "int8_t", np.asarray(shifts, dtype=np.int64)),
    ]
    fields: list[tuple[str, Field]] = [
        ("batches", batches),
        ("in_h", in_h),
        ("in_w", in_w),
        ("in_c", in_c),
        ("out_h", out_h),
        ("out_w", out_w),
        ("out_c", out_c),
        ("k_h", k_h),
        ("k_w", k_w),
        *_geometry(
            o,
            (in_h, in_w),
            (k_h, k_w),
            (out_h, out_w),
            opts.padding,
            (opts.stride_h, opts.stride_w),
            (opts.dilation_h, opts.dilation_w),
        ),
        ("depth_multiplier", multiplier),
        ("in_offset", in_offset),
        ("out_offset", y.quant.zero_point),
        ("act_min", act_min),
        ("act_max", act_max),
        ("filter", Ref(tensor_array_name(w.index))),
        ("bias", bias),
        ("mult", Ref(f"op{i}_mult")),
        ("shift", Ref(f"op{i}_shift")),
        ("interleaved", interleaved),
        ("pad_value", x.quant.zero_point),
    ]
    name = "depthwise_conv_2d" if depthwise else "conv_2d"
    return KernelCall(
        i,
        o.op.kind,
        f"tinyops_{name}",
        "tinyops_conv_params",
        tuple(fields),
        tuple(arrays),
        (x.index,),
        y.index,
    )


def _lower_fully_connected(o: _Op) -> KernelCall:
    opts = o.op.options
    assert isinstance(opts, FullyConnectedOptions)
    x = o.int8_activation(o.tensor_in(0), "input")
    w = o.constant(o.tensor_in(1), "int8", "weights")
    y = o.int8_activation(o.output(), "output")
    out_depth, in_depth = o.rank(w, 2, "weights")
    if in_depth == 0 or x.elements % in_depth:
        raise o.fail(f"input of {x.elements} values is not a whole number of {in_depth}-rows")
    batches = x.elements // in_depth
    if y.elements != batches * out_depth:
        raise o.fail(f"output has {y.elements} values, expected {batches} x {out_depth}")
    wq = w.quant
    if wq is None:
        raise o.fail(f"weights tensor {w.index} ({w.name}) is not quantized")
    if wq.per_channel and (wq.axis != 0 or len(wq.scales) != out_depth):
        raise o.fail(
            f"weights tensor {w.index} has {len(wq.scales)} scales along axis {wq.axis}; "
            f"expected {out_depth} along axis 0"
        )
    if wq.per_channel and any(z != 0 for z in wq.zero_points):
        raise o.fail(f"weights tensor {w.index} ({w.name}) has a non-zero zero point")
    assert x.quant is not None and y.quant is not None
    i = o.op.index
    per_channel: list[ConstArray] = []
    if wq.per_channel:
        # TFLM's FullyConnectedPerChannel: one multiplier per output, as a convolution.
        mults, shifts = quant.channel_multipliers(
            x.quant.scale, wq.scales, y.quant.scale, out_depth
        )
        per_channel = [
            ConstArray(f"op{i}_mult", "int32_t", np.asarray(mults, dtype=np.int64)),
            ConstArray(f"op{i}_shift", "int8_t", np.asarray(shifts, dtype=np.int64)),
        ]
        mult, shift = 0, 0
    else:
        mult, shift = quant.quantize_multiplier(
            float(x.quant.scale) * float(wq.scale) / float(y.quant.scale)
        )
    act_min, act_max = quant.activation_range(opts.activation, y.quant.scale, y.quant.zero_point)
    in_offset = -x.quant.zero_point
    if wq.zero_point == 0 or wq.per_channel:
        bias, bias_arrays = _folded_bias(o, 2, w, out_depth, in_offset)
        in_offset = 0
    else:  # weights with a zero point: (w + w_off) * (x + off) stays in the kernel
        bias, bias_arrays = _bias(o, 2, out_depth)
    fields: list[tuple[str, Field]] = [
        ("batches", batches),
        ("in_depth", in_depth),
        ("out_depth", out_depth),
        ("in_offset", in_offset),
        ("filter_offset", -wq.zero_point if not wq.per_channel else 0),
        ("out_offset", y.quant.zero_point),
        ("act_min", act_min),
        ("act_max", act_max),
        ("mult", mult),
        ("shift", shift),
        ("filter", Ref(tensor_array_name(w.index))),
        ("bias", bias),
        ("mults", Ref(f"op{i}_mult" if per_channel else None)),
        ("shifts", Ref(f"op{i}_shift" if per_channel else None)),
    ]
    return KernelCall(
        o.op.index,
        o.op.kind,
        "tinyops_fully_connected",
        "tinyops_fc_params",
        tuple(fields),
        (tensor_array(w), *bias_arrays, *per_channel),
        (x.index,),
        y.index,
    )


def _lower_pool(o: _Op) -> KernelCall:
    opts = o.op.options
    assert isinstance(opts, Pool2DOptions)
    x = o.int8_activation(o.tensor_in(0), "input")
    y = o.int8_activation(o.output(), "output")
    batches, in_h, in_w, c = o.rank(x, 4, "input")
    ob, out_h, out_w, oc = o.rank(y, 4, "output")
    if (ob, oc) != (batches, c):
        raise o.fail(f"output shape {list(y.shape)} does not match input shape {list(x.shape)}")
    assert x.quant is not None and y.quant is not None
    if (x.quant.scale, x.quant.zero_point) != (y.quant.scale, y.quant.zero_point):
        raise o.fail("input and output quantization differ (TFLM requires them equal)")
    if opts.filter_h < 1 or opts.filter_w < 1:
        raise o.fail(f"filter {opts.filter_h}x{opts.filter_w} is empty")
    act_min, act_max = quant.activation_range(opts.activation, y.quant.scale, y.quant.zero_point)
    fields: list[tuple[str, Field]] = [
        ("batches", batches),
        ("in_h", in_h),
        ("in_w", in_w),
        ("c", c),
        ("out_h", out_h),
        ("out_w", out_w),
        ("f_h", opts.filter_h),
        ("f_w", opts.filter_w),
        *[
            (k, v)
            for k, v in _geometry(
                o,
                (in_h, in_w),
                (opts.filter_h, opts.filter_w),
                (out_h, out_w),
                opts.padding,
                (opts.stride_h, opts.stride_w),
                (1, 1),
            )
            if not k.startswith("dil")
        ],
        ("act_min", act_min),
        ("act_max", act_max),
    ]
    name = "average_pool_2d" if o.op.kind == "AVERAGE_POOL_2D" else "max_pool_2d"
    return KernelCall(
        o.op.index,
        o.op.kind,
        f"tinyops_{name}",
        "tinyops_pool_params",
        tuple(fields),
        (),
        (x.index,),
        y.index,
    )


def _lower_add(o: _Op) -> KernelCall:
    opts = o.op.options
    assert isinstance(opts, AddOptions)
    a = o.int8_activation(o.tensor_in(0), "input 0")
    b = o.int8_activation(o.tensor_in(1), "input 1")
    y = o.int8_activation(o.output(), "output")
    if not (a.shape == b.shape == y.shape):
        raise o.fail(
            f"input shapes {list(a.shape)} and {list(b.shape)} and output {list(y.shape)} "
            "differ (broadcasting ADD is not supported)"
        )
    assert a.quant is not None and b.quant is not None and y.quant is not None
    try:
        p = quant.add_params(
            a.quant.scale,
            a.quant.zero_point,
            b.quant.scale,
            b.quant.zero_point,
            y.quant.scale,
            y.quant.zero_point,
        )
    except ValueError as exc:
        raise o.fail(str(exc)) from None
    act_min, act_max = quant.activation_range(opts.activation, y.quant.scale, y.quant.zero_point)
    fields: list[tuple[str, Field]] = [
        ("size", y.elements),
        ("in1_offset", p.input1_offset),
        ("in2_offset", p.input2_offset),
        ("left_shift", p.left_shift),
        ("in1_mult", p.input1_multiplier),
        ("in1_shift", p.input1_shift),
        ("in2_mult", p.input2_multiplier),
        ("in2_shift", p.input2_shift),
        ("out_mult", p.output_multiplier),
        ("out_shift", p.output_shift),
        ("out_offset", p.output_offset),
        ("act_min", act_min),
        ("act_max", act_max),
    ]
    arrays = tuple(tensor_array(t) for t in (a, b) if t.constant)
    return KernelCall(
        o.op.index,
        o.op.kind,
        "tinyops_add",
        "tinyops_add_params",
        tuple(fields),
        arrays,
        (a.index, b.index),
        y.index,
    )


def _lower_softmax(o: _Op) -> KernelCall:
    opts = o.op.options
    assert isinstance(opts, SoftmaxOptions)
    x = o.int8_activation(o.tensor_in(0), "input")
    y = o.int8_activation(o.output(), "output")
    if x.shape != y.shape or not x.shape:
        raise o.fail(f"output shape {list(y.shape)} differs from input {list(x.shape)}")
    assert x.quant is not None and y.quant is not None
    if y.quant.zero_point != -128 or np.float32(y.quant.scale) != np.float32(1.0 / 256):
        raise o.fail(
            f"output tensor {y.index} must have scale 1/256 and zero point -128 (TFLite's "
            f"int8 softmax spec), has {y.quant.scale} and {y.quant.zero_point}"
        )
    try:
        p = quant.softmax_params(opts.beta, x.quant.scale)
    except ValueError as exc:
        raise o.fail(str(exc)) from None
    depth = x.shape[-1]
    fields: list[tuple[str, Field]] = [
        ("outer", x.elements // depth if depth else 0),
        ("depth", depth),
        ("input_multiplier", p.input_multiplier),
        ("input_left_shift", p.input_left_shift),
        ("diff_min", p.diff_min),
    ]
    return KernelCall(
        o.op.index,
        o.op.kind,
        "tinyops_softmax",
        "tinyops_softmax_params",
        tuple(fields),
        (),
        (x.index,),
        y.index,
    )


def _lower_reshape(o: _Op) -> KernelCall:
    x = o.tensor_in(0)
    y = o.output()
    if x.constant:
        raise o.fail(f"input tensor {x.index} ({x.name}) is a constant (fold it when converting)")
    if x.dtype != y.dtype or x.nbytes != y.nbytes:
        raise o.fail(f"reshapes {x.dtype}{list(x.shape)} to {y.dtype}{list(y.shape)}")
    return KernelCall(
        o.op.index, o.op.kind, "tinyops_copy", "", (("size", y.nbytes),), (), (x.index,), y.index
    )


def lower(graph: Graph) -> list[KernelCall]:
    """One kernel call per operator, in execution order."""
    calls: list[KernelCall] = []
    for op in graph.operators:
        o = _Op(graph, op)
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            calls.append(_lower_conv(o, depthwise=op.kind == "DEPTHWISE_CONV_2D"))
        elif op.kind == "FULLY_CONNECTED":
            calls.append(_lower_fully_connected(o))
        elif op.kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            calls.append(_lower_pool(o))
        elif op.kind == "ADD":
            calls.append(_lower_add(o))
        elif op.kind == "SOFTMAX":
            calls.append(_lower_softmax(o))
        elif op.kind == "RESHAPE":
            calls.append(_lower_reshape(o))
        else:  # the reader lets only SUPPORTED_OPERATORS through
            raise o.fail("has no kernel")
    return calls


# Filter heights the in-place depthwise kernel handles (TINYOPS_DW_MAX_KH in the kernels).
DW_MAX_KH = 16


def inplace_kernels(calls: list[KernelCall] | tuple[KernelCall, ...]) -> dict[int, InPlace]:
    """The calls that have an in-place kernel, with the scratch bytes each needs.

    - CONV_2D 1x1, stride 1 (no padding): pixel by pixel into out_c bytes of scratch,
      then over the input (tinyops_conv_2d_1x1_inplace);
    - CONV_2D on the im2col path with the output the input's size and depth (stride 1,
      dilation 1, SAME): row by row, the rows still needed saved in a ring of pad_h + 1
      rows (tinyops_conv_2d_inplace);
    - CONV_2D on the im2col path that writes behind its reads (`_writes_behind_reads`:
      strided convolutions that shrink the tensor): tinyops_conv_2d itself, out == in;
    - DEPTHWISE_CONV_2D with stride 1, dilation 1, depth multiplier 1 and the output the
      input's size (SAME): as the convolution, with the depthwise row kernel
      (tinyops_depthwise_conv_2d_inplace);
    - DEPTHWISE_CONV_2D, depth multiplier 1, that writes behind its reads (stride 2):
      tinyops_depthwise_conv_2d itself, out == in;
    - ADD: element by element, over either input (tinyops_add reads both before writing).

    The planner decides whether each actually runs in place (its input must die there).
    """
    found: dict[int, InPlace] = {}
    for c in calls:
        f = dict(c.fields)
        if c.kind == "CONV_2D" and _is_1x1(f):
            found[c.op_index] = InPlace((0,), _int(f["out_c"]), "tinyops_conv_2d_1x1_inplace")
        elif c.kind == "CONV_2D" and _is_im2col(f) and _is_same_stride1(f):
            row = _int(f["in_w"]) * _int(f["in_c"])
            found[c.op_index] = InPlace(
                (0,), (_int(f["pad_h"]) + 1) * row, "tinyops_conv_2d_inplace"
            )
        elif c.kind == "CONV_2D" and _is_im2col(f) and _writes_behind_reads(f):
            found[c.op_index] = InPlace((0,), 0, "")
        elif c.kind == "DEPTHWISE_CONV_2D" and _is_same_stride1(f) and _int(f["k_h"]) <= DW_MAX_KH:
            row = _int(f["in_w"]) * _int(f["in_c"])
            found[c.op_index] = InPlace(
                (0,), (_int(f["pad_h"]) + 1) * row, "tinyops_depthwise_conv_2d_inplace"
            )
        elif (
            c.kind == "DEPTHWISE_CONV_2D"
            and _int(f["depth_multiplier"]) == 1
            and _int(f["k_h"]) <= DW_MAX_KH
            and _writes_behind_reads(f)
        ):
            # Output channel c of pixel P lands on input channel c of pixel P, which the
            # row kernel reads (for channel block c) before it writes that block.
            found[c.op_index] = InPlace((0,), 0, "")
        elif c.kind == "ADD":
            found[c.op_index] = InPlace((0, 1), 0, "")
    return found


def fusions(graph: Graph, calls: list[KernelCall] | tuple[KernelCall, ...]) -> dict[int, Fusion]:
    """The 1x1 convolution → depthwise convolution pairs worth running in row bands.

    A pair fuses when the depthwise convolution (depth multiplier 1, k_h <= DW_MAX_KH)
    directly follows a 1x1 stride-1 convolution, is the only reader of its output (not the
    graph's output), batch 1, and that intermediate tensor is larger than both the pair's
    input and its output: the layout of MobileNet's expand → stride-2 depthwise, where
    it is the network's widest point. The ring holds the (k_h - 1) · dil_h + 1 rows of
    the intermediate that one output row's window reads. Only pairs that can run in
    place fuse: every output row lands on input rows the 1x1 has already consumed
    (`_bands_write_behind`); the planner still keeps them apart when the input does not
    die at the pair.
    """
    readers: dict[int, int] = {}
    for op in graph.operators:
        for t in op.inputs:
            if t >= 0:
                readers[t] = readers.get(t, 0) + 1
    found: dict[int, Fusion] = {}
    for pw, dw in itertools.pairwise(calls):
        if pw.kind != "CONV_2D" or dw.kind != "DEPTHWISE_CONV_2D" or pw.op_index in found:
            continue
        f, g = dict(pw.fields), dict(dw.fields)
        mid = graph.tensor(pw.output)
        if (
            not _is_1x1(f)
            or _int(f["batches"]) != 1
            or _int(g["depth_multiplier"]) != 1
            or _int(g["k_h"]) > DW_MAX_KH
            or dw.operands[0] != pw.output
            or readers.get(pw.output) != 1
            or pw.output in graph.outputs
        ):
            continue
        x, z = graph.tensor(pw.operands[0]), graph.tensor(dw.output)
        if mid.nbytes <= max(x.nbytes, z.nbytes):
            continue
        if not _bands_write_behind(f, g):
            # Not in place, the pair holds its input, the ring and its output at once,
            # more than the unfused in-place kernels need (STR-WW's widening pairs).
            continue
        rows = (_int(g["k_h"]) - 1) * _int(g["dil_h"]) + 1
        ring = rows * _int(g["in_w"]) * _int(g["in_c"])
        found[pw.op_index] = Fusion(pw.op_index, ring, True)
    taken = {i + k for i, f in found.items() for k in range(f.ops)}
    for c1, c2, add in zip(calls, calls[1:], calls[2:], strict=False):
        if {c1.op_index, c2.op_index, add.op_index} & taken:
            continue
        block = _residual_block(graph, readers, c1, c2, add)
        if block is not None:
            found[c1.op_index] = block
            taken |= {c1.op_index, c2.op_index, add.op_index}
    return found


def _residual_block(
    graph: Graph, readers: dict[int, int], c1: KernelCall, c2: KernelCall, add: KernelCall
) -> Fusion | None:
    """conv → conv → ADD(block input, second conv's output) as one row-band group, when
    both convolutions take the im2col path (batch 1), each intermediate tensor has one
    reader and is not the graph's output, and the block's output rows land only on input
    rows no later row of the first convolution reads (`_block_writes_behind`). Scratch:
    the second convolution's window of the first's output rows, plus one output row."""
    if (c1.kind, c2.kind, add.kind) != ("CONV_2D", "CONV_2D", "ADD"):
        return None
    f, g = dict(c1.fields), dict(c2.fields)
    x = c1.operands[0]
    if (
        not (_is_im2col(f) and _is_im2col(g))
        or _int(f["batches"]) != 1
        or c2.operands[0] != c1.output
        or sorted(add.operands) != sorted((x, c2.output))
        or x == c2.output
        or any(readers.get(t) != 1 for t in (c1.output, c2.output))
        or any(t in graph.outputs for t in (c1.output, c2.output))
        or graph.tensor(x).constant
    ):
        return None
    ring_row = _int(f["out_w"]) * _int(f["out_c"])
    rows = (_int(g["k_h"]) - 1) * _int(g["dil_h"]) + 1
    ring = rows * ring_row + _int(g["out_w"]) * _int(g["out_c"])
    if ring >= graph.tensor(c1.output).nbytes or not _block_writes_behind(f, g):
        return None
    return Fusion(c1.op_index, ring, True, ops=3)


def block_input_first(c1: KernelCall, add: KernelCall) -> bool:
    """The block input is the residual ADD's first operand (else its second)."""
    return add.operands[0] == c1.operands[0]


def _block_writes_behind(f: dict[str, Field], g: dict[str, Field]) -> bool:
    """In a residual block run in row bands, output row oy is written once the first
    convolution has computed its rows 0 .. need(oy); in place is legal when no later row
    of the first convolution reads input bytes that row overwrote (the ADD reads input
    row oy itself, element by element, before writing it)."""
    in_h, in_w, in_c = _int(f["in_h"]), _int(f["in_w"]), _int(f["in_c"])
    out_row = _int(g["out_w"]) * _int(g["out_c"])
    span = (_int(g["k_h"]) - 1) * _int(g["dil_h"])
    mid_h = _int(f["out_h"])
    if out_row != in_w * in_c:
        return False
    for oy in range(_int(g["out_h"])):
        need = min(oy * _int(g["stride_h"]) - _int(g["pad_h"]) + span, mid_h - 1)
        nxt = need + 1
        if nxt >= mid_h:
            continue  # the first convolution is done: nothing reads the input any more
        start = nxt * _int(f["stride_h"]) - _int(f["pad_h"])
        iy = _first_valid(start, _int(f["dil_h"]), _int(f["k_h"]), in_h)
        if iy is not None and iy * in_w * in_c < (oy + 1) * out_row:
            return False
    return True


def _bands_write_behind(f: dict[str, Field], g: dict[str, Field]) -> bool:
    """Output row oy of a fused pair is written after the 1x1 has consumed input rows
    0 .. need(oy); in place is legal when it lands on those rows only."""
    in_h, in_row = _int(f["in_h"]), _int(f["in_w"]) * _int(f["in_c"])
    out_row = _int(g["out_w"]) * _int(g["out_c"])
    span = (_int(g["k_h"]) - 1) * _int(g["dil_h"])
    for oy in range(_int(g["out_h"])):
        need = min(oy * _int(g["stride_h"]) - _int(g["pad_h"]) + span, in_h - 1)
        if (oy + 1) * out_row > (need + 1) * in_row:
            return False
    return True


def _is_im2col(f: dict[str, Field]) -> bool:
    """The convolution takes the kernel's im2col path (tinyops_conv_2d's dispatch)."""
    return not _is_1x1(f) and _int(f["k_h"]) * _int(f["k_w"]) * _int(f["in_c"]) <= IM2COL_MAX


def _writes_behind_reads(f: dict[str, Field]) -> bool:
    """In place, pixel P (raster order) is computed after bytes [0, P·out_c) were
    overwritten; legal when every pixel reads only input bytes at or past that point
    (its own bytes are safe: the im2col patch is copied before the pixel's outputs are
    written). Batch 1."""
    if _int(f["batches"]) != 1:
        return False
    in_w, in_c, out_c = _int(f["in_w"]), _int(f["in_c"]), _int(f["out_c"])
    in_h, out_w = _int(f["in_h"]), _int(f["out_w"])
    for oy in range(_int(f["out_h"])):
        y0 = oy * _int(f["stride_h"]) - _int(f["pad_h"])
        iy = _first_valid(y0, _int(f["dil_h"]), _int(f["k_h"]), in_h)
        for ox in range(out_w):
            x0 = ox * _int(f["stride_w"]) - _int(f["pad_w"])
            ix = _first_valid(x0, _int(f["dil_w"]), _int(f["k_w"]), in_w)
            if iy is None or ix is None:
                continue  # the window is all padding: no reads
            if (iy * in_w + ix) * in_c < (oy * out_w + ox) * out_c:
                return False
    return True


def _first_valid(start: int, dil: int, k: int, size: int) -> int | None:
    """The first input index start + dil·k' (k' < k) inside [0, size), if any."""
    for kk in range(k):
        i = start + dil * kk
        if 0 <= i < size:
            return i
    return None


def _int(v: Field) -> int:
    assert isinstance(v, int)
    return v


def _is_1x1(f: dict[str, Field]) -> bool:
    keys = ("k_h", "k_w", "stride_h", "stride_w", "pad_h", "pad_w")
    return tuple(_int(f[k]) for k in keys) == (1, 1, 1, 1, 0, 0)


def _is_same_stride1(f: dict[str, Field]) -> bool:
    ones = ("stride_h", "stride_w", "dil_h", "dil_w", "depth_multiplier")
    return (
        all(_int(f[k]) == 1 for k in ones)
        and (_int(f["in_h"]), _int(f["in_w"])) == (_int(f["out_h"]), _int(f["out_w"]))
        and _int(f["in_c"]) == _int(f["out_c"])
    )
