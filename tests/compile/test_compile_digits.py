"""The example project's model (examples/digits: the cnn2d template on scikit-learn digits),
trained briefly, converted to int8 as the pipeline does, compiled and run bit-exact with
TFLM on random inputs and on the real test images; a second case covers the other
templates' operator mixes (ds_cnn2d, ds_cnn1d, autoencoder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from compile_testlib import bit_exact_run, require_gcc

from tinyops.compile import build_host_runner, compile_model, run_host, write_library

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits" / "tinyops.yaml"


def _digits_model() -> tuple[bytes, Any]:
    from sklearn.datasets import load_digits

    from tinyops.optimize.convert import convert
    from tinyops.train.config import ModelConfig, TrainingConfig
    from tinyops.train.trainer import TrainingData, train_model

    project = yaml.safe_load(EXAMPLE.read_text())
    bunch = load_digits()
    x = (bunch.images * project["features"]["blocks"][0]["mul"]).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int64)
    data = TrainingData(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])
    cfg = ModelConfig(template=project["model"]["template"], params=project["model"]["params"])
    result = train_model(cfg, TrainingConfig(epochs=2, learning_rate=3e-3, seed=42), data)
    return convert(result.model, "int8", data.x_train, representative_samples=200), data


def test_digits_example_model_bit_exact(tmp_path: Path) -> None:
    require_gcc()
    tflite, data = _digits_model()
    run = bit_exact_run(tflite, "digits", tmp_path, n=128, seed=3)
    kinds = {op.kind for op in run.compiled.graph.operators}
    assert {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"} <= kinds
    assert run.mismatches() == 0
    # Real images, quantized with the input's scale and zero point: same bytes again, and
    # the compiled model classifies them (better than chance after two epochs).
    from tinyops.optimize.quant import quantize
    from tinyops.targets.tflm import TflmModel

    tflm = TflmModel(tflite, "digits")
    d = tflm.input_details[0]
    images = np.stack([quantize(s, d.scale, d.zero_point) for s in data.x_test[:100]])
    exe = tmp_path / "run_digits"
    ours = run_host(exe, images.reshape(len(images), -1), 10)
    theirs = np.stack([tflm.invoke_raw([im.reshape(d.shape)])[0].reshape(-1) for im in images])
    assert np.array_equal(ours, theirs)
    assert (ours.argmax(axis=1) == data.y_test[:100]).mean() > 0.5


@pytest.mark.parametrize(
    ("template", "params", "shape", "classes"),
    [
        ("ds_cnn2d", {"filters": 8, "blocks": 2}, (49, 10, 1), 12),
        ("ds_cnn1d", {"filters": 8, "blocks": 1}, (32, 3), 4),
        ("autoencoder", {"hidden_units": [16], "bottleneck": 4}, (40,), 0),
    ],
)
def test_other_templates_bit_exact(
    template: str, params: dict[str, Any], shape: tuple[int, ...], classes: int, tmp_path: Path
) -> None:
    import keras

    from tinyops.optimize.convert import convert
    from tinyops.train.config import ModelConfig
    from tinyops.train.models import build_model

    require_gcc()
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(template=template, params=params), shape, classes)
    samples = np.random.default_rng(0).random((32, *shape), dtype=np.float32)
    tflite = convert(model, "int8", samples)
    run = bit_exact_run(tflite, template, tmp_path, seed=5)
    assert run.mismatches() == 0


def test_compiled_library_builds_with_a_plain_makefile_layout(tmp_path: Path) -> None:
    # The library is self-contained: its four files compile with nothing else on the path.
    require_gcc()
    from compile_testlib import fc_model

    compiled = compile_model(fc_model(), "tiny_fc", "tiny_fc.tflite")
    lib = tmp_path / "lib"
    write_library(compiled, lib)
    exe = build_host_runner(lib, "tiny_fc", tmp_path, extra_flags=["-pedantic"])
    # x = [2, 0, 0, 0] at scale 0.5 (real [1, 0, 0, 0]): y = [1, 0.5 + 1] → int8 [1, 2].
    out = run_host(exe, np.array([[2, 0, 0, 0]], dtype=np.int8), 2)
    assert out.tolist() == [[1, 2]]
