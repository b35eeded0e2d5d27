"""The compiler's intermediate representation: one int8 dataflow graph as plain data.

The reader (`reader.py`) turns a .tflite FlatBuffer into a `Graph`; the planner and the
emitter read nothing else. The IR keeps exactly what the kernels need and no FlatBuffer
objects, so every later pass is a pure function over frozen dataclasses:

- `Tensor`: shape, element type, affine quantization (per-tensor, or per-channel along
  `Quantization.axis`) and, for constants, the raw little-endian buffer bytes.
- `Operator`: the builtin operator name, its input/output tensor indices (-1 marks an
  omitted optional input, e.g. a convolution without bias) and typed options, one
  dataclass per operator family, with TFLite's enums turned into `Padding` and
  `Activation`.
- `Graph`: tensors, operators in execution order (TFLite stores them topologically
  sorted) and the graph's input and output tensor indices.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Bytes per element of the element types the compiler handles.
DTYPE_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4}


class Padding(enum.Enum):
    """TFLite's Padding enum: SAME pads so that out = ceil(in / stride); VALID never pads."""

    SAME = 0
    VALID = 1


class Activation(enum.Enum):
    """TFLite's fused activation functions (the ones with an int8 meaning)."""

    NONE = 0
    RELU = 1
    RELU_N1_TO_1 = 2
    RELU6 = 3


@dataclass(frozen=True)
class Quantization:
    """real = scale × (q − zero_point); one (scale, zero_point) per channel along `axis`."""

    scales: tuple[float, ...]
    zero_points: tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    @property
    def scale(self) -> float:
        return self.scales[0]

    @property
    def zero_point(self) -> int:
        return self.zero_points[0]


@dataclass(frozen=True)
class Tensor:
    """One tensor: an activation (data None) or a constant (data holds its bytes)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    quant: Quantization | None
    data: bytes | None = None

    @property
    def constant(self) -> bool:
        return self.data is not None

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.elements * DTYPE_BYTES[self.dtype]

    def values(self) -> NDArray[Any]:
        """The constant's values as a numpy array of its shape (little-endian buffer)."""
        if self.data is None:
            raise ValueError(f"tensor {self.index} ({self.name}) is not a constant")
        dtype = np.dtype(self.dtype).newbyteorder("<")
        return np.frombuffer(self.data, dtype=dtype).reshape(self.shape)


@dataclass(frozen=True)
class Conv2DOptions:
    padding: Padding
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    activation: Activation


@dataclass(frozen=True)
class DepthwiseConv2DOptions:
    padding: Padding
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    depth_multiplier: int
    activation: Activation


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: Activation
    keep_num_dims: bool


@dataclass(frozen=True)
class Pool2DOptions:
    padding: Padding
    stride_h: int
    stride_w: int
    filter_h: int
    filter_w: int
    activation: Activation


@dataclass(frozen=True)
class AddOptions:
    activation: Activation


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float


@dataclass(frozen=True)
class NoOptions:
    """Operators whose behaviour is fixed by their tensors alone (RESHAPE)."""


Options = (
    Conv2DOptions
    | DepthwiseConv2DOptions
    | FullyConnectedOptions
    | Pool2DOptions
    | AddOptions
    | SoftmaxOptions
    | NoOptions
)


@dataclass(frozen=True)
class Operator:
    """One operator: `kind` is the TFLite builtin name, `index` its execution position."""

    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Options


@dataclass(frozen=True)
class Graph:
    """A whole model: `source` names the file it came from (for error messages)."""

    source: str
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    @property
    def input(self) -> Tensor:
        return self.tensors[self.inputs[0]]

    @property
    def output(self) -> Tensor:
        return self.tensors[self.outputs[0]]
