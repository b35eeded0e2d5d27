"""The model as an Arduino library, with a self-test sketch that checks it on the board.

Layout (Arduino library specification 1.5, rev. 2.2), under `arduino/<LibName>/`:

    library.properties                 metadata the Arduino IDE / arduino-cli read
    src/<LibName>.h                    constants firmware needs: arena size (bytes), tensor
                                       shapes, quantization; quantize/dequantize helpers
    src/model_data.h, model_data.cpp   the .tflite as a 16-byte aligned C array
    src/golden_vectors.h               golden inputs and host outputs
    examples/SelfTest/SelfTest.ino     runs every golden input through TFLM and prints
                                       PASS/FAIL over Serial

The array source is `model_data.cpp`, not `.cc`: the Arduino IDE 1.x builder compiles
only .c, .cpp and .S files of a library (arduino-cli added .cc in 0.35, 2023), and a
skipped source would surface as an undefined `g_model` at link time.

Runtime dependency: TensorFlow Lite for Microcontrollers for Arduino (library name
`Arduino_TensorFlowLite`, header `TensorFlowLite.h`). It was withdrawn from the Arduino
Library Manager index in 2022 at the TFLM maintainers' request, so a `depends=` entry
could not be resolved (and would find nothing, or a stale 2.4.0-ALPHA). The library is
installed by hand from https://github.com/tensorflow/tflite-micro-arduino-examples;
library.properties says so in a comment and in its paragraph.

The arena size is the arena TFLM reported on the host plus a margin, rounded up to 16
bytes: the host runtime is 64-bit, the board 32-bit, and kernels optimised for the board
(CMSIS-NN) may ask for scratch buffers the reference kernels did not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from tinyops.bundle.carray import (
    MODEL_ALIGNMENT,
    MODEL_HEADER,
    MODEL_SOURCE,
    model_data_sources,
    validate_c_identifier,
)
from tinyops.bundle.golden import GOLDEN_HEADER, GoldenVectors, c_float, golden_header
from tinyops.bundle.manifest import TensorSpec, is_semver
from tinyops.errors import BundleError, UnsupportedOperator
from tinyops.store.atomic import sha256_bytes

TFLM_ARDUINO_URL = "https://github.com/tensorflow/tflite-micro-arduino-examples"
# The header the TFLM Arduino library declares in its `includes=` field.
TFLM_ARDUINO_HEADER = "TensorFlowLite.h"
DEFAULT_SERIAL_BAUD = 115200
# Arena margin: 10 % of the measured arena, at least 1 KiB.
DEFAULT_ARENA_MARGIN = 0.10
DEFAULT_MIN_ARENA_MARGIN_BYTES = 1024
# Native-USB boards drop output printed before the host opens the port; wait this long.
SERIAL_WAIT_MS = 5000
# Arduino library names: at most 63 characters (library specification rev. 2.2).
MAX_LIBRARY_NAME = 63

# The library name is also a C++ namespace and a header name: it must not collide with
# Arduino core globals or the TFLM library's header (case-insensitive file systems).
_CLASHING_NAMES = frozenset(
    {"arduino", "serial", "serial1", "serial2", "string", "stream", "print", "wire", "spi"}
    | {"eeprom", "tensorflowlite"}
)

# TFLite builtin operator → method of tflite::MicroMutableOpResolver that registers it
# (tensorflow/lite/micro/micro_mutable_op_resolver.h).
TFLM_OP_RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs",
    "ADD": "AddAdd",
    "ADD_N": "AddAddN",
    "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast",
    "CEIL": "AddCeil",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "COS": "AddCos",
    "CUMSUM": "AddCumSum",
    "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "DIV": "AddDiv",
    "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "EQUAL": "AddEqual",
    "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill",
    "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater",
    "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf",
    "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu",
    "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog",
    "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MIRROR_PAD": "AddMirrorPad",
    "MUL": "AddMul",
    "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual",
    "PACK": "AddPack",
    "PAD": "AddPad",
    "PADV2": "AddPadV2",
    "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable",
    "REDUCE_MAX": "AddReduceMax",
    "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu",
    "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound",
    "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2",
    "SHAPE": "AddShape",
    "SIN": "AddSin",
    "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit",
    "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt",
    "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "SUM": "AddSum",
    "SVDF": "AddSvdf",
    "TANH": "AddTanh",
    "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile",
    "ZEROS_LIKE": "AddZerosLike",
}


def library_name(name: str) -> str:
    """Arduino library name (also the C++ namespace) for a model name: 'kws-demo' → 'KwsDemo'."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    lib = "".join(p[0].upper() + p[1:] for p in parts)
    if not lib or not lib[0].isalpha():
        raise BundleError(
            f"model name {name!r} gives Arduino library name {lib!r}: expected it to start "
            "with a letter"
        )
    if lib.lower() in _CLASHING_NAMES:
        raise BundleError(
            f"Arduino library name {lib!r} (from model name {name!r}) would clash with an "
            "Arduino core or TFLM name: rename the model"
        )
    if len(lib) > MAX_LIBRARY_NAME:
        raise BundleError(
            f"Arduino library name {lib!r} is {len(lib)} characters: at most "
            f"{MAX_LIBRARY_NAME} allowed"
        )
    return validate_c_identifier(lib, "Arduino library name")


def arena_size_with_margin(
    measured_bytes: int,
    margin: float = DEFAULT_ARENA_MARGIN,
    min_margin_bytes: int = DEFAULT_MIN_ARENA_MARGIN_BYTES,
) -> int:
    """Arena to reserve on the board: measured + max(margin * measured, min), 16-aligned."""
    if measured_bytes <= 0:
        raise BundleError(f"arena_bytes {measured_bytes} must be > 0 (bytes TFLM used)")
    if margin < 0 or min_margin_bytes < 0:
        raise BundleError("arena margin and minimum margin must be >= 0")
    total = measured_bytes + max(math.ceil(measured_bytes * margin), min_margin_bytes)
    return -(-total // MODEL_ALIGNMENT) * MODEL_ALIGNMENT


def resolver_methods(ops: Sequence[str]) -> list[str]:
    """MicroMutableOpResolver methods for `ops`, deduplicated, in sorted operator order.

    Registering an operator twice makes TFLM return kTfLiteError, so duplicates go.
    """
    unique = sorted({op.strip().upper() for op in ops})
    if not unique:
        raise BundleError("ops is empty: expected the TFLite builtin operators the model uses")
    unknown = [op for op in unique if op not in TFLM_OP_RESOLVER_METHODS]
    if unknown:
        raise UnsupportedOperator(
            f"operator(s) {', '.join(unknown)} have no TFLM MicroMutableOpResolver method "
            "known to tinyops; expected TFLite builtin names such as CONV_2D, "
            "FULLY_CONNECTED, SOFTMAX"
        )
    return [TFLM_OP_RESOLVER_METHODS[op] for op in unique]


def _check_spec(
    spec: TensorSpec, shape: tuple[int, ...], quant: tuple[float, int], role: str
) -> None:
    if spec.dtype != "int8":
        raise BundleError(f"{role} tensor is {spec.dtype}: the self-test supports int8 models only")
    if spec.shape != shape:
        raise BundleError(
            f"{role} tensor shape {list(spec.shape)} differs from the golden {role}s' "
            f"shape {list(shape)}"
        )
    scale, zero_point = quant
    if not math.isclose(spec.scale, scale, rel_tol=1e-6) or spec.zero_point != zero_point:
        raise BundleError(
            f"{role} quantization (scale {spec.scale}, zero_point {spec.zero_point}) differs "
            f"from the golden vectors' (scale {scale}, zero_point {zero_point})"
        )


def _property_value(key: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise BundleError(f"library.properties {key} must fit on one line, got {value!r}")
    return value


def _shape_lines(prefix: str, spec: TensorSpec, role: str) -> list[str]:
    dims = ", ".join(str(d) for d in spec.shape)
    return [
        f"// {role} tensor: int8, shape [{dims}]; real = scale * (q - zero_point).",
        f"constexpr int k{prefix}Rank = {len(spec.shape)};",
        f"constexpr int k{prefix}Shape[k{prefix}Rank] = {{{dims}}};",
        f"// int8 elements (= bytes) in the {role.lower()} tensor.",
        f"constexpr int k{prefix}Size = {spec.size};",
        f"constexpr float k{prefix}Scale = {c_float(spec.scale)};",
        f"constexpr int k{prefix}ZeroPoint = {spec.zero_point};",
    ]


def library_header(
    lib: str,
    name: str,
    version: str,
    tflite_bytes: bytes,
    input_spec: TensorSpec,
    output_spec: TensorSpec,
    arena_bytes: int,
    arena_size: int,
    ops: Sequence[str],
) -> str:
    """src/<lib>.h: constants and int8 helpers in namespace `lib`."""
    guard = f"TINYOPS_{lib.upper()}_H_"
    op_names = ", ".join(sorted({op.strip().upper() for op in ops}))
    return "\n".join(
        [
            f"// {lib}: model {name} {version}, generated by tinyops. Do not edit.",
            f"// Model sha256: {sha256_bytes(tflite_bytes)}, {len(tflite_bytes)} bytes.",
            f"// Operators: {op_names}.",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            "#include <math.h>",
            "#include <stdint.h>",
            "",
            f'#include "{MODEL_HEADER}"',
            "",
            f"namespace {lib} {{",
            "",
            f'constexpr char kModelName[] = "{name}";',
            f'constexpr char kModelVersion[] = "{version}";',
            "",
            f"// Tensor arena, bytes: {arena_bytes} measured by TFLM on the host plus a margin",
            f"// for 32-bit targets and optimised kernels, rounded up to {MODEL_ALIGNMENT}.",
            f"constexpr int kTensorArenaSize = {arena_size};",
            "",
            *_shape_lines("Input", input_spec, "Input"),
            "",
            *_shape_lines("Output", output_spec, "Output"),
            "",
            "// Number of distinct operators, the size of the MicroMutableOpResolver.",
            f"constexpr int kOpCount = {len(set(op.strip().upper() for op in ops))};",
            "",
            "// Quantize one real input value to the model's int8 input domain. TFLite rounds",
            "// half away from zero, as roundf does; NaN maps to -128.",
            "inline int8_t QuantizeInput(float x) {",
            "  const float q = roundf(x / kInputScale) + static_cast<float>(kInputZeroPoint);",
            "  if (!(q >= -128.0f)) return -128;",
            "  if (q > 127.0f) return 127;",
            "  return static_cast<int8_t>(q);",
            "}",
            "",
            "// Real value of one int8 output element.",
            "inline float DequantizeOutput(int8_t q) {",
            "  return kOutputScale * static_cast<float>(q - kOutputZeroPoint);",
            "}",
            "",
            "// Largest |a[i] - b[i]| over n int8 elements, in int8 steps (0..255).",
            "inline int MaxAbsDiff(const int8_t* a, const int8_t* b, int n) {",
            "  int worst = 0;",
            "  for (int i = 0; i < n; ++i) {",
            "    const int d = static_cast<int>(a[i]) - static_cast<int>(b[i]);",
            "    const int magnitude = d < 0 ? -d : d;",
            "    if (magnitude > worst) worst = magnitude;",
            "  }",
            "  return worst;",
            "}",
            "",
            f"}}  // namespace {lib}",
            "",
            f"#endif  // {guard}",
            "",
        ]
    )


def library_properties(
    lib: str,
    version: str,
    *,
    name: str,
    author: str,
    maintainer: str,
    url: str,
) -> str:
    """library.properties per the Arduino library specification 1.5 (rev. 2.2)."""
    sentence = f"The {name} model with TensorFlow Lite for Microcontrollers, and a self-test."
    paragraph = (
        f"Generated by tinyops: the {name} {version} .tflite model as a C array, its tensor "
        "shapes, quantization and arena size, and golden vectors that the SelfTest example "
        "checks on the board. Requires the TensorFlow Lite for Microcontrollers Arduino "
        f"library (Arduino_TensorFlowLite), installed from {TFLM_ARDUINO_URL}."
    )
    fields = {
        "name": lib,
        "version": version,
        "author": author,
        "maintainer": maintainer,
        "sentence": sentence,
        "paragraph": paragraph,
        "category": "Data Processing",
        "url": url,
        "architectures": "*",
        "includes": f"{lib}.h",
    }
    lines = [
        "# Generated by tinyops. Needs TensorFlow Lite for Microcontrollers for Arduino",
        "# (library Arduino_TensorFlowLite, header TensorFlowLite.h). It is not in the",
        "# Arduino Library Manager index, so 'depends' could not resolve it: install it",
        f"# from {TFLM_ARDUINO_URL}",
    ]
    lines += [f"{key}={_property_value(key, value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def selftest_sketch(lib: str, ops: Sequence[str], symbol: str, serial_baud: int) -> str:
    """examples/SelfTest/SelfTest.ino: run each golden vector with TFLM, print PASS/FAIL."""
    methods = resolver_methods(ops)
    op_names = ", ".join(sorted({op.strip().upper() for op in ops}))
    registrations = [
        f"  if (op_resolver.{method}() != kTfLiteOk) return false;" for method in methods
    ]
    return "\n".join(
        [
            f"// SelfTest for {lib}, generated by tinyops. Do not edit.",
            "//",
            "// Runs each golden input through the model with TensorFlow Lite for",
            "// Microcontrollers and checks that every output element is within",
            "// kGoldenTolerance int8 steps of the output recorded on the host. Prints one",
            '// line per vector, then "SELFTEST PASS n/n" or "SELFTEST FAIL k/n", over Serial',
            f"// at {serial_baud} baud.",
            "//",
            "// Needs the TFLM Arduino library (Arduino_TensorFlowLite), installed from",
            f"// {TFLM_ARDUINO_URL}",
            f"#include <{TFLM_ARDUINO_HEADER}>",
            "",
            "#include <string.h>",
            "",
            f"#include <{lib}.h>",
            f"#include <{GOLDEN_HEADER}>",
            "",
            '#include "tensorflow/lite/micro/micro_interpreter.h"',
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
            '#include "tensorflow/lite/schema/schema_generated.h"',
            "",
            f"static_assert(kGoldenInputSize == {lib}::kInputSize,",
            '              "golden inputs do not match the model input tensor");',
            f"static_assert(kGoldenOutputSize == {lib}::kOutputSize,",
            '              "golden outputs do not match the model output tensor");',
            "",
            "// Every tensor of the model lives here, aligned as TFLM requires.",
            f"alignas({MODEL_ALIGNMENT}) static uint8_t tensor_arena[{lib}::kTensorArenaSize];",
            "",
            f"// One slot per operator the model uses: {op_names}.",
            f"static tflite::MicroMutableOpResolver<{lib}::kOpCount> op_resolver;",
            "",
            "static bool RegisterOps() {",
            *registrations,
            "  return true;",
            "}",
            "",
            "static void Fail(const char* reason) {",
            '  Serial.print("SELFTEST FAIL: ");',
            "  Serial.println(reason);",
            "}",
            "",
            "static void RunSelfTest() {",
            f"  const tflite::Model* model = tflite::GetModel({symbol});",
            "  if (model->version() != TFLITE_SCHEMA_VERSION) {",
            '    Fail("model schema version differs from the TFLM library\'s");',
            "    return;",
            "  }",
            "  if (!RegisterOps()) {",
            '    Fail("could not register the model\'s operators");',
            "    return;",
            "  }",
            "  static tflite::MicroInterpreter interpreter(model, op_resolver, tensor_arena,",
            "                                              sizeof(tensor_arena));",
            "  if (interpreter.AllocateTensors() != kTfLiteOk) {",
            '    Fail("AllocateTensors() failed: is kTensorArenaSize too small?");',
            "    return;",
            "  }",
            "  TfLiteTensor* input = interpreter.input(0);",
            "  TfLiteTensor* output = interpreter.output(0);",
            "  if (input->type != kTfLiteInt8 ||",
            "      input->bytes != static_cast<size_t>(kGoldenInputSize)) {",
            '    Fail("input tensor is not int8 of kGoldenInputSize bytes");',
            "    return;",
            "  }",
            "  if (output->type != kTfLiteInt8 ||",
            "      output->bytes != static_cast<size_t>(kGoldenOutputSize)) {",
            '    Fail("output tensor is not int8 of kGoldenOutputSize bytes");',
            "    return;",
            "  }",
            '  Serial.print("arena used, bytes: ");',
            "  Serial.println(static_cast<unsigned long>(interpreter.arena_used_bytes()));",
            "",
            "  int passed = 0;",
            "  for (int i = 0; i < kGoldenCount; ++i) {",
            "    memcpy(input->data.int8, kGoldenInputs[i], kGoldenInputSize);",
            '    Serial.print("vector ");',
            "    Serial.print(i);",
            "    if (interpreter.Invoke() != kTfLiteOk) {",
            '      Serial.println(": Invoke() failed FAIL");',
            "      continue;",
            "    }",
            "    const int diff =",
            f"        {lib}::MaxAbsDiff(output->data.int8, kGoldenOutputs[i], kGoldenOutputSize);",
            "    const bool ok = diff <= kGoldenTolerance;",
            '    Serial.print(": max diff ");',
            "    Serial.print(diff);",
            '    Serial.println(ok ? " PASS" : " FAIL");',
            "    if (ok) ++passed;",
            "  }",
            '  Serial.print(passed == kGoldenCount ? "SELFTEST PASS " : "SELFTEST FAIL ");',
            "  Serial.print(passed);",
            '  Serial.print("/");',
            "  Serial.println(kGoldenCount);",
            "}",
            "",
            "void setup() {",
            f"  Serial.begin({serial_baud});",
            "  // Native-USB boards lose output printed before the host opens the port.",
            "  const unsigned long start_ms = millis();",
            f"  while (!Serial && millis() - start_ms < {SERIAL_WAIT_MS}UL) {{",
            "  }",
            "  RunSelfTest();",
            "}",
            "",
            "// The self-test runs once, from setup().",
            "void loop() {}",
            "",
        ]
    )


def arduino_library(
    name: str,
    version: str,
    tflite_bytes: bytes,
    golden: GoldenVectors,
    input_spec: TensorSpec,
    output_spec: TensorSpec,
    arena_bytes: int,
    ops: Sequence[str],
    *,
    author: str = "tinyops",
    maintainer: str = "tinyops",
    url: str = TFLM_ARDUINO_URL,
    symbol: str = "g_model",
    arena_margin: float = DEFAULT_ARENA_MARGIN,
    min_arena_margin_bytes: int = DEFAULT_MIN_ARENA_MARGIN_BYTES,
    serial_baud: int = DEFAULT_SERIAL_BAUD,
) -> dict[str, bytes]:
    """All files of the Arduino library, keyed by path under `arduino/<LibName>/`.

    `arena_bytes` is the tensor arena TFLM reported for the model on the host (bytes);
    `ops` the TFLite builtin operator names the model uses. Input and output specs must
    agree with the golden vectors (shape, quantization), and the model must be int8.
    """
    lib = library_name(name)
    if not is_semver(version):
        raise BundleError(f"version {version!r} is not SemVer 2.0.0 (MAJOR.MINOR.PATCH)")
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", name):
        raise BundleError(f"model name {name!r} may hold only letters, digits, '.', '_', '+', '-'")
    _check_spec(input_spec, golden.input_shape, golden.input_quant, "input")
    _check_spec(output_spec, golden.output_shape, golden.output_quant, "output")
    arena_size = arena_size_with_margin(arena_bytes, arena_margin, min_arena_margin_bytes)
    # Resolve operators first: an unknown operator must fail before anything is built.
    resolver_methods(ops)
    model_sources = model_data_sources(tflite_bytes, symbol)
    root = f"arduino/{lib}"
    files = {
        f"{root}/library.properties": library_properties(
            lib, version, name=name, author=author, maintainer=maintainer, url=url
        ),
        f"{root}/src/{lib}.h": library_header(
            lib,
            name,
            version,
            tflite_bytes,
            input_spec,
            output_spec,
            arena_bytes,
            arena_size,
            ops,
        ),
        f"{root}/src/{MODEL_HEADER}": model_sources[MODEL_HEADER],
        f"{root}/src/model_data.cpp": model_sources[MODEL_SOURCE],
        f"{root}/src/{GOLDEN_HEADER}": golden_header(golden),
        f"{root}/examples/SelfTest/SelfTest.ino": selftest_sketch(lib, ops, symbol, serial_baud),
    }
    return {path: text.encode() for path, text in sorted(files.items())}
