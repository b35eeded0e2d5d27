"""Schema of `tinyops.yaml`.

Each domain package owns the schema of its own section (`tinyops.data.config`,
`tinyops.features.config`, ...); this module only composes them and adds the sections
that belong to the pipeline as a whole (gates, tracking, bundle). `monitoring:` is
`tinyops.monitor.config.MonitoringConfig`. Unknown keys are errors
everywhere, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinyops.data.config import SourceConfig, SplitConfig, ValidationConfig
from tinyops.features.config import BlockConfig
from tinyops.monitor.config import MonitoringConfig
from tinyops.optimize.config import OptimizeConfig
from tinyops.targets.budget import Budgets
from tinyops.train.config import ModelConfig, TrainingConfig

PROJECT_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,62}")
"""A project name (also the default MLflow experiment and registered model name).
Use fullmatch: a `$` anchor would accept a trailing newline."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    sources: list[SourceConfig] = Field(min_length=1, description="where samples come from")
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    deduplicate: bool = Field(True, description="drop exact duplicate samples before snapshot")
    split: SplitConfig = Field(default_factory=SplitConfig)


class FeaturesSection(_Section):
    blocks: list[BlockConfig] = Field(
        default_factory=list, description="DSP blocks applied in order to every sample"
    )


class TargetSection(_Section):
    board: str = Field(description="board id from the catalog, e.g. nano33ble")
    budgets: Budgets = Field(default_factory=Budgets)


class GatesSection(_Section):
    """Quality gates; each one that is set must pass for the pipeline to produce a bundle."""

    min_accuracy: float | None = Field(
        None, ge=0, le=1, description="accuracy of the deployed .tflite on the test split (TFLM)"
    )
    max_accuracy_drop: float | None = Field(
        0.01, ge=0, le=1, description="float accuracy minus deployed accuracy, as a fraction"
    )
    min_agreement: float | None = Field(
        0.97, ge=0, le=1, description="share of test samples where TFLM and float agree"
    )


class TrackingSection(_Section):
    uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite in .tinyops/mlflow.db"
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: project name")
    registered_model: str | None = Field(None, description="registry name; default: project name")


class BundleSection(_Section):
    version: str = Field("0.1.0", description="semantic version of the release")
    variant: Literal["int8", "pruned-int8"] = "int8"
    golden_vectors: int = Field(8, ge=1, le=256, description="test samples kept for self-test")
    expires_days: int = Field(365, ge=1, description="manifest validity, days")
    signing_key: str = Field(".tinyops/keys/signing.key", description="Ed25519 private key")
    output_dir: str = "dist"


class Project(_Section):
    name: str = Field(description="lowercase identifier: letters, digits, - and _")
    description: str = ""
    data: DataSection
    features: FeaturesSection = Field(default_factory=FeaturesSection)
    model: ModelConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    optimize: OptimizeConfig = Field(default_factory=OptimizeConfig)
    target: TargetSection
    gates: GatesSection = Field(default_factory=GatesSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    bundle: BundleSection = Field(default_factory=BundleSection)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not PROJECT_NAME_PATTERN.fullmatch(v):
            raise ValueError(
                "expected a lowercase identifier like 'digits' or 'kws-yes-no': a letter, "
                "then up to 62 lowercase letters, digits, - or _"
            )
        return v
