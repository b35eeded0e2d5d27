"""Golden vectors: exact file bytes, round trip, validation, and the C header via g++."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import numpy as np
import pytest

from tinyops.bundle.golden import GoldenVectors, c_float, golden_header
from tinyops.errors import BundleError

BuildAndRun = Callable[..., subprocess.CompletedProcess[bytes]]


def _small() -> GoldenVectors:
    # Two vectors; input shape (1, 3), output shape (1, 2).
    inputs = np.array([[[1, -2, 3]], [[127, -128, 0]]], dtype=np.int8)
    outputs = np.array([[[-128, 5]], [[64, -1]]], dtype=np.int8)
    return GoldenVectors(inputs, outputs, (0.5, -3), (1 / 256, -128), tolerance=2)


def test_files_hold_raw_int8_and_metadata() -> None:
    files = _small().to_files()
    assert sorted(files) == ["golden/inputs.bin", "golden/outputs.bin", "golden/vectors.json"]
    # Two's complement bytes, vector after vector.
    assert files["golden/inputs.bin"] == bytes([0x01, 0xFE, 0x03, 0x7F, 0x80, 0x00])
    assert files["golden/outputs.bin"] == bytes([0x80, 0x05, 0x40, 0xFF])
    assert json.loads(files["golden/vectors.json"]) == {
        "format": "tinyops.golden/1",
        "dtype": "int8",
        "count": 2,
        "input_shape": [1, 3],
        "output_shape": [1, 2],
        "input_quant": {"scale": 0.5, "zero_point": -3},
        "output_quant": {"scale": 0.00390625, "zero_point": -128},
        "tolerance": 2,
    }
    assert files["golden/vectors.json"].endswith(b"}\n")


def test_round_trip() -> None:
    golden = _small()
    back = GoldenVectors.from_files(golden.to_files())
    np.testing.assert_array_equal(back.inputs, golden.inputs)
    np.testing.assert_array_equal(back.outputs, golden.outputs)
    assert back.inputs.dtype == np.int8 and back.outputs.dtype == np.int8
    assert back.input_quant == (0.5, -3)
    assert back.output_quant == (0.00390625, -128)
    assert back.tolerance == 2
    assert (back.count, back.input_size, back.output_size) == (2, 3, 2)


def test_truncated_file_is_named() -> None:
    files = _small().to_files()
    files["golden/outputs.bin"] = files["golden/outputs.bin"][:-1]
    with pytest.raises(BundleError, match=r"golden/outputs.bin holds 3 bytes, expected 4"):
        GoldenVectors.from_files(files)


def test_missing_file_is_named() -> None:
    files = _small().to_files()
    del files["golden/inputs.bin"]
    with pytest.raises(BundleError, match=r"golden/inputs.bin is missing"):
        GoldenVectors.from_files(files)


def test_malformed_metadata_is_named() -> None:
    files = _small().to_files()
    meta = json.loads(files["golden/vectors.json"])
    del meta["tolerance"]
    files["golden/vectors.json"] = json.dumps(meta).encode()
    with pytest.raises(BundleError, match=r"golden/vectors.json: missing or malformed key"):
        GoldenVectors.from_files(files)
    files["golden/vectors.json"] = b"[1, 2]"
    with pytest.raises(BundleError, match="not a JSON object"):
        GoldenVectors.from_files(files)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": np.zeros((2, 3), dtype=np.float32)}, "int8"),
        ({"outputs": np.zeros((3, 2), dtype=np.int8)}, "2 vectors but outputs hold 3"),
        ({"inputs": np.zeros((2,), dtype=np.int8)}, r"expected \(K, \*tensor_shape\)"),
        ({"input_quant": (0.0, 0)}, "scale"),
        ({"output_quant": (0.1, 128)}, "zero_point 128"),
        ({"tolerance": -1}, "tolerance -1"),
        ({"tolerance": 256}, "tolerance 256"),
    ],
)
def test_invalid_vectors_are_rejected(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "inputs": np.zeros((2, 3), dtype=np.int8),
        "outputs": np.zeros((2, 2), dtype=np.int8),
        "input_quant": (0.5, 0),
        "output_quant": (0.5, 0),
        "tolerance": 1,
    }
    with pytest.raises(BundleError, match=message):
        GoldenVectors(**{**base, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "literal"),
    [(1.0, "1.0f"), (0.5, "0.5f"), (1 / 255, "0.00392156863f"), (1e-5, "1e-05f"), (3, "3.0f")],
)
def test_c_float_literals(value: float, literal: str) -> None:
    assert c_float(value) == literal


def test_c_float_rejects_nan() -> None:
    with pytest.raises(BundleError, match="finite"):
        c_float(float("nan"))


# Prints every constant and every vector element as decimal numbers, space separated.
HEADER_MAIN = """\
#include <cstdio>

#include "golden_vectors.h"

int main() {
  std::printf("%d %d %d %d\\n", kGoldenCount, kGoldenInputSize, kGoldenOutputSize,
              kGoldenTolerance);
  std::printf("%.9g %d %.9g %d\\n", static_cast<double>(kGoldenInputScale),
              kGoldenInputZeroPoint, static_cast<double>(kGoldenOutputScale),
              kGoldenOutputZeroPoint);
  for (int k = 0; k < kGoldenCount; ++k) {
    for (int i = 0; i < kGoldenInputSize; ++i) std::printf("%d ", kGoldenInputs[k][i]);
    std::printf("| ");
    for (int i = 0; i < kGoldenOutputSize; ++i) std::printf("%d ", kGoldenOutputs[k][i]);
    std::printf("\\n");
  }
  return 0;
}
"""


def test_header_compiles_and_holds_the_same_numbers(build_and_run: BuildAndRun) -> None:
    result = build_and_run(
        {"golden_vectors.h": golden_header(_small()), "main.cc": HEADER_MAIN}, ["main.cc"]
    )
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == [
        "2 3 2 2",
        "0.5 -3 0.00390625 -128",
        "1 -2 3 | -128 5 ",
        "127 -128 0 | 64 -1 ",
    ]


def test_header_of_larger_vectors_round_trips(build_and_run: BuildAndRun) -> None:
    rng = np.random.default_rng(7)
    inputs = rng.integers(-128, 128, size=(3, 1, 49, 10, 1), dtype=np.int8)
    outputs = rng.integers(-128, 128, size=(3, 1, 12), dtype=np.int8)
    golden = GoldenVectors(inputs, outputs, (0.5847029, 83), (0.00390625, -128), tolerance=1)
    result = build_and_run(
        {"golden_vectors.h": golden_header(golden), "main.cc": HEADER_MAIN}, ["main.cc"]
    )
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "3 490 12 1"
    assert lines[1] == "0.584702909 83 0.00390625 -128"
    for k, line in enumerate(lines[2:]):
        got_in, got_out = line.split("|")
        assert [int(v) for v in got_in.split()] == inputs[k].ravel().tolist()
        assert [int(v) for v in got_out.split()] == outputs[k].ravel().tolist()
