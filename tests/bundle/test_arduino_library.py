"""Arduino library: file layout, library.properties, header constants, sketch, and g++."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tinyops.bundle.arduino import (
    TFLM_ARDUINO_URL,
    arduino_library,
    arena_size_with_margin,
    library_name,
    resolver_methods,
)
from tinyops.bundle.golden import GoldenVectors
from tinyops.bundle.manifest import TensorSpec
from tinyops.errors import BundleError, UnsupportedOperator

BuildAndRun = Callable[..., subprocess.CompletedProcess[bytes]]

MODEL = b"TFL3" + bytes(range(40))
INPUT = TensorSpec(shape=(1, 3), dtype="int8", scale=0.5, zero_point=-3)
OUTPUT = TensorSpec(shape=(1, 2), dtype="int8", scale=0.25, zero_point=10)
OPS = ["FULLY_CONNECTED", "SOFTMAX", "fully_connected"]
ROOT = "arduino/KwsDemo"


def _golden(tolerance: int = 2) -> GoldenVectors:
    inputs = np.array([[[1, -2, 3]], [[127, -128, 0]]], dtype=np.int8)
    outputs = np.array([[[-128, 5]], [[64, 127]]], dtype=np.int8)
    return GoldenVectors(inputs, outputs, (0.5, -3), (0.25, 10), tolerance)


def _library(**overrides: object) -> dict[str, bytes]:
    args: dict[str, object] = {
        "name": "kws-demo",
        "version": "1.2.0",
        "tflite_bytes": MODEL,
        "golden": _golden(),
        "input_spec": INPUT,
        "output_spec": OUTPUT,
        "arena_bytes": 24_272,
        "ops": OPS,
    }
    args.update(overrides)
    return arduino_library(**args)  # type: ignore[arg-type]


def _properties(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and line[0] != "#"]
    return {key: value for key, value in pairs}


@pytest.mark.parametrize(
    ("name", "lib"),
    [("kws-demo", "KwsDemo"), ("ad01", "Ad01"), ("my_model v2", "MyModelV2"), ("vww", "Vww")],
)
def test_library_name(name: str, lib: str) -> None:
    assert library_name(name) == lib


@pytest.mark.parametrize("name", ["01abc", "---", ""])
def test_library_name_must_start_with_a_letter(name: str) -> None:
    with pytest.raises(BundleError, match="start with a letter"):
        library_name(name)


@pytest.mark.parametrize("name", ["serial", "tensorflow-lite", "Wire"])
def test_library_name_must_not_clash_with_arduino_names(name: str) -> None:
    with pytest.raises(BundleError, match="clash"):
        library_name(name)


@pytest.mark.parametrize(
    ("measured", "expected"),
    [
        # 24272 + 2428 (10 %, rounded up) = 26700 -> next multiple of 16.
        (24_272, 26_704),
        # 10 % of 3984 is below 1 KiB: 3984 + 1024 = 5008, already a multiple of 16.
        (3_984, 5_008),
        # 1000 + 1024 = 2024 -> 2032.
        (1_000, 2_032),
        # 103680 + 10368 = 114048 = 16 * 7128.
        (103_680, 114_048),
    ],
)
def test_arena_margin(measured: int, expected: int) -> None:
    assert arena_size_with_margin(measured) == expected


def test_arena_must_be_measured() -> None:
    with pytest.raises(BundleError, match="arena_bytes 0"):
        arena_size_with_margin(0)


def test_resolver_methods_dedupe_sort_and_map_irregular_names() -> None:
    ops = ["SOFTMAX", "CONV_2D", "conv_2d", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "PADV2"]
    assert resolver_methods(ops) == [
        "AddAveragePool2D",
        "AddConv2D",
        "AddDepthwiseConv2D",
        "AddPadV2",
        "AddSoftmax",
    ]
    assert resolver_methods(["UNIDIRECTIONAL_SEQUENCE_LSTM"]) == ["AddUnidirectionalSequenceLSTM"]


def test_unknown_operator_is_named() -> None:
    with pytest.raises(UnsupportedOperator, match="FOO_BAR"):
        resolver_methods(["CONV_2D", "FOO_BAR"])
    with pytest.raises(UnsupportedOperator, match="FOO_BAR"):
        _library(ops=["FOO_BAR"])
    with pytest.raises(BundleError, match="ops is empty"):
        resolver_methods([])


def test_layout() -> None:
    assert sorted(_library()) == [
        f"{ROOT}/examples/SelfTest/SelfTest.ino",
        f"{ROOT}/library.properties",
        f"{ROOT}/src/KwsDemo.h",
        f"{ROOT}/src/golden_vectors.h",
        f"{ROOT}/src/model_data.cpp",
        f"{ROOT}/src/model_data.h",
    ]


def test_library_properties() -> None:
    text = _library()[f"{ROOT}/library.properties"].decode()
    props = _properties(text)
    assert props["name"] == "KwsDemo"
    assert props["version"] == "1.2.0"
    assert props["author"] == "tinyops"
    assert props["maintainer"] == "tinyops"
    assert props["category"] == "Data Processing"
    assert props["architectures"] == "*"
    assert props["includes"] == "KwsDemo.h"
    assert props["url"] == TFLM_ARDUINO_URL
    assert "kws-demo" in props["sentence"]
    assert TFLM_ARDUINO_URL in props["paragraph"]
    # The TFLM library is not in the Library Manager index: a depends= would not resolve.
    assert "depends" not in props
    assert f"# from {TFLM_ARDUINO_URL}" in text
    assert set(props) == {
        "name",
        "version",
        "author",
        "maintainer",
        "sentence",
        "paragraph",
        "category",
        "url",
        "architectures",
        "includes",
    }


def test_library_properties_reject_multiline_values() -> None:
    with pytest.raises(BundleError, match="author must fit on one line"):
        _library(author="a\nb")


def test_header_constants() -> None:
    header = _library()[f"{ROOT}/src/KwsDemo.h"].decode()
    for line in [
        '#include "model_data.h"',
        "namespace KwsDemo {",
        'constexpr char kModelName[] = "kws-demo";',
        'constexpr char kModelVersion[] = "1.2.0";',
        "constexpr int kTensorArenaSize = 26704;",
        "constexpr int kInputRank = 2;",
        "constexpr int kInputShape[kInputRank] = {1, 3};",
        "constexpr int kInputSize = 3;",
        "constexpr float kInputScale = 0.5f;",
        "constexpr int kInputZeroPoint = -3;",
        "constexpr int kOutputShape[kOutputRank] = {1, 2};",
        "constexpr float kOutputScale = 0.25f;",
        "constexpr int kOutputZeroPoint = 10;",
        "constexpr int kOpCount = 2;",
    ]:
        assert line in header.splitlines(), line


def test_sketch_uses_the_tflm_api_with_the_models_ops() -> None:
    sketch = _library()[f"{ROOT}/examples/SelfTest/SelfTest.ino"].decode()
    assert "#include <TensorFlowLite.h>" in sketch
    assert "#include <KwsDemo.h>" in sketch
    assert "#include <golden_vectors.h>" in sketch
    assert "static tflite::MicroMutableOpResolver<KwsDemo::kOpCount> op_resolver;" in sketch
    registrations = [line.strip() for line in sketch.splitlines() if "op_resolver.Add" in line]
    assert registrations == [
        "if (op_resolver.AddFullyConnected() != kTfLiteOk) return false;",
        "if (op_resolver.AddSoftmax() != kTfLiteOk) return false;",
    ]
    assert "tflite::GetModel(g_model)" in sketch
    assert "static tflite::MicroInterpreter interpreter(" in sketch
    assert "alignas(16) static uint8_t tensor_arena[KwsDemo::kTensorArenaSize];" in sketch
    assert "interpreter.Invoke()" in sketch
    assert "diff <= kGoldenTolerance" in sketch
    assert '"SELFTEST PASS "' in sketch and '"SELFTEST FAIL "' in sketch
    assert "Serial.begin(115200);" in sketch
    assert "void setup() {" in sketch and "void loop() {}" in sketch


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input_spec": TensorSpec(shape=(1, 4), scale=0.5, zero_point=-3)}, "shape"),
        ({"output_spec": TensorSpec(shape=(1, 2), scale=0.5, zero_point=10)}, "quantization"),
        ({"input_spec": TensorSpec(shape=(1, 3), dtype="float32")}, "int8 models only"),
        ({"version": "1.2"}, "SemVer"),
        ({"symbol": "int"}, "keyword"),
    ],
)
def test_inconsistent_inputs_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(BundleError, match=message):
        _library(**overrides)


# Host-side check of everything in the library except the TFLM calls: the constants agree
# with the golden vectors, MaxAbsDiff decides PASS/FAIL at the tolerance boundary,
# quantization follows TFLite's rounding, and the model array is intact.
HOST_MAIN = """\
#include <cmath>
#include <cstdio>
#include <cstring>

#include <LIB.h>
#include <golden_vectors.h>

static_assert(kGoldenInputSize == LIB::kInputSize, "input size");
static_assert(kGoldenOutputSize == LIB::kOutputSize, "output size");

int main() {
  std::printf("%d %d %u\\n", LIB::kTensorArenaSize, LIB::kOpCount, g_model_len);
  for (int k = 0; k < kGoldenCount; ++k) {
    int8_t device[kGoldenOutputSize];
    std::memcpy(device, kGoldenOutputs[k], sizeof(device));
    const int same = LIB::MaxAbsDiff(device, kGoldenOutputs[k], kGoldenOutputSize);
    const int v = device[0];
    device[0] = static_cast<int8_t>(v <= 0 ? v + kGoldenTolerance : v - kGoldenTolerance);
    const int at = LIB::MaxAbsDiff(device, kGoldenOutputs[k], kGoldenOutputSize);
    device[0] = static_cast<int8_t>(v <= 0 ? v + kGoldenTolerance + 1 : v - kGoldenTolerance - 1);
    const int beyond = LIB::MaxAbsDiff(device, kGoldenOutputs[k], kGoldenOutputSize);
    std::printf("%d %d %s %s\\n", same, at, at <= kGoldenTolerance ? "PASS" : "FAIL",
                beyond <= kGoldenTolerance ? "PASS" : "FAIL");
  }
  std::printf("%d %d %d %d %d\\n", LIB::QuantizeInput(1.25f), LIB::QuantizeInput(-1.25f),
              LIB::QuantizeInput(100.0f), LIB::QuantizeInput(-100.0f),
              LIB::QuantizeInput(NAN));
  std::printf("%g %g\\n", static_cast<double>(LIB::DequantizeOutput(14)),
              static_cast<double>(LIB::DequantizeOutput(-128)));
  return 0;
}
"""


def _compile_library(build_and_run: BuildAndRun, files: dict[str, bytes], lib: str) -> list[str]:
    prefix = f"arduino/{lib}/"
    tree = {path.removeprefix(prefix): data for path, data in files.items()}
    tree["host_main.cc"] = HOST_MAIN.replace("LIB", lib).encode()
    result = build_and_run(tree, ["src/model_data.cpp", "host_main.cc"], include_dirs=["src"])
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().splitlines()


def test_library_sources_compile_and_behave(build_and_run: BuildAndRun) -> None:
    lines = _compile_library(build_and_run, _library(), "KwsDemo")
    assert lines == [
        f"26704 2 {len(MODEL)}",
        "0 2 PASS FAIL",
        "0 2 PASS FAIL",
        # 1.25 / 0.5 = 2.5 rounds away from zero to 3, + zp -3 = 0; -2.5 -> -3 - 3 = -6.
        "0 -6 127 -128 -128",
        # 0.25 * (14 - 10) and 0.25 * (-128 - 10).
        "1 -34.5",
    ]


@pytest.mark.fixtures
def test_mlperf_kws_library_with_tflm_golden_vectors(
    build_and_run: BuildAndRun, mlperf_dir: Path
) -> None:
    from tflite_micro.python.tflite_micro import runtime

    model = (mlperf_dir / "kws_ref_model.tflite").read_bytes()
    interpreter = runtime.Interpreter.from_bytes(model)
    input_spec = TensorSpec.from_details(interpreter.get_input_details(0))
    output_spec = TensorSpec.from_details(interpreter.get_output_details(0))
    assert input_spec.shape == (1, 49, 10, 1) and output_spec.shape == (1, 12)

    rng = np.random.default_rng(0)
    inputs = rng.integers(-128, 128, size=(2, *input_spec.shape), dtype=np.int8)
    outputs = []
    for x in inputs:
        interpreter.set_input(x, 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0), dtype=np.int8))
    golden = GoldenVectors(
        inputs,
        np.stack(outputs),
        (input_spec.scale, input_spec.zero_point),
        (output_spec.scale, output_spec.zero_point),
        tolerance=1,
    )
    # Operators and arena as listed in the fixtures' README.
    ops = ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "RESHAPE"]
    files = arduino_library(
        "kws", "0.1.0", model, golden, input_spec, output_spec, 24_272, [*ops, "SOFTMAX"]
    )
    lines = _compile_library(build_and_run, files, "Kws")
    assert lines[0] == f"26704 6 {len(model)}"
    assert lines[1:3] == ["0 1 PASS FAIL", "0 1 PASS FAIL"]
