"""Host evaluation and weight sparsity on the MLPerf Tiny reference models (third-party).

The models are read in place from ../shared/fixtures/mlperf-tiny. Without that folder the
tests skip, except in CI (CI=true), where a missing fixture is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tinyops.optimize.evaluate import compressed_size, evaluate_tflite, tflite_sparsity

pytestmark = pytest.mark.fixtures

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mlperf-tiny"
# file -> (task, sample shape)
MODELS = {
    "kws_ref_model.tflite": ("classification", (49, 10, 1)),
    "vww_96_int8.tflite": ("classification", (96, 96, 3)),
    "pretrainedResnet_quant.tflite": ("classification", (32, 32, 3)),
    "ad01_int8.tflite": ("anomaly", (640,)),
    "str_ww_ref_model.tflite": ("classification", (30, 1, 40)),
}
# Operators whose input 1 is the weight (filter) tensor.
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def fixture_bytes(name: str) -> bytes:
    path = FIXTURES / name
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"MLPerf Tiny fixture missing in CI: {path}")
        pytest.skip(f"MLPerf Tiny fixtures not present at {FIXTURES}")
    return path.read_bytes()


def sparsity_via_interpreter(flatbuffer: bytes) -> float:
    """Independent count: weight tensors read back through the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=flatbuffer,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    zeros = total = 0
    seen: set[int] = set()
    for op in interpreter._get_ops_details():
        if op["op_name"] in WEIGHTED_OPS and int(op["inputs"][1]) not in seen:
            index = int(op["inputs"][1])
            seen.add(index)
            weights = interpreter.get_tensor(index)
            zeros += int(np.count_nonzero(weights == 0))
            total += weights.size
    return zeros / total


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tflite_sparsity_agrees_with_the_interpreter(name: str) -> None:
    flatbuffer = fixture_bytes(name)
    sparsity = tflite_sparsity(flatbuffer)
    # Some reference models are genuinely sparse (the VWW MobileNet: ~83% zero weights).
    assert 0.0 < sparsity < 1.0
    assert sparsity == pytest.approx(sparsity_via_interpreter(flatbuffer), abs=1e-12)
    assert 0 < compressed_size(flatbuffer) < len(flatbuffer)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluate_runs_int8_reference_models(name: str) -> None:
    flatbuffer = fixture_bytes(name)
    task, shape = MODELS[name]
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    result = evaluate_tflite(flatbuffer, x, None, task=task)
    assert len(result.outputs) == 3
    assert np.all(np.isfinite(result.outputs))
    if task == "anomaly":
        assert result.outputs.shape == (3, 640)
        assert result.mse is not None and result.mse > 0
    else:
        # Dequantized softmax: each row sums to ~1.
        np.testing.assert_allclose(result.outputs.sum(axis=1), 1.0, atol=0.05)
        assert result.predictions is not None and result.predictions.shape == (3,)
