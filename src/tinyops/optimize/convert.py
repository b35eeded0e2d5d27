"""Keras model → TFLite flatbuffer, in the variants a microcontroller project compares.

The batch is fixed to 1: the model is traced as a `tf.function` whose input signature is
`[1, *input_shape]` and converted from that concrete function. With a dynamic (None)
batch, Flatten and Reshape would be emitted as SHAPE, STRIDED_SLICE and PACK operators
that compute the batch at run time; with a static batch they fold into one RESHAPE with a
constant shape, and every tensor has a static size, which the MCU's arena planner needs.
The Keras variables are handed to the converter through a `tf.Module` that tracks them, so
the converter freezes them into constants (passing the Keras model itself leaves
READ_VARIABLE operators that calibration cannot run).

Variants:
- `float32`: no optimization.
- `float16`: `Optimize.DEFAULT` with `supported_types=[tf.float16]`: float16 weights.
- `dynamic`: `Optimize.DEFAULT` alone: int8 weights, float activations.
- `int8`: full-integer quantization: `Optimize.DEFAULT`, a representative dataset of the
  first N float samples (in order, so calibration and hence the bytes are deterministic),
  `supported_ops=[TFLITE_BUILTINS_INT8]` (conversion fails rather than fall back to float
  kernels), int8 input and output tensors.

The converter's C++ logging and Python warnings are captured; they are shown only inside
the error message when conversion fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import ModelError
from tinyops.optimize.config import PRUNED_INT8, OptimizeConfig, VariantName

if TYPE_CHECKING:
    import keras

    from tinyops.train.config import TaskName, TrainingConfig
    from tinyops.train.trainer import TrainingData

# Characters of captured converter log quoted in a conversion error.
LOG_TAIL_CHARS = 2000


def convert(
    model: keras.Model,
    variant: VariantName,
    representative_x: NDArray[np.floating] | None = None,
    *,
    representative_samples: int | None = None,
) -> bytes:
    """Convert `model` to a TFLite flatbuffer of `variant`, batch fixed to 1.

    `representative_x` (float samples shaped like the model input, batch axis first) is
    required for `int8`; its first `representative_samples` rows (all of them when None)
    calibrate the activation ranges.
    """
    import tensorflow as tf

    if len(model.inputs) != 1:
        raise ModelError(f"only single-input models convert, this one has {len(model.inputs)}")
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    samples: NDArray[np.float32] | None = None
    if variant == "int8":
        samples = _calibration_samples(representative_x, input_shape, representative_samples)
    elif variant not in ("float32", "float16", "dynamic"):
        raise ModelError(
            f"unknown TFLite variant '{variant}'; expected float32, float16, dynamic or int8"
        )

    def forward(x: Any) -> Any:
        return model(x, training=False)

    def representative_dataset() -> Iterator[list[NDArray[np.float32]]]:
        for row in samples if samples is not None else []:
            yield [row[np.newaxis, ...]]

    with _captured_converter_output() as log:
        try:
            # Batch axis fixed to 1: every tensor gets a static shape (see the docstring).
            serve = tf.function(
                forward,
                input_signature=[tf.TensorSpec((1, *input_shape), tf.float32, name="input")],
            )
            # The converter finds the variables to freeze through this trackable object.
            module = tf.Module()
            module.weights = [v.value for v in model.variables]
            module.serve = serve
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [serve.get_concrete_function()], module
            )
            if variant in ("float16", "dynamic", "int8"):
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if variant == "float16":
                converter.target_spec.supported_types = [tf.float16]
            if variant == "int8":
                converter.representative_dataset = representative_dataset
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
            flatbuffer = converter.convert()
        except Exception as exc:
            tail = log.read()[-LOG_TAIL_CHARS:].strip()
            raise ModelError(
                f"TFLite conversion of model '{model.name}' to the {variant} variant failed: "
                f"{exc}" + (f"\nconverter log (tail):\n{tail}" if tail else "")
            ) from exc
    return bytes(flatbuffer)


def build_variants(
    model: keras.Model,
    data: TrainingData,
    cfg: OptimizeConfig,
    train_cfg: TrainingConfig,
    task: TaskName,
) -> dict[str, bytes]:
    """Convert every configured variant; with pruning, also a pruned copy to `pruned-int8`.

    Calibration samples are the first `cfg.representative_samples` training rows.
    """
    from tinyops.optimize.pruning import prune_model

    calibration = np.asarray(data.x_train, dtype=np.float32)
    variants: dict[str, bytes] = {}
    for variant in cfg.variants:
        variants[variant] = convert(
            model, variant, calibration, representative_samples=cfg.representative_samples
        )
    if cfg.pruning is not None:
        pruned = prune_model(model, data, cfg.pruning, train_cfg, task=task)
        variants[PRUNED_INT8] = convert(
            pruned, "int8", calibration, representative_samples=cfg.representative_samples
        )
    return variants


def _calibration_samples(
    x: NDArray[np.floating] | None, input_shape: tuple[int, ...], count: int | None
) -> NDArray[np.float32]:
    if x is None or len(x) == 0:
        raise ModelError(
            "the int8 variant needs representative samples to calibrate activation ranges; "
            "none were given"
        )
    samples = np.asarray(x[:count], dtype=np.float32)
    if tuple(samples.shape[1:]) != input_shape:
        raise ModelError(
            f"representative samples have shape {tuple(samples.shape[1:])}, expected the "
            f"model input shape {input_shape}"
        )
    return samples


class _CapturedLog:
    """Text the converter wrote to the process's stderr while captured."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def read(self) -> str:
        self._handle.flush()
        self._handle.seek(0)
        return str(self._handle.read().decode(errors="replace"))


@contextlib.contextmanager
def _captured_converter_output() -> Iterator[_CapturedLog]:
    """Redirect stderr (file descriptor 2, where MLIR and absl write) and silence Python
    warnings and the absl/tensorflow loggers for the duration of a conversion."""
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    levels = [lg.level for lg in loggers]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        stderr_fd = 2
        sys.stderr.flush()
        saved_fd = os.dup(stderr_fd)
        try:
            os.dup2(sink.fileno(), stderr_fd)
            yield _CapturedLog(sink)
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, stderr_fd)
            os.close(saved_fd)
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
