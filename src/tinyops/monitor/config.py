"""Drift configuration: which statistic each feature gets and where its threshold lies.

DriftConfig is the drift part of a project's monitoring settings (a pydantic model that
imports nothing heavy, so a project file can be validated cheaply). The defaults reproduce
Evidently's `DataDriftPreset` (0.7.23), so that a tinyops verdict means what an Evidently
user expects:

    numeric feature      reference ≤ 1000 rows: Kolmogorov–Smirnov p-value < 0.05
                         (needs raw samples; on binned data: chi-squared p-value < 0.05)
                         reference > 1000 rows: normed Wasserstein distance ≥ 0.1
    categorical feature  reference ≤ 1000 rows: chi-squared p-value < 0.05
                         (two-proportion z-test p-value < 0.05 when only two values occur)
                         reference > 1000 rows: Jensen–Shannon distance ≥ 0.1 in Evidently's
                         natural-log units, i.e. ≥ 0.1201 in the base-2 units tinyops reports
    numeric feature with ≤ 5 distinct values: tested as a categorical one
    dataset              drift when the share of drifted features is ≥ 0.5

PSI (threshold 0.1) is available for any feature by naming it as the method.
docs/drift.md states every formula.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["ks", "wasserstein", "psi", "jensenshannon", "chisquare", "z"]
NumericMethod = Literal["auto", "ks", "wasserstein", "psi", "jensenshannon", "chisquare"]
CategoricalMethod = Literal["auto", "chisquare", "z", "jensenshannon", "psi"]

# Evidently compares scipy's jensenshannon(p, q) with the default natural logarithm against
# 0.1; in base 2 the same distance is larger by 1/sqrt(ln 2), so the equivalent threshold is
# 0.1 / sqrt(ln 2) = 0.12011 (same verdicts, distance bounded by 1).
JS_THRESHOLD_BASE2 = 0.1 / math.sqrt(math.log(2.0))

# Methods whose statistic is a p-value: drift when the p-value is BELOW the threshold.
# The others are distances: drift when the distance is AT OR ABOVE the threshold.
P_VALUE_METHODS: frozenset[str] = frozenset({"ks", "chisquare", "z"})


class MethodThresholds(BaseModel):
    """The threshold of each method (a significance level for p-values, else a distance)."""

    model_config = ConfigDict(extra="forbid")

    ks: float = Field(
        default=0.05, gt=0, lt=1, description="Kolmogorov–Smirnov: drift when p < this."
    )
    chisquare: float = Field(
        default=0.05, gt=0, lt=1, description="Chi-squared test: drift when p < this."
    )
    z: float = Field(
        default=0.05, gt=0, lt=1, description="Two-proportion z-test: drift when p < this."
    )
    wasserstein: float = Field(
        default=0.1,
        gt=0,
        description="Normed Wasserstein distance (in reference standard deviations): "
        "drift when ≥ this.",
    )
    jensenshannon: float = Field(
        default=JS_THRESHOLD_BASE2,
        gt=0,
        le=1,
        description="Jensen–Shannon distance, base 2 (0..1): drift when ≥ this. The default "
        "0.12011 is Evidently's 0.1 in natural-log units.",
    )
    psi: float = Field(
        default=0.1, gt=0, description="Population stability index: drift when ≥ this."
    )

    def of(self, method: Method) -> float:
        """The threshold of `method`."""
        value: float = getattr(self, method)
        return value


class DriftConfig(BaseModel):
    """Which drift statistic each feature gets, its threshold, and the dataset-level rule."""

    model_config = ConfigDict(extra="forbid")

    numeric_method: NumericMethod = Field(
        default="auto",
        description="Method for numeric features. 'auto': KS (raw samples) or chi-squared "
        "(binned) when the reference has at most `small_reference_rows` rows, else normed "
        "Wasserstein.",
    )
    categorical_method: CategoricalMethod = Field(
        default="auto",
        description="Method for categorical features. 'auto': chi-squared (z-test for two "
        "values) when the reference has at most `small_reference_rows` rows, else "
        "Jensen–Shannon.",
    )
    prediction_method: CategoricalMethod = Field(
        default="auto",
        description="Method for the class distribution of predictions (prediction drift); "
        "'auto' follows the categorical rule.",
    )
    confidence_method: NumericMethod = Field(
        default="auto",
        description="Method for the confidence histogram (confidence drift); 'auto' follows "
        "the numeric rule on binned data.",
    )
    per_feature_method: dict[str, Method] = Field(
        default_factory=dict, description="Method for named features, overriding the kind's."
    )
    thresholds: MethodThresholds = Field(
        default_factory=MethodThresholds, description="Threshold of each method."
    )
    per_feature_threshold: dict[str, float] = Field(
        default_factory=dict,
        description="Threshold for named features, overriding the method's threshold.",
    )
    small_reference_rows: int = Field(
        default=1000,
        ge=0,
        description="'auto' uses p-value tests when the reference has at most this many rows "
        "(Evidently: 1000).",
    )
    discrete_max_values: int = Field(
        default=5,
        ge=0,
        description="Under 'auto', a numeric feature binned by its distinct values is "
        "tested like a categorical one when reference and current together fill at most "
        "this many of its bins (Evidently: at most 5 distinct values).",
    )
    drift_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Dataset drift when the share of drifted features is at least this "
        "(Evidently: 0.5).",
    )
    psi_epsilon: float = Field(
        default=1e-4,
        gt=0,
        lt=1,
        description="PSI replaces an empty bin's proportion (0) by this, so its log is finite.",
    )
