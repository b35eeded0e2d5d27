from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from targets_testlib import MLPERF_TABLE

from tinyops.errors import DataError, ModelError, UnsupportedOperator
from tinyops.targets import tflm
from tinyops.targets.tflm import ArenaUsage, TflmModel, parse_allocations

ALLOCATIONS = """\
[RecordingMicroAllocator] Arena allocation total 24272 bytes
[RecordingMicroAllocator] Arena allocation head 16000 bytes
[RecordingMicroAllocator] Arena allocation tail 8272 bytes
[RecordingMicroAllocator] 'TfLiteEvalTensor data' used 840 bytes with alignment overhead
"""


def test_parse_allocations() -> None:
    assert parse_allocations(ALLOCATIONS) == ArenaUsage(total=24272, head=16000, tail=8272)


def test_parse_allocations_without_totals_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="lacks the arena head, tail, total"):
        parse_allocations("nothing printed\n")


@pytest.mark.fixtures
@pytest.mark.parametrize("name", sorted(MLPERF_TABLE))
def test_arena_equals_the_fixture_table(name: str, mlperf_bytes: Callable[[str], bytes]) -> None:
    model = TflmModel(mlperf_bytes(name), source=name)
    assert model.arena.total == MLPERF_TABLE[name][2]
    assert model.arena.head + model.arena.tail == model.arena.total


@pytest.mark.fixtures
def test_kws_io_details(mlperf_bytes: Callable[[str], bytes]) -> None:
    model = TflmModel(mlperf_bytes("kws_ref_model.tflite"), isolate=False)
    (inp,) = model.input_details
    (out,) = model.output_details
    assert (inp.shape, inp.dtype, inp.zero_point) == ((1, 49, 10, 1), "int8", 83)
    assert inp.scale == pytest.approx(0.5847029)
    assert (out.shape, out.dtype, out.scale, out.zero_point) == ((1, 12), "int8", 1 / 256, -128)


def test_fc_inference_by_hand(fc_model_bytes: bytes) -> None:
    model = TflmModel(fc_model_bytes, source="fc.tflite")
    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, -3.0]], np.float32)
    # Sample 1: y = [1·1, 0.5·(1+2+3+4) + 1] = [1, 6].
    # Sample 2: y = [0.5, 0.5·(-1.5) + 1] = [0.5, 0.25]; output scale 1 rounds half away
    # from zero: [1, 0].
    np.testing.assert_array_equal(model.run(x), [[1.0, 6.0], [1.0, 0.0]])
    # The int8 path underneath: x quantized with scale 0.5 is [2, 4, 6, 8].
    (raw,) = model.invoke_raw([np.array([[2, 4, 6, 8]], np.int8)])
    np.testing.assert_array_equal(raw, [[1, 6]])


def test_run_rejects_wrong_sample_shape(fc_model_bytes: bytes) -> None:
    model = TflmModel(fc_model_bytes, source="fc.tflite", isolate=False)
    with pytest.raises(DataError, match=r"fc\.tflite: each input sample must have shape \[4\]"):
        model.run(np.zeros((3, 5), np.float32))
    with pytest.raises(DataError, match="input 0 must be int8 of shape"):
        model.invoke_raw([np.zeros((1, 4), np.float32)])


@pytest.mark.fixtures
def test_tflm_agrees_with_litert(mlperf_bytes: Callable[[str], bytes]) -> None:
    """TFLM's int8 kernels against LiteRT's on the same quantized inputs: ≤ 1 LSB apart."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = mlperf_bytes("kws_ref_model.tflite")
    model = TflmModel(data, isolate=False)
    litert = Interpreter(
        model_content=data,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    litert.allocate_tensors()
    rng = np.random.default_rng(7)
    for _ in range(4):
        q = rng.integers(-128, 128, size=(1, 49, 10, 1), dtype=np.int8)
        litert.set_tensor(litert.get_input_details()[0]["index"], q)
        litert.invoke()
        expected = litert.get_tensor(litert.get_output_details()[0]["index"])
        (got,) = model.invoke_raw([q])
        assert np.max(np.abs(got.astype(int) - expected.astype(int))) <= 1


def test_corrupt_bytes_are_a_model_error(fc_model_bytes: bytes) -> None:
    with pytest.raises(ModelError, match=r"^cut\.tflite: corrupt or truncated"):
        TflmModel(fc_model_bytes[:-40], source="cut.tflite")
    with pytest.raises(ModelError, match=r"^text\.tflite: not a TFLite model"):
        TflmModel(b"this is a README, not a model" * 4, source="text.tflite")


def test_prepare_failure_is_a_model_error(fc_model_bytes: bytes) -> None:
    # Output scale 0: TFLM's FULLY_CONNECTED prepare rejects the requantization multiplier.
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(fc_model_bytes, 0))
    m.subgraphs[0].tensors[3].quantization.scale = [0.0]
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ModelError, match=r"zero\.tflite: the TFLM runtime cannot load .*FULLY"):
        TflmModel(bytes(builder.Output()), source="zero.tflite")


def test_unsupported_operator_is_named(flex_model_bytes: bytes) -> None:
    with pytest.raises(UnsupportedOperator, match=r"flex\.tflite: .* operator\(s\) FlexRFFT2D"):
        TflmModel(flex_model_bytes, source="flex.tflite")


def test_a_crash_in_the_child_becomes_a_model_error(
    fc_model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The isolating child is replaced by one that dies the way a corrupt model kills TFLM.
    dying = "import os, sys; sys.stderr.write('Failed to allocate'); sys.stderr.flush(); os.abort()"
    monkeypatch.setattr(tflm, "_ISOLATED_LOAD", dying)
    with pytest.raises(
        ModelError, match=r"boom\.tflite: the TFLM runtime crashed \(SIGABRT\).*said: Failed to"
    ):
        TflmModel(fc_model_bytes, source="boom.tflite")


def test_host_arena_is_an_upper_bound(fc_model_bytes: bytes) -> None:
    from tinyops.targets.ops import load_model

    model = TflmModel(fc_model_bytes, isolate=False)
    # Activations: x (4 bytes) + y (2 bytes), no reuse; x4 scratch + model + 1 MiB, rounded
    # up to a multiple of 64 bytes.
    need = 4 * (4 + 2) + len(fc_model_bytes) + 1024 * 1024
    expected = (need + 63) // 64 * 64
    assert tflm.host_arena_bytes(load_model(fc_model_bytes), len(fc_model_bytes)) == expected
    assert model.arena.total < expected
