"""Configuration of the model template and of the training loop (the `model:` and `train:` keys).

`ModelConfig.params` is a free-form mapping in the project file, but each template has its
own pydantic parameter model (in `tinyops.train.models`): the mapping is validated against
it when the config is loaded, unknown keys are rejected by their full key path
(`model.params.<key>`), and the stored `params` are the normalized ones, with every default
filled in, so that what is logged and hashed is exactly what `build_model` uses.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from tinyops.train.models import TEMPLATE_PARAMS, TemplateName, validate_template_params

TaskName = Literal["classification", "anomaly"]


class ModelConfig(BaseModel):
    """Which model template to build, and its parameters."""

    model_config = ConfigDict(extra="forbid")

    template: TemplateName = Field(
        description="Model template: mlp, cnn2d, ds_cnn1d, ds_cnn2d (classifiers) or "
        "autoencoder (anomaly detection by reconstruction error)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Template parameters; each template accepts its own keys (see "
        "tinyops.train.models). Missing keys take the template's defaults.",
    )

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        template = info.data.get("template")
        if template is None:
            # The template itself failed validation; pydantic reports that error already.
            return value
        return validate_template_params(template, value).model_dump()

    @property
    def task(self) -> TaskName:
        """`anomaly` for the autoencoder (trained on normal data), else `classification`."""
        return "anomaly" if self.template == "autoencoder" else "classification"

    def template_params(self) -> BaseModel:
        """The typed parameter model of this template (defaults filled in)."""
        return TEMPLATE_PARAMS[self.template].model_validate(self.params)


class TrainingConfig(BaseModel):
    """How to fit the model: epochs, batch, optimizer step and reproducibility."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=20, ge=1, description="Maximum number of passes over train.")
    batch_size: int = Field(default=32, ge=1, description="Samples per gradient step.")
    learning_rate: float = Field(default=1e-3, gt=0, description="Adam learning rate.")
    seed: int = Field(
        default=42,
        ge=0,
        description="Seed of Python, NumPy and TensorFlow random generators: weight "
        "initialization, dropout masks and the per-epoch shuffle order.",
    )
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this many epochs without a lower validation loss and keep "
        "the best weights; None trains for all epochs.",
    )
    deterministic: bool = Field(
        default=True,
        description="Force deterministic TensorFlow kernels, so two runs with the same "
        "seed and data give bit-identical weights (slightly slower).",
    )
