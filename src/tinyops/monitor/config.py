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

MonitoringConfig is the whole `monitoring:` section of the project file: DriftConfig plus
the window, the bins, how a model input is summarised into features (summaries.py) and the
sampling policy (docs/project-file.md), and RetrainConfig, the policy of `tinyops retrain`
(docs/retrain.md).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

# Fewest current raw samples the server runs KS on (DriftConfig.ks_min_samples' default):
# with 100 rows against 1,000 normal reference rows KS flags a shift of half a standard
# deviation in 99 % of draws (93 % with 50 rows, measured); with fewer, the binned test
# over every inference of the windows is stronger than KS over the few sampled ones.
KS_MIN_SAMPLES = 100


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
    min_count: int = Field(
        default=1000,
        ge=1,
        description="Inferences a fleet verdict needs: the server sums a device's latest "
        "sketch windows, newest first, until they hold at least this many (at most "
        "`max_windows` of them) and gives no verdict below it. A distance measured on a "
        "small window is mostly sampling noise: the normed Wasserstein distance of 50 "
        "draws from the reference itself averages 0.18, above the default threshold 0.1; "
        "of 500 draws it crosses 0.1 one time in 20, of 1000 one time in 1000.",
    )
    max_windows: int = Field(
        default=24,
        ge=1,
        description="Most sketch windows summed to reach `min_count` for one verdict.",
    )
    ks_min_samples: int = Field(
        default=KS_MIN_SAMPLES,
        ge=1,
        description="Kolmogorov–Smirnov runs when the reference profile carries raw rows and "
        "the selection's windows hold at least this many raw samples; with fewer, the "
        "feature gets the binned method 'auto' would choose without samples.",
    )
    psi_epsilon: float = Field(
        default=1e-4,
        gt=0,
        lt=1,
        description="PSI replaces an empty bin's proportion (0) by this, so its log is finite.",
    )


# ---------------------------------------------------------------------------- monitoring

SummaryKind = Literal["auto", "columns", "bands", "channels"]

# The largest raw-sample allowance a project may grant per device and window: a sketch is
# one HTTP body, and a few hundred rows already give the server's KS test its power.
MAX_SAMPLES_PER_WINDOW = 10_000
# The most reference rows a profile may carry for the KS test: the profile ships in every
# bundle (and to every device), and beyond a few thousand rows the test gains nothing.
MAX_REFERENCE_SAMPLES = 10_000


class SamplingConfig(BaseModel):
    """Which raw samples may leave a device (none by default)."""

    model_config = ConfigDict(extra="forbid")

    max_samples_per_window: int = Field(
        default=0,
        ge=0,
        le=MAX_SAMPLES_PER_WINDOW,
        description="Raw summary rows (with their prediction) a device may send per window, "
        "drawn by reservoir sampling; 0 = no raw sample ever leaves the device.",
    )
    reference_samples: int = Field(
        default=1000,
        ge=0,
        le=MAX_REFERENCE_SAMPLES,
        description="Training-split summary rows (a seeded random subset) the reference "
        "profile carries when `max_samples_per_window` > 0, so that the server can run the "
        "Kolmogorov–Smirnov test on the devices' raw samples; 0 = none. Ignored (no rows "
        "shipped) when devices may send no samples.",
    )


# Rules of the alert rules template (templates/alerts.yaml) that watch the model's data
# and quality, as opposed to the hardware.
DEFAULT_DRIFT_RULES: tuple[str, ...] = (
    "FeatureDrift",
    "DatasetDrift",
    "PredictionDrift",
    "ConfidenceDrift",
    "AccuracyDrop",
)


class RetrainConfig(BaseModel):
    """The `monitoring.retrain:` policy of `tinyops retrain` (docs/retrain.md)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?$",
        description="Server dataset of newly labeled samples (POST /api/v1/samples); "
        "default: the project's name.",
    )
    min_new_samples: int = Field(
        default=100, ge=1, description="Retrain only once this many new samples arrived."
    )
    require_drift_alert: bool = Field(
        default=True,
        description="Retrain only while a drift alert fires for the release in the field.",
    )
    drift_rules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DRIFT_RULES),
        min_length=1,
        description="Alert rule names that count as drift alerts.",
    )
    require_approval: bool = Field(
        default=False,
        description="Stop after the gates; `tinyops retrain approve` uploads and deploys.",
    )
    automatic: bool = Field(
        default=False,
        description="Allow the retraining worker (`tinyops retrain --watch`) to run.",
    )
    phases: str = Field(
        default="5%,100%",
        description="Phases of the canary deployment, cumulative (as `tinyops deploy create`).",
    )
    max_failure: float | None = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Abort the deployment when a phase's failures pass this share.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Deploy to devices with these tags (all must match)."
    )
    bump: Literal["patch", "minor", "major"] = Field(
        default="patch", description="Which part of bundle.version a retrain increments."
    )
    data_dir: str = Field(
        default="data/retrain",
        description="Folder (relative to the project) the new samples are written to.",
    )

    @field_validator("phases")
    @classmethod
    def _phases(cls, value: str) -> str:
        from tinyops.fleet.rollout import parse_phases

        parse_phases(value)  # a ValueError names what is wrong with the text
        return value


class MonitoringConfig(BaseModel):
    """The `monitoring:` section of tinyops.yaml.

    `window_s`, `bins`, `summaries` and `sampling` shape the bundle (the reference profile
    and the policy devices follow) and so enter the bundle stage's cache key; `drift` and
    `alerts` are read by the server only.
    """

    model_config = ConfigDict(extra="forbid")

    drift: DriftConfig = Field(
        default_factory=DriftConfig, description="Drift methods and thresholds."
    )
    window_s: int = Field(
        default=3600,
        ge=1,
        le=7 * 86_400,
        description="Seconds of inferences one device sketch covers (windows are aligned "
        "to multiples of this since the Unix epoch, UTC).",
    )
    bins: int = Field(
        default=10,
        ge=2,
        le=100,
        description="Quantile bins per numeric feature of the reference profile.",
    )
    summaries: SummaryKind = Field(
        default="auto",
        description="How a model input becomes the profile's feature row: 'columns' "
        "(each input value), 'bands' (audio (T, B[, 1]): mean over time per band), "
        "'channels' (images (H, W, C): mean per channel; one channel: mean per row band); "
        "'auto' picks from the data's modality and the model's input shape.",
    )
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Raw samples devices may send."
    )
    alerts: str | None = Field(
        default=None,
        description="Path of the alert rules file (alerts.yaml), relative to the project.",
    )
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig, description="Policy of `tinyops retrain`."
    )
