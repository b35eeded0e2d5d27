"""TFLite conversion variants, host evaluation and the variant report, on digits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tinyops.errors import ModelError
from tinyops.optimize.config import OptimizeConfig, PruningConfig
from tinyops.optimize.convert import build_variants, convert
from tinyops.optimize.evaluate import (
    compressed_size,
    evaluate_tflite,
    tflite_sparsity,
    variant_report,
)
from tinyops.train.config import ModelConfig, TrainingConfig
from tinyops.train.models import build_model
from tinyops.train.trainer import TrainingData, train_model

pytestmark = pytest.mark.slow

# Operators that a dynamic batch would add and that the fixed batch of 1 must avoid.
DYNAMIC_SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}
# Int8 builtins TFLM implements, enough for every template.
TFLM_INT8_OPS = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "RESHAPE",
    "SOFTMAX",
}


def op_names(flatbuffer: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    return [op["op_name"] for op in interpreter._get_ops_details()]


def io_details(flatbuffer: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


@pytest.fixture(scope="module")
def digits() -> TrainingData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = bunch.target.astype(np.int64)
    return TrainingData(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])


TRAIN = TrainingConfig(epochs=3, learning_rate=1e-2)


@pytest.fixture(scope="module")
def trained(digits: TrainingData) -> tuple[Any, float]:
    cfg = ModelConfig(template="cnn2d", params={"filters": [8], "dense_units": 32})
    result = train_model(cfg, TRAIN, digits)
    return result.model, result.metrics["test_accuracy"]


def test_int8_has_int8_io_and_no_dynamic_shape_ops(
    trained: tuple[Any, float], digits: TrainingData
) -> None:
    model, _ = trained
    flatbuffer = convert(model, "int8", digits.x_train, representative_samples=100)
    inp, out = io_details(flatbuffer)
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    assert list(inp["shape"]) == [1, 8, 8, 1]
    # Softmax output quantization fixed by the TFLite spec: scale 1/256, zero point -128.
    assert out["quantization"] == pytest.approx((1 / 256, -128))
    ops = op_names(flatbuffer)
    assert "FULLY_CONNECTED" in ops and "CONV_2D" in ops
    assert not set(ops) & DYNAMIC_SHAPE_OPS
    assert set(ops) <= TFLM_INT8_OPS


def test_conversion_is_deterministic(trained: tuple[Any, float], digits: TrainingData) -> None:
    model, _ = trained
    for variant in ("int8", "float32"):
        first = convert(model, variant, digits.x_train, representative_samples=50)
        second = convert(model, variant, digits.x_train, representative_samples=50)
        assert first == second, variant


def test_calibration_uses_the_first_n_samples(
    trained: tuple[Any, float], digits: TrainingData
) -> None:
    model, _ = trained
    first_50 = convert(model, "int8", digits.x_train, representative_samples=50)
    # Only the first 50 rows calibrate: changing later rows changes nothing.
    altered = digits.x_train.copy()
    altered[50:] = 1.0
    assert convert(model, "int8", altered, representative_samples=50) == first_50
    # Changing the calibration rows changes the quantization parameters.
    assert convert(model, "int8", digits.x_train[100:], representative_samples=50) != first_50


def test_float_variants_keep_float_io(trained: tuple[Any, float]) -> None:
    model, _ = trained
    sizes = {}
    for variant in ("float32", "float16", "dynamic"):
        flatbuffer = convert(model, variant)
        inp, out = io_details(flatbuffer)
        assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
        assert not set(op_names(flatbuffer)) & DYNAMIC_SHAPE_OPS
        sizes[variant] = len(flatbuffer)
    # float16 halves the 4-byte weights, dynamic stores the big dense kernel in 1 byte.
    assert sizes["float16"] < sizes["float32"]
    assert sizes["dynamic"] < sizes["float16"]
    assert "DEQUANTIZE" in op_names(convert(model, "float16"))


def test_int8_needs_representative_samples(trained: tuple[Any, float]) -> None:
    model, _ = trained
    with pytest.raises(ModelError, match="representative samples"):
        convert(model, "int8", None)
    with pytest.raises(ModelError, match=r"expected the model input shape \(8, 8, 1\)"):
        convert(model, "int8", np.zeros((4, 64), np.float32))


def test_unconvertible_model_raises_model_error_with_the_converter_log() -> None:
    import keras

    inputs = keras.Input((8,))
    # An FFT needs TensorFlow (flex) kernels, which no TFLite builtin provides.
    outputs = keras.layers.Lambda(lambda t: keras.ops.fft2((t, t))[0])(inputs)
    model = keras.Model(inputs, outputs, name="fft")
    with pytest.raises(ModelError, match="model 'fft' to the float32 variant failed") as info:
        convert(model, "float32")
    assert "FFT2D" in str(info.value)


def test_float32_tflite_matches_keras(trained: tuple[Any, float], digits: TrainingData) -> None:
    model, accuracy = trained
    result = evaluate_tflite(convert(model, "float32"), digits.x_test, digits.y_test)
    expected = model.predict(digits.x_test, verbose=0)
    np.testing.assert_allclose(result.outputs, expected, atol=1e-5)
    assert result.accuracy == pytest.approx(accuracy, abs=1e-6)
    assert result.predictions is not None
    np.testing.assert_array_equal(result.predictions, np.argmax(expected, axis=1))
    assert result.mse is None


def test_int8_accuracy_is_within_a_few_points_of_float(
    trained: tuple[Any, float], digits: TrainingData
) -> None:
    model, accuracy = trained
    assert accuracy > 0.7  # the baseline is a real classifier, not chance (0.1)
    flatbuffer = convert(model, "int8", digits.x_train[:200])
    result = evaluate_tflite(flatbuffer, digits.x_test, digits.y_test)
    assert result.accuracy is not None
    assert abs(result.accuracy - accuracy) <= 0.03
    # Dequantized softmax rows still sum to ~1 (int8 step 1/256 per class).
    np.testing.assert_allclose(result.outputs.sum(axis=1), 1.0, atol=10 / 256)


def test_variant_report_with_pruning(trained: tuple[Any, float], digits: TrainingData) -> None:
    model, accuracy = trained
    cfg = OptimizeConfig(
        representative_samples=100,
        pruning=PruningConfig(target_sparsity=0.75, fine_tune_epochs=1),
    )
    variants = build_variants(model, digits, cfg, TRAIN, task="classification")
    assert list(variants) == ["float32", "float16", "dynamic", "int8", "pruned-int8"]
    rows = variant_report(variants, digits.x_test, digits.y_test, accuracy)
    by_name = {row["variant"]: row for row in rows}
    assert [row["variant"] for row in rows] == list(variants)
    for row in rows:
        assert row["size_bytes"] == len(variants[row["variant"]])
        assert row["compressed_bytes"] == compressed_size(variants[row["variant"]])
        assert row["accuracy"] is not None and row["delta_vs_float"] is not None
        assert row["delta_vs_float"] == pytest.approx(row["accuracy"] - accuracy)
        assert row["mse"] is None
    assert abs(by_name["float32"]["delta_vs_float"] or 0.0) < 1e-6
    # Pruned weights are zeros: same raw size as int8, but they compress.
    assert by_name["pruned-int8"]["size_bytes"] == by_name["int8"]["size_bytes"]
    assert by_name["pruned-int8"]["compressed_bytes"] < by_name["int8"]["compressed_bytes"]
    # Quantization can zero a few more tiny weights, never fewer than pruned.
    assert 0.75 <= by_name["pruned-int8"]["sparsity"] < 0.8
    assert by_name["int8"]["sparsity"] < 0.05
    assert by_name["float32"]["sparsity"] == 0.0


@pytest.mark.parametrize(
    ("template", "params", "shape", "classes"),
    [
        ("mlp", {"hidden_units": [8]}, (8, 8, 1), 10),
        ("ds_cnn2d", {"filters": 8, "blocks": 2}, (49, 10, 1), 12),
        ("ds_cnn1d", {"filters": 8, "blocks": 1}, (32, 3), 4),
        ("autoencoder", {"hidden_units": [16], "bottleneck": 4}, (40,), 0),
    ],
)
def test_every_template_converts_to_tflm_int8_ops(
    template: str, params: dict[str, Any], shape: tuple[int, ...], classes: int
) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(template=template, params=params), shape, classes)
    samples = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    ops = op_names(convert(model, "int8", samples))
    # BatchNormalization is folded away; nothing outside the TFLM int8 set remains.
    assert set(ops) <= TFLM_INT8_OPS, set(ops) - TFLM_INT8_OPS


def test_autoencoder_int8_reconstruction_error(digits: TrainingData) -> None:
    flat = TrainingData(
        digits.x_train.reshape(-1, 64),
        digits.y_train,
        digits.x_val.reshape(-1, 64),
        digits.y_val,
        digits.x_test.reshape(-1, 64),
        digits.y_test,
    )
    cfg = ModelConfig(template="autoencoder", params={"hidden_units": [32], "bottleneck": 8})
    result = train_model(cfg, TRAIN, flat)
    flatbuffer = convert(result.model, "int8", flat.x_train[:200])
    evaluation = evaluate_tflite(flatbuffer, flat.x_test, None, task="anomaly")
    assert evaluation.accuracy is None and evaluation.predictions is None
    assert evaluation.outputs.shape == (len(flat.x_test), 64)
    assert evaluation.mse is not None
    # int8 reconstruction error close to the float model's (relative, within 25%).
    assert evaluation.mse == pytest.approx(result.metrics["test_mse"], rel=0.25)
    rows = variant_report(
        {"int8": flatbuffer}, flat.x_test, None, result.metrics["test_mse"], task="anomaly"
    )
    assert rows[0]["accuracy"] is None
    assert rows[0]["delta_vs_float"] == pytest.approx(evaluation.mse - result.metrics["test_mse"])


def test_evaluate_rejects_mismatched_samples(trained: tuple[Any, float]) -> None:
    model, _ = trained
    with pytest.raises(ModelError, match=r"expected batch 1 and sample shape \(8, 8, 1\)"):
        evaluate_tflite(convert(model, "float32"), np.zeros((2, 64), np.float32), None)


def test_tflite_sparsity_of_a_known_kernel() -> None:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    # 4 zeros out of 8 kernel weights; the bias (non-zero) is not counted.
    kernel = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    model.layers[0].set_weights([kernel, np.array([0.5, -0.5], dtype=np.float32)])
    samples = np.random.default_rng(1).random((8, 4), dtype=np.float32)
    for variant in ("float32", "float16", "dynamic", "int8"):
        assert tflite_sparsity(convert(model, variant, samples)) == 0.5, variant


def test_tflite_sparsity_rejects_garbage() -> None:
    with pytest.raises(ModelError, match="not a readable TFLite flatbuffer"):
        tflite_sparsity(b"not a model")


def test_compressed_size_bounds() -> None:
    # 4096 zero bytes compress to a few dozen bytes; random bytes do not compress.
    assert compressed_size(bytes(4096)) < 64
    noise = np.random.default_rng(0).bytes(4096)
    assert compressed_size(noise) >= 4096
