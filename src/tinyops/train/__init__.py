"""Training: TinyML model templates (Keras 3), seeded training and MLflow run tracking.

A project names a template (`mlp`, `cnn2d`, `ds_cnn1d`, `ds_cnn2d`, `autoencoder`) and its
parameters; `build_model` turns them into a Keras model made only of layers the
microcontroller runtime (TFLM) can execute, `train_model` fits it reproducibly, and
`RunTracker` records the run in the project's local MLflow store. Importing this package is
cheap: TensorFlow, Keras and MLflow load only when a function that needs them runs.
"""

from __future__ import annotations

from tinyops.train.config import ModelConfig, TrainingConfig

__all__ = ["ModelConfig", "TrainingConfig"]
