"""Seeded training on scikit-learn's bundled digits: metrics, determinism, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from tinyops.errors import DataError
from tinyops.train.config import ModelConfig, TrainingConfig
from tinyops.train.trainer import (
    ANOMALY_PERCENTILE,
    TrainingData,
    reconstruction_errors,
    train_model,
)

pytestmark = pytest.mark.slow

TINY_CNN = ModelConfig(template="cnn2d", params={"filters": [4], "dense_units": 16})
FAST = TrainingConfig(epochs=2, learning_rate=1e-2)


def digits(flat: bool = False) -> TrainingData:
    """Digits 8x8 in [0, 1]: 1200 train, 300 val, 297 test samples, in file order."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    x = x.reshape(len(x), 64) if flat else x[..., np.newaxis]
    y = bunch.target.astype(np.int64)
    return TrainingData(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])


def test_classifier_metrics_and_history() -> None:
    result = train_model(TINY_CNN, FAST, digits())
    assert result.task == "classification"
    assert set(result.metrics) == {"test_accuracy", "test_loss"}
    # 10 classes: chance is 0.1; two epochs of a tiny CNN get well above it.
    assert result.metrics["test_accuracy"] > 0.6
    assert result.epochs_run == 2
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in result.history.values())
    assert result.history["loss"][1] < result.history["loss"][0]


def test_same_seed_gives_bit_identical_weights() -> None:
    data = digits()
    first = train_model(TINY_CNN, FAST, data).model.get_weights()
    second = train_model(TINY_CNN, FAST, data).model.get_weights()
    assert len(first) == len(second)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    # And the seed matters: a different one gives different weights.
    other = train_model(TINY_CNN, FAST.model_copy(update={"seed": 7}), data).model.get_weights()
    assert not np.array_equal(first[0], other[0])


def test_early_stopping_stops_when_validation_loss_rises() -> None:
    data = digits()
    # Validation labels shifted by one class: the better the model fits train, the worse
    # its validation loss, so with patience 1 training stops after a few epochs.
    data.y_val = (data.y_val + 1) % 10
    cfg = TrainingConfig(epochs=15, learning_rate=1e-2, early_stopping_patience=1)
    result = train_model(TINY_CNN, cfg, data)
    assert result.epochs_run < 15
    assert len(result.history["val_loss"]) == result.epochs_run


def test_autoencoder_metrics_threshold_is_train_error_percentile() -> None:
    data = digits(flat=True)
    cfg = ModelConfig(template="autoencoder", params={"hidden_units": [32], "bottleneck": 8})
    result = train_model(cfg, FAST, data)
    assert result.task == "anomaly"
    assert set(result.metrics) == {"test_mse", "anomaly_threshold"}
    train_errors = reconstruction_errors(result.model, data.x_train)
    expected = float(np.percentile(train_errors, ANOMALY_PERCENTILE))
    assert result.metrics["anomaly_threshold"] == pytest.approx(expected, rel=1e-6)
    test_mse = float(np.mean(reconstruction_errors(result.model, data.x_test)))
    assert result.metrics["test_mse"] == pytest.approx(test_mse, rel=1e-6)
    # Reconstructing is learned: better than predicting all zeros (mean of x^2).
    assert result.metrics["test_mse"] < float(np.mean(data.x_test**2))


def test_reconstruction_errors_golden() -> None:
    import keras

    # A linear "autoencoder" that halves its input: recon = x / 2.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    model.layers[0].set_weights([np.array([[0.5, 0.0], [0.0, 0.5]], dtype=np.float32)])
    x = np.array([[2.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    # Sample 0: ((1 - 2)^2 + 0) / 2 = 0.5; sample 1: (0 + (2 - 4)^2) / 2 = 2.0.
    np.testing.assert_allclose(reconstruction_errors(model, x), [0.5, 2.0])


def test_inconsistent_splits_raise_data_error() -> None:
    data = digits()
    data.y_val = data.y_val[:-1]
    with pytest.raises(DataError, match="split 'val': 300 feature rows but 299 labels"):
        train_model(TINY_CNN, FAST, data)


def test_labels_out_of_range_raise_data_error() -> None:
    data = digits()
    data.num_classes = 5
    with pytest.raises(DataError, match=r"expected class ids in \[0, 4\]"):
        train_model(TINY_CNN, FAST, data)
