"""Magnitude pruning for Keras 3, without tensorflow-model-optimization.

Pruning sets the smallest-magnitude weights of each Dense, Conv and DepthwiseConv kernel to
zero (biases and BatchNormalization parameters are left alone, they are a negligible share
of the weights). Each layer is pruned to the same sparsity, ranked within the layer by |w|.
A sparse kernel is no faster and no smaller in a TFLite flatbuffer (TFLM stores dense
tensors) but compresses well, which shrinks over-the-air updates.

The pruned copy is fine-tuned so the remaining weights compensate. A Keras callback
re-applies the masks after every training batch (the optimizer moves pruned weights off
zero; the mask puts them back), and raises the sparsity along a schedule over the
fine-tuning steps t = 0..T:

    constant:    s(t) = target
    polynomial:  s(t) = target * (1 - (1 - t/T)^3)   (TF-MOT's PolynomialDecay, power 3)

The cubic ramp prunes most weights early and leaves the last steps at nearly the final
sparsity for recovery. Masks only grow: a weight once pruned stays pruned, because masks are
ranked on the already-masked kernel. After fine-tuning, each kernel holds exactly
round(target * size) zeros.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import ModelError

if TYPE_CHECKING:
    import keras

    from tinyops.optimize.config import PruningConfig
    from tinyops.train.config import TaskName, TrainingConfig
    from tinyops.train.trainer import TrainingData

Schedule = Literal["constant", "polynomial"]
# Exponent of the polynomial sparsity ramp (TF-MOT's PolynomialDecay default).
POLYNOMIAL_POWER = 3


def sparsity_at(step: int, total_steps: int, target: float, schedule: Schedule) -> float:
    """Sparsity (share of zero weights, 0..1) to hold after `step` of `total_steps`."""
    if schedule == "constant" or total_steps <= 0:
        return target
    progress = min(max(step / total_steps, 0.0), 1.0)
    return target * (1.0 - (1.0 - progress) ** POLYNOMIAL_POWER)


def magnitude_mask(weights: NDArray[np.floating], sparsity: float) -> NDArray[np.bool_]:
    """Keep-mask of `weights` with exactly round(sparsity * size) smallest |w| dropped.

    Ties are broken by flat index (stable sort), so the mask is deterministic.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be within [0, 1], got {sparsity}")
    flat = np.abs(np.asarray(weights, dtype=np.float64)).ravel()
    prune_count = round(sparsity * flat.size)
    keep = np.ones(flat.size, dtype=np.bool_)
    keep[np.argsort(flat, kind="stable")[:prune_count]] = False
    return keep.reshape(np.shape(weights))


def prunable_kernels(model: keras.Model) -> list[Any]:
    """The kernel variables of the model's Dense, Conv1D/2D and DepthwiseConv1D/2D layers."""
    import keras

    kinds = (
        keras.layers.Dense,
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.DepthwiseConv1D,
        keras.layers.DepthwiseConv2D,
    )
    kernels: list[Any] = []

    def walk(layers: list[Any]) -> None:
        for layer in layers:
            if isinstance(layer, kinds):
                kernels.extend(w for w in layer.weights if w.name == "kernel")
            elif hasattr(layer, "layers"):
                # A nested Sequential or functional model.
                walk(list(layer.layers))

    walk(list(model.layers))
    return kernels


def model_sparsity(model: keras.Model) -> float:
    """Share (0..1) of zero weights over all prunable kernels of `model`."""
    import keras

    zeros = total = 0
    for kernel in prunable_kernels(model):
        values = keras.ops.convert_to_numpy(kernel)
        zeros += int(np.count_nonzero(values == 0))
        total += int(values.size)
    return zeros / total if total else 0.0


class _Masks:
    """Current keep-masks of a model's prunable kernels, applied in place."""

    def __init__(self, kernels: list[Any]) -> None:
        import keras

        self._kernels = kernels
        self._masks = [np.ones(tuple(k.shape), dtype=np.bool_) for k in kernels]
        self._to_numpy = keras.ops.convert_to_numpy

    def apply(self, sparsity: float) -> None:
        """Grow each mask to `sparsity` (ranked on the masked kernel) and zero the kernel."""
        for i, kernel in enumerate(self._kernels):
            masked = self._to_numpy(kernel) * self._masks[i]
            self._masks[i] = magnitude_mask(masked, sparsity) & self._masks[i]
            kernel.assign(masked * self._masks[i])


def _mask_callback(masks: _Masks, total_steps: int, target: float, schedule: Schedule) -> Any:
    import keras

    class MaskAfterBatch(keras.callbacks.Callback):  # type: ignore[misc]
        """Re-applies the pruning masks after every batch, at the scheduled sparsity."""

        def __init__(self) -> None:
            super().__init__()
            self.step = 0

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            masks.apply(sparsity_at(0, total_steps, target, schedule))

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.step += 1
            masks.apply(sparsity_at(self.step, total_steps, target, schedule))

    return MaskAfterBatch()


def prune_model(
    model: keras.Model,
    data: TrainingData,
    cfg: PruningConfig,
    train_cfg: TrainingConfig,
    task: TaskName = "classification",
) -> keras.Model:
    """A magnitude-pruned, fine-tuned copy of `model` (which is left unchanged).

    Fine-tuning uses the train split, `train_cfg`'s batch size, learning rate and seed, and
    `cfg.fine_tune_epochs` epochs; with 0 epochs the copy is pruned one-shot.
    """
    import keras

    from tinyops.train.trainer import compile_model, seed_everything

    seed_everything(train_cfg.seed, train_cfg.deterministic)
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    kernels = prunable_kernels(pruned)
    if not kernels:
        raise ModelError(
            f"model '{model.name}' has no Dense or Conv kernels to prune; remove optimize.pruning"
        )
    masks = _Masks(kernels)
    x_train = np.asarray(data.x_train, dtype=np.float32)
    if cfg.fine_tune_epochs > 0 and len(x_train):
        y_train = x_train if task == "anomaly" else np.asarray(data.y_train, dtype=np.int64)
        total_steps = cfg.fine_tune_epochs * math.ceil(len(x_train) / train_cfg.batch_size)
        compile_model(pruned, task, train_cfg.learning_rate)
        pruned.fit(
            x_train,
            y_train,
            batch_size=train_cfg.batch_size,
            epochs=cfg.fine_tune_epochs,
            shuffle=True,
            callbacks=[_mask_callback(masks, total_steps, cfg.target_sparsity, cfg.schedule)],
            verbose=0,
        )
    # The exact target on every kernel, whatever the schedule's last step rounded to.
    masks.apply(cfg.target_sparsity)
    return pruned
