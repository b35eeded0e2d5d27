"""Model templates: shapes, TFLM-friendly layers, classifier/autoencoder heads."""

from __future__ import annotations

import numpy as np
import pytest

from tinyops.errors import ModelError
from tinyops.train.config import ModelConfig
from tinyops.train.models import build_model

# Layer classes whose TFLite lowering TFLM runs as builtins (with batch fixed to 1).
ALLOWED_LAYERS = {
    "InputLayer",
    "Conv2D",
    "DepthwiseConv2D",
    "Dense",
    "MaxPooling2D",
    "AveragePooling2D",
    "BatchNormalization",
    "ReLU",
    "Reshape",
    "Flatten",
    "Softmax",
    "Dropout",
}

CASES = [
    ("mlp", {"hidden_units": [16, 8], "dropout": 0.1}, (8, 8, 1), 10),
    ("cnn2d", {"filters": [4, 8], "dense_units": 16, "dropout": 0.1}, (8, 8, 1), 10),
    ("ds_cnn2d", {"filters": 8, "blocks": 2}, (49, 10, 1), 12),
    ("ds_cnn1d", {"filters": 8, "blocks": 2}, (32, 3), 4),
    ("autoencoder", {"hidden_units": [16, 16], "bottleneck": 4}, (64,), 0),
]


@pytest.mark.parametrize(("template", "params", "shape", "classes"), CASES)
def test_template_shapes_and_layers(
    template: str, params: dict[str, object], shape: tuple[int, ...], classes: int
) -> None:
    model = build_model(ModelConfig(template=template, params=params), shape, classes)
    assert tuple(model.input.shape) == (None, *shape)
    used = {type(layer).__name__ for layer in model.layers}
    assert used <= ALLOWED_LAYERS, used - ALLOWED_LAYERS
    x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
    y = np.asarray(model(x, training=False))
    if template == "autoencoder":
        assert y.shape == (2, *shape)
        assert type(model.layers[-1]).__name__ == "Dense"  # linear output
    else:
        assert y.shape == (2, classes)
        assert type(model.layers[-1]).__name__ == "Softmax"
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


def test_ds_cnn2d_follows_the_mlperf_kws_layout() -> None:
    model = build_model(ModelConfig(template="ds_cnn2d"), (49, 10, 1), 12)
    kinds = [type(layer).__name__ for layer in model.layers]
    # Default: 4 depthwise-separable blocks, each depthwise + pointwise conv.
    assert kinds.count("DepthwiseConv2D") == 4
    assert kinds.count("Conv2D") == 5
    assert kinds.count("BatchNormalization") == 9
    first = model.layers[1]
    assert first.kernel_size == (10, 4) and first.strides == (2, 2) and first.filters == 64
    # (49, 10) strided by 2 with 'same' padding -> (25, 5): pooled over in one window.
    pool = next(layer for layer in model.layers if type(layer).__name__ == "AveragePooling2D")
    assert pool.pool_size == (25, 5)


def test_ds_cnn1d_uses_2d_kernels_over_time() -> None:
    model = build_model(ModelConfig(template="ds_cnn1d", params={"blocks": 1}), (30, 40), 3)
    depthwise = next(layer for layer in model.layers if type(layer).__name__ == "DepthwiseConv2D")
    assert depthwise.kernel_size == (3, 1)


def test_autoencoder_mirrors_the_encoder() -> None:
    cfg = ModelConfig(template="autoencoder", params={"hidden_units": [32, 16], "bottleneck": 4})
    model = build_model(cfg, (640,), 0)
    units = [layer.units for layer in model.layers if type(layer).__name__ == "Dense"]
    assert units == [32, 16, 4, 16, 32, 640]


def test_same_seed_builds_same_initial_weights() -> None:
    import keras

    cfg = ModelConfig(template="cnn2d", params={"filters": [4]})
    keras.utils.set_random_seed(7)
    first = build_model(cfg, (8, 8, 1), 10).get_weights()
    keras.utils.set_random_seed(7)
    second = build_model(cfg, (8, 8, 1), 10).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    ("template", "shape", "classes", "expected"),
    [
        ("cnn2d", (64,), 10, r"\(height, width, channels\)"),
        ("ds_cnn2d", (49, 10), 10, r"\(time, features, channels\)"),
        ("ds_cnn1d", (49, 10, 1), 10, r"\(time, channels\)"),
        ("mlp", (8, 8, 1), 1, "at least 2 classes"),
    ],
)
def test_bad_input_shape_or_classes_raise_model_error(
    template: str, shape: tuple[int, ...], classes: int, expected: str
) -> None:
    with pytest.raises(ModelError, match=expected):
        build_model(ModelConfig(template=template), shape, classes)
