"""Golden vectors: int8 inputs and the outputs the validated model gave for them.

A bundle carries K input tensors and the output tensors that the host run of the very same
.tflite produced. On the device, the self-test sketch feeds each input through TFLM and
checks that every output element is within `tolerance` quantized units (int8 steps) of the
recorded one. This catches a wrong operator resolver, a wrong arena, a miscompiled kernel
or a corrupted flash image before the model is trusted with live data.

Files in a bundle (int8 has one byte per element, so "little-endian" holds trivially):

    golden/inputs.bin    K * prod(input_shape) int8 values, C order
    golden/outputs.bin   K * prod(output_shape) int8 values, C order
    golden/vectors.json  count, shapes, quantization (scale, zero_point), tolerance

Shapes are the model's full tensor shapes, batch dimension included, e.g. [1, 49, 10, 1].
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import BundleError

GOLDEN_FORMAT = "tinyops.golden/1"
INPUTS_FILE = "golden/inputs.bin"
OUTPUTS_FILE = "golden/outputs.bin"
VECTORS_FILE = "golden/vectors.json"
GOLDEN_HEADER = "golden_vectors.h"

# An int8 difference can be at most 255 steps; a larger tolerance would accept anything.
MAX_TOLERANCE = 255

Quant = tuple[float, int]


def _check_quant(quant: Quant, what: str) -> Quant:
    scale, zero_point = quant
    if not (isinstance(scale, float | int) and math.isfinite(scale) and scale > 0):
        raise BundleError(f"{what} scale {scale!r} must be a finite number > 0")
    if isinstance(zero_point, bool) or not isinstance(zero_point, int | np.integer):
        raise BundleError(f"{what} zero_point {zero_point!r} must be an integer")
    if not -128 <= int(zero_point) <= 127:
        raise BundleError(f"{what} zero_point {zero_point} must lie in the int8 range -128..127")
    return float(scale), int(zero_point)


def c_float(value: float) -> str:
    """A C float literal that reads back as the same float32 (9 significant digits)."""
    if not math.isfinite(value):
        raise BundleError(f"cannot write {value!r} as a C float constant: expected a finite number")
    text = f"{value:.9g}"
    if not any(c in text for c in ".e"):
        # "1f" is not a C literal; "1.0f" is.
        text += ".0"
    return text + "f"


@dataclass(frozen=True)
class GoldenVectors:
    """K int8 input tensors and the int8 output tensors the model gave for them."""

    inputs: NDArray[np.int8]
    """(K, *input_shape) int8."""
    outputs: NDArray[np.int8]
    """(K, *output_shape) int8."""
    input_quant: Quant
    """(scale, zero_point) of the model's input tensor: real = scale * (q - zero_point)."""
    output_quant: Quant
    """(scale, zero_point) of the model's output tensor."""
    tolerance: int
    """Largest accepted |device - host| per output element, in int8 steps."""

    def __post_init__(self) -> None:
        for field, array in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not isinstance(array, np.ndarray) or array.dtype != np.int8:
                got = getattr(array, "dtype", type(array).__name__)
                raise BundleError(f"golden {field} must be an int8 numpy array, got {got}")
            if array.ndim < 2 or array.shape[0] == 0 or 0 in array.shape:
                raise BundleError(
                    f"golden {field} has shape {array.shape}: expected (K, *tensor_shape) "
                    "with K >= 1 and no empty dimension"
                )
        if self.inputs.shape[0] != self.outputs.shape[0]:
            raise BundleError(
                f"golden inputs hold {self.inputs.shape[0]} vectors but outputs hold "
                f"{self.outputs.shape[0]}: expected one output per input"
            )
        object.__setattr__(self, "input_quant", _check_quant(self.input_quant, "input_quant"))
        object.__setattr__(self, "output_quant", _check_quant(self.output_quant, "output_quant"))
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, int):
            raise BundleError(f"golden tolerance {self.tolerance!r} must be an integer")
        if not 0 <= self.tolerance <= MAX_TOLERANCE:
            raise BundleError(
                f"golden tolerance {self.tolerance} must lie in 0..{MAX_TOLERANCE} int8 steps"
            )

    @property
    def count(self) -> int:
        """Number of vectors, K."""
        return int(self.inputs.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.inputs.shape[1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.outputs.shape[1:])

    @property
    def input_size(self) -> int:
        """int8 elements per input vector."""
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        """int8 elements per output vector."""
        return math.prod(self.output_shape)

    def metadata(self) -> dict[str, Any]:
        """The content of golden/vectors.json."""
        return {
            "format": GOLDEN_FORMAT,
            "dtype": "int8",
            "count": self.count,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "input_quant": {"scale": self.input_quant[0], "zero_point": self.input_quant[1]},
            "output_quant": {"scale": self.output_quant[0], "zero_point": self.output_quant[1]},
            "tolerance": self.tolerance,
        }

    def to_files(self) -> dict[str, bytes]:
        """The three golden files, keyed by their path inside a bundle."""
        meta = json.dumps(self.metadata(), indent=2, sort_keys=True) + "\n"
        return {
            INPUTS_FILE: np.ascontiguousarray(self.inputs).tobytes(order="C"),
            OUTPUTS_FILE: np.ascontiguousarray(self.outputs).tobytes(order="C"),
            VECTORS_FILE: meta.encode(),
        }

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> GoldenVectors:
        """Read the vectors back from the files `to_files` wrote (extra keys are ignored)."""
        for path in (INPUTS_FILE, OUTPUTS_FILE, VECTORS_FILE):
            if path not in files:
                raise BundleError(f"golden vectors: {path} is missing")
        try:
            meta = json.loads(files[VECTORS_FILE])
            if not isinstance(meta, dict):
                raise ValueError("top level is not an object")
        except ValueError as exc:
            raise BundleError(f"{VECTORS_FILE} is not a JSON object: {exc}") from exc
        if meta.get("format") != GOLDEN_FORMAT:
            raise BundleError(
                f"{VECTORS_FILE}: format is {meta.get('format')!r}, expected {GOLDEN_FORMAT!r}"
            )
        if meta.get("dtype") != "int8":
            raise BundleError(f"{VECTORS_FILE}: dtype is {meta.get('dtype')!r}, expected 'int8'")
        try:
            count = int(meta["count"])
            in_shape = tuple(int(d) for d in meta["input_shape"])
            out_shape = tuple(int(d) for d in meta["output_shape"])
            input_quant = (float(meta["input_quant"]["scale"]), meta["input_quant"]["zero_point"])
            output_quant = (
                float(meta["output_quant"]["scale"]),
                meta["output_quant"]["zero_point"],
            )
            tolerance = meta["tolerance"]
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(
                f"{VECTORS_FILE}: missing or malformed key {exc}: expected count, input_shape, "
                "output_shape, input_quant{scale,zero_point}, output_quant{scale,zero_point}, "
                "tolerance"
            ) from exc
        arrays = []
        for path, shape in ((INPUTS_FILE, in_shape), (OUTPUTS_FILE, out_shape)):
            data = files[path]
            expected = count * math.prod(shape)
            if len(data) != expected:
                raise BundleError(
                    f"{path} holds {len(data)} bytes, expected {expected} "
                    f"({count} vectors of shape {list(shape)}, int8)"
                )
            arrays.append(np.frombuffer(data, dtype=np.int8).reshape((count, *shape)).copy())
        return cls(arrays[0], arrays[1], input_quant, output_quant, tolerance)


def golden_header(golden: GoldenVectors) -> str:
    """golden_vectors.h: the vectors as C++ constants for the on-device self-test."""
    guard = "TINYOPS_GOLDEN_VECTORS_H_"

    def rows(array: NDArray[np.int8]) -> list[str]:
        lines: list[str] = []
        for vector in array.reshape(golden.count, -1):
            lines.append("  {")
            # int8 values print as signed decimals; 5 characters ("-128,") per value.
            values = [int(v) for v in vector]
            for i in range(0, len(values), 16):
                lines.append("    " + " ".join(f"{v}," for v in values[i : i + 16]))
            lines.append("  },")
        return lines

    in_scale, in_zp = golden.input_quant
    out_scale, out_zp = golden.output_quant
    return "\n".join(
        [
            "// Generated by tinyops: golden vectors for the on-device self-test. Do not edit.",
            "// Each output was produced on the host by the same .tflite from the input beside",
            "// it; the device must reproduce it within kGoldenTolerance int8 steps.",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            "#include <stdint.h>",
            "",
            f"constexpr int kGoldenCount = {golden.count};",
            f"// Input tensor shape {list(golden.input_shape)}: int8 elements per input.",
            f"constexpr int kGoldenInputSize = {golden.input_size};",
            f"// Output tensor shape {list(golden.output_shape)}: int8 elements per output.",
            f"constexpr int kGoldenOutputSize = {golden.output_size};",
            "// Largest accepted |device - host| per output element, in int8 steps.",
            f"constexpr int kGoldenTolerance = {golden.tolerance};",
            "// Quantization: real = scale * (q - zero_point).",
            f"constexpr float kGoldenInputScale = {c_float(in_scale)};",
            f"constexpr int kGoldenInputZeroPoint = {in_zp};",
            f"constexpr float kGoldenOutputScale = {c_float(out_scale)};",
            f"constexpr int kGoldenOutputZeroPoint = {out_zp};",
            "",
            "const int8_t kGoldenInputs[kGoldenCount][kGoldenInputSize] = {",
            *rows(golden.inputs),
            "};",
            "",
            "const int8_t kGoldenOutputs[kGoldenCount][kGoldenOutputSize] = {",
            *rows(golden.outputs),
            "};",
            "",
            f"#endif  // {guard}",
            "",
        ]
    )


__all__ = [
    "GOLDEN_HEADER",
    "INPUTS_FILE",
    "OUTPUTS_FILE",
    "VECTORS_FILE",
    "GoldenVectors",
    "c_float",
    "golden_header",
]
