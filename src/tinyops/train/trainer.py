"""Seeded, reproducible training of a template model, and its test-split metrics.

Reproducibility: `keras.utils.set_random_seed(seed)` seeds Python, NumPy and TensorFlow
before the model is built, so weight initialization, dropout masks and Keras' per-epoch
shuffle of the training indices (the only shuffling done) all derive from `seed`; with
`deterministic=True`, `tf.config.experimental.enable_op_determinism()` also makes
TensorFlow pick deterministic kernels. Two trainings with the same config and data then
give bit-identical weights. (Op determinism is process-wide and cannot be turned off
again once enabled, which suits a CLI process that trains one model.)

Tasks: classifiers learn integer labels with sparse categorical cross-entropy and report
`test_accuracy` and `test_loss`. The autoencoder learns to reconstruct its input with mean
squared error (labels are not used for training); it reports `test_mse`, the mean per-sample
reconstruction error on the test split, and `anomaly_threshold`, the 99th percentile of the
per-sample reconstruction errors on the training split: a sample whose error exceeds it is
flagged anomalous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import DataError
from tinyops.train.config import ModelConfig, TaskName, TrainingConfig
from tinyops.train.models import build_model

if TYPE_CHECKING:
    import keras

# Percentile (in %) of the training reconstruction errors used as the anomaly threshold.
ANOMALY_PERCENTILE = 99.0
# Samples per inference batch when computing reconstruction errors (memory bound only).
PREDICT_BATCH = 256


@dataclass
class TrainingData:
    """The three splits of a dataset snapshot, as arrays with the batch axis first.

    `x_*` are float features, one sample per row, all splits with the same sample shape.
    `y_*` are integer class ids for classifiers; for the autoencoder they are not used in
    training (by convention 0 = normal, 1 = anomalous). A split may be empty except train
    and test. `num_classes` defaults to the largest label + 1.
    """

    x_train: NDArray[Any]
    y_train: NDArray[Any]
    x_val: NDArray[Any]
    y_val: NDArray[Any]
    x_test: NDArray[Any]
    y_test: NDArray[Any]
    num_classes: int | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (without the batch axis)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def classes(self) -> int:
        """The number of classes: explicit, or the largest label in any split + 1."""
        if self.num_classes is not None:
            return self.num_classes
        labels = [y for y in (self.y_train, self.y_val, self.y_test) if len(y)]
        return int(max(int(np.max(y)) for y in labels)) + 1

    def check(self, task: TaskName) -> None:
        """Raise DataError unless the splits are consistent for `task`."""
        splits = {
            "train": (self.x_train, self.y_train),
            "val": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }
        for name in ("train", "test"):
            if len(splits[name][0]) == 0:
                raise DataError(f"the {name} split is empty; it needs at least one sample")
        sample_shape = self.x_train.shape[1:]
        for name, (x, y) in splits.items():
            if len(x) != len(y):
                raise DataError(
                    f"split '{name}': {len(x)} feature rows but {len(y)} labels; "
                    "expected one label per row"
                )
            if len(x) and x.shape[1:] != sample_shape:
                raise DataError(
                    f"split '{name}': samples of shape {x.shape[1:]}, expected "
                    f"{sample_shape} like the train split"
                )
        if task != "classification":
            return
        classes = self.classes()
        for name, (_, y) in splits.items():
            if not len(y):
                continue
            if not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"split '{name}': labels have dtype {y.dtype}, expected integer class ids"
                )
            if int(np.min(y)) < 0 or int(np.max(y)) >= classes:
                raise DataError(
                    f"split '{name}': labels span [{int(np.min(y))}, {int(np.max(y))}], "
                    f"expected class ids in [0, {classes - 1}]"
                )


@dataclass
class TrainResult:
    """A trained model, its per-epoch history and its test-split metrics."""

    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, float]
    epochs_run: int
    task: TaskName


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TensorFlow; optionally force deterministic TF kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def compile_model(model: keras.Model, task: TaskName, learning_rate: float) -> None:
    """Compile with Adam and the task's loss (cross-entropy over probabilities, or MSE)."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if task == "classification":
        model.compile(
            optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    else:
        model.compile(optimizer=optimizer, loss="mse")


def reconstruction_errors(model: keras.Model, x: NDArray[Any]) -> NDArray[np.float64]:
    """Per-sample mean squared reconstruction error of an autoencoder, shape (N,)."""
    x32 = np.asarray(x, dtype=np.float32)
    recon = np.asarray(model.predict(x32, batch_size=PREDICT_BATCH, verbose=0), dtype=np.float64)
    diff = recon.reshape(len(x32), -1) - x32.reshape(len(x32), -1).astype(np.float64)
    return np.asarray(np.mean(diff * diff, axis=1), dtype=np.float64)


def train_model(
    model_cfg: ModelConfig,
    train_cfg: TrainingConfig,
    data: TrainingData,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Build `model_cfg`'s template for `data`, fit it per `train_cfg`, evaluate on test.

    `callbacks` are extra Keras callbacks (for instance a run tracker's per-epoch metric
    logger). With `early_stopping_patience`, training stops once the validation loss (the
    training loss when there is no validation split) has not improved for that many epochs,
    and the best epoch's weights are kept.
    """
    import keras

    task = model_cfg.task
    data.check(task)
    # Layer names come from process-wide counters ("conv2d", "conv2d_1", ...) and end up
    # in the .tflite; a fresh session makes a second training in one process byte-identical.
    keras.backend.clear_session()
    seed_everything(train_cfg.seed, train_cfg.deterministic)
    num_classes = data.classes() if task == "classification" else 0
    model = build_model(model_cfg, data.input_shape, num_classes)
    compile_model(model, task, train_cfg.learning_rate)

    x_train = np.asarray(data.x_train, dtype=np.float32)
    x_val = np.asarray(data.x_val, dtype=np.float32)
    x_test = np.asarray(data.x_test, dtype=np.float32)
    if task == "classification":
        y_train: NDArray[Any] = np.asarray(data.y_train, dtype=np.int64)
        y_val: NDArray[Any] = np.asarray(data.y_val, dtype=np.int64)
    else:
        y_train, y_val = x_train, x_val
    has_val = len(x_val) > 0

    all_callbacks: list[Any] = list(callbacks or [])
    if train_cfg.early_stopping_patience is not None:
        all_callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss" if has_val else "loss",
                patience=train_cfg.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    fit = model.fit(
        x_train,
        y_train,
        batch_size=train_cfg.batch_size,
        epochs=train_cfg.epochs,
        validation_data=(x_val, y_val) if has_val else None,
        shuffle=True,
        callbacks=all_callbacks,
        verbose=0,
    )
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    epochs_run = len(history.get("loss", []))

    metrics: dict[str, float]
    if task == "classification":
        scores = model.evaluate(
            x_test,
            np.asarray(data.y_test, dtype=np.int64),
            batch_size=train_cfg.batch_size,
            verbose=0,
            return_dict=True,
        )
        metrics = {
            "test_accuracy": float(scores["accuracy"]),
            "test_loss": float(scores["loss"]),
        }
    else:
        train_errors = reconstruction_errors(model, x_train)
        test_errors = reconstruction_errors(model, x_test)
        metrics = {
            "test_mse": float(np.mean(test_errors)),
            "anomaly_threshold": float(np.percentile(train_errors, ANOMALY_PERCENTILE)),
        }
    return TrainResult(
        model=model,
        history=history,
        metrics=metrics,
        epochs_run=epochs_run,
        task=task,
    )
