"""Configuration of the embedded optimizations (the `optimize:` key of a project).

Each listed variant is one TFLite conversion of the trained Keras model:

- `float32`: plain conversion, the numerical reference (4 bytes per weight).
- `float16`: weights stored as float16 (2 bytes), dequantized at load; for MCUs with an FPU.
- `dynamic`: dynamic-range quantization, int8 weights with float activations (hybrid
  kernels; most TFLM builds lack them, so it is for size comparison and Linux targets).
- `int8`: full-integer post-training quantization from `representative_samples`
  calibration samples; int8 input, output and every kernel, the variant MCUs run.

`pruning`, when set, magnitude-prunes a copy of the model and fine-tunes it before an
extra `pruned-int8` conversion: pruned weights are zeros, which do not make the flatbuffer
smaller but compress well for over-the-air transfer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

VariantName = Literal["float32", "float16", "dynamic", "int8"]
ALL_VARIANTS: tuple[VariantName, ...] = ("float32", "float16", "dynamic", "int8")
# Name of the extra variant produced when pruning is configured.
PRUNED_INT8 = "pruned-int8"


class PruningConfig(BaseModel):
    """Magnitude pruning of Dense/Conv kernels, then fine-tuning with the masks held."""

    model_config = ConfigDict(extra="forbid")

    target_sparsity: float = Field(
        default=0.5,
        ge=0.0,
        le=0.95,
        description="Share of each prunable layer's kernel weights set to zero (0..0.95).",
    )
    fine_tune_epochs: int = Field(
        default=3,
        ge=0,
        description="Epochs of fine-tuning while the sparsity ramps up; 0 prunes one-shot.",
    )
    schedule: Literal["constant", "polynomial"] = Field(
        default="polynomial",
        description="constant: target sparsity from the first step; polynomial: ramp from 0 "
        "to the target over the fine-tuning steps (cubic, as TF-MOT's PolynomialDecay).",
    )


class OptimizeConfig(BaseModel):
    """Which TFLite variants to produce and how to calibrate and prune them."""

    model_config = ConfigDict(extra="forbid")

    variants: list[VariantName] = Field(
        default_factory=lambda: list(ALL_VARIANTS),
        min_length=1,
        description="TFLite variants to convert: float32, float16, dynamic, int8.",
    )
    representative_samples: int = Field(
        default=200,
        ge=1,
        description="Training samples (the first N, in order) used to calibrate int8 "
        "activation ranges.",
    )
    pruning: PruningConfig | None = Field(
        default=None, description="Magnitude pruning for an extra pruned-int8 variant."
    )

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: list[VariantName]) -> list[VariantName]:
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once")
        return value
