"""Magnitude pruning: schedule and mask goldens, then a real prune + fine-tune."""

from __future__ import annotations

import numpy as np
import pytest

from tinyops.optimize.config import PruningConfig
from tinyops.optimize.pruning import (
    magnitude_mask,
    model_sparsity,
    prunable_kernels,
    prune_model,
    sparsity_at,
)
from tinyops.train.config import ModelConfig, TrainingConfig
from tinyops.train.trainer import TrainingData, train_model


def test_polynomial_schedule_golden() -> None:
    # target * (1 - (1 - t/T)^3) with target 0.8, T = 10.
    assert sparsity_at(0, 10, 0.8, "polynomial") == 0.0
    assert sparsity_at(5, 10, 0.8, "polynomial") == pytest.approx(0.8 * (1 - 0.5**3))  # 0.7
    assert sparsity_at(9, 10, 0.8, "polynomial") == pytest.approx(0.8 * (1 - 0.1**3))  # 0.7992
    assert sparsity_at(10, 10, 0.8, "polynomial") == pytest.approx(0.8)
    assert sparsity_at(12, 10, 0.8, "polynomial") == pytest.approx(0.8)  # clamped


def test_constant_schedule_golden() -> None:
    assert sparsity_at(0, 10, 0.5, "constant") == 0.5
    assert sparsity_at(7, 10, 0.5, "constant") == 0.5


def test_magnitude_mask_golden() -> None:
    weights = np.array([[0.5, -0.1], [0.3, -0.7]], dtype=np.float32)
    # Half of 4 weights: drop the two smallest |w|, -0.1 and 0.3.
    np.testing.assert_array_equal(magnitude_mask(weights, 0.5), [[True, False], [False, True]])
    # 0.6 * 4 = 2.4 -> round to 2 zeros; 0.7 * 4 = 2.8 -> 3 (drops 0.5 too).
    assert int((~magnitude_mask(weights, 0.6)).sum()) == 2
    np.testing.assert_array_equal(magnitude_mask(weights, 0.7), [[False, False], [False, True]])
    np.testing.assert_array_equal(magnitude_mask(weights, 0.0), np.ones((2, 2), bool))


def test_magnitude_mask_breaks_ties_by_position() -> None:
    # Equal magnitudes: the first by flat index is dropped first.
    np.testing.assert_array_equal(
        magnitude_mask(np.array([1.0, -1.0, 1.0, 2.0]), 0.5), [False, False, True, True]
    )


def test_magnitude_mask_rejects_bad_sparsity() -> None:
    with pytest.raises(ValueError, match="within"):
        magnitude_mask(np.ones(3), 1.5)


@pytest.fixture(scope="module")
def trained() -> tuple[object, TrainingData, TrainingConfig]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., np.newaxis]
    y = bunch.target.astype(np.int64)
    data = TrainingData(x[:1200], y[:1200], x[1200:1500], y[1200:1500], x[1500:], y[1500:])
    train_cfg = TrainingConfig(epochs=3, learning_rate=1e-2)
    cfg = ModelConfig(template="cnn2d", params={"filters": [8], "dense_units": 32})
    return train_model(cfg, train_cfg, data).model, data, train_cfg


def _accuracy(model: object, data: TrainingData) -> float:
    probs = model.predict(data.x_test, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == data.y_test))


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["polynomial", "constant"])
def test_prune_model_hits_the_target_per_layer(
    trained: tuple[object, TrainingData, TrainingConfig], schedule: str
) -> None:
    model, data, train_cfg = trained
    before = [w.copy() for w in model.get_weights()]
    cfg = PruningConfig(target_sparsity=0.7, fine_tune_epochs=2, schedule=schedule)
    pruned = prune_model(model, data, cfg, train_cfg)

    # The original is untouched.
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    assert model_sparsity(model) == 0.0
    # Every kernel (conv 3x3x1x8 = 72, dense 128x32 = 4096, logits 32x10 = 320) holds
    # round(0.7 * size) zeros exactly: 50, 2867, 224.
    kernels = prunable_kernels(pruned)
    zeros = [int(np.count_nonzero(np.asarray(k) == 0)) for k in kernels]
    assert zeros == [50, 2867, 224]
    assert model_sparsity(pruned) == pytest.approx((50 + 2867 + 224) / (72 + 4096 + 320))
    # Fine-tuning kept the model useful (10 classes: chance is 0.1).
    assert _accuracy(pruned, data) > 0.6
    assert _accuracy(pruned, data) > _accuracy(model, data) - 0.15


@pytest.mark.slow
def test_one_shot_prune_without_fine_tuning(
    trained: tuple[object, TrainingData, TrainingConfig],
) -> None:
    model, data, train_cfg = trained
    cfg = PruningConfig(target_sparsity=0.5, fine_tune_epochs=0)
    pruned = prune_model(model, data, cfg, train_cfg)
    # With no fine-tuning, the kept weights are exactly the original largest ones.
    for original, kernel in zip(prunable_kernels(model), prunable_kernels(pruned), strict=True):
        w = np.asarray(original)
        expected = w * magnitude_mask(w, 0.5)
        np.testing.assert_array_equal(np.asarray(kernel), expected)
