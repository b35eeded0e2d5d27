"""Configuration of the data stage: where samples come from, how they are checked, how split.

These pydantic models are what the `data:` section of a project file is parsed into. They
import nothing heavy, so the CLI can validate a project file without loading pandas or
OpenCV. Paths are relative to the project folder (absolute paths are used as given).

A source is chosen by its `kind`:

    csv / parquet    a table, one row per sample
    npz              arrays saved with numpy.savez
    wav_folder       <path>/<label>/*.wav
    image_folder     <path>/<label>/*.png|jpg|jpeg|bmp
    video_folder     <path>/<label>/*.avi|mp4|mov|mkv, sampled at `fps` frames per second
    text_folder      <path>/<label>/*.txt, one sample per non-empty line
    sklearn          a data set bundled with scikit-learn (no network)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

Modality = Literal["table", "audio", "image", "text"]
Color = Literal["gray", "rgb"]


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvSource(_Source):
    """A CSV file with a header row; one row per sample."""

    kind: Literal["csv"] = "csv"
    path: Path = Field(description="CSV file, relative to the project folder.")
    label_column: str | None = Field(
        default=None, description="Column holding the class label; none means unlabeled."
    )
    feature_columns: list[str] | None = Field(
        default=None,
        description="Columns used as features, in this order; default: every numeric "
        "column except the label.",
    )


class ParquetSource(_Source):
    """A Parquet file; one row per sample."""

    kind: Literal["parquet"] = "parquet"
    path: Path = Field(description="Parquet file, relative to the project folder.")
    label_column: str | None = Field(
        default=None, description="Column holding the class label; none means unlabeled."
    )
    feature_columns: list[str] | None = Field(
        default=None,
        description="Columns used as features, in this order; default: every numeric "
        "column except the label.",
    )


class NpzSource(_Source):
    """Arrays saved with `numpy.savez`: samples under `x_key`, labels under `y_key`."""

    kind: Literal["npz"] = "npz"
    path: Path = Field(description=".npz file, relative to the project folder.")
    x_key: str = Field(default="x", description="Array of samples, first axis = sample.")
    y_key: str | None = Field(
        default="y",
        description="Array of labels (integer class indices, -1 = unlabeled, or strings); "
        "null for an unlabeled data set.",
    )
    classes: list[str] | None = Field(
        default=None,
        description="Class names indexed by the integer labels; default: the distinct "
        "label values, sorted.",
    )
    modality: Modality = Field(
        default="table",
        description="What the samples are: table (N, F) float, audio (N, S) float in "
        "[-1, 1], image (N, H, W[, C]) uint8, text (N, L) token ids.",
    )
    sample_rate: PositiveInt | None = Field(
        default=None, description="Audio only: samples per second (Hz)."
    )

    @model_validator(mode="after")
    def _rate_only_for_audio(self) -> NpzSource:
        if self.sample_rate is not None and self.modality != "audio":
            raise ValueError(f"sample_rate is for audio only, but modality is {self.modality!r}")
        return self


class WavFolderSource(_Source):
    """Audio clips in `<path>/<label>/*.wav`, one clip per sample."""

    kind: Literal["wav_folder"] = "wav_folder"
    path: Path = Field(description="Folder with one sub-folder per label.")
    sample_rate: PositiveInt = Field(
        description="Expected sample rate in Hz; a file with another rate is an error."
    )
    duration_s: PositiveFloat = Field(
        default=1.0,
        description="Clip length in seconds: shorter clips are padded with zeros at the "
        "end, longer ones truncated.",
    )


class ImageFolderSource(_Source):
    """Images in `<path>/<label>/*.png|jpg|jpeg|bmp`, one image per sample."""

    kind: Literal["image_folder"] = "image_folder"
    path: Path = Field(description="Folder with one sub-folder per label.")
    size: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None,
        description="[height, width] in pixels to resize to (area interpolation); "
        "default: keep, and every image must have the same size.",
    )
    color: Color = Field(default="rgb", description="gray (1 channel) or rgb (3 channels).")


class VideoFolderSource(_Source):
    """Videos in `<path>/<label>/*.avi|mp4|mov|mkv`; each sampled frame is one sample."""

    kind: Literal["video_folder"] = "video_folder"
    path: Path = Field(description="Folder with one sub-folder per label.")
    fps: PositiveFloat = Field(
        description="Frames sampled per second of video, chosen by timestamp: the first "
        "frame at or after 0, 1/fps, 2/fps ... seconds."
    )
    size: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None,
        description="[height, width] in pixels to resize frames to; default: keep, and "
        "every video must have the same frame size.",
    )
    color: Color = Field(default="rgb", description="gray (1 channel) or rgb (3 channels).")


class TextFolderSource(_Source):
    """Text in `<path>/<label>/*.txt`; every non-empty line is one sample."""

    kind: Literal["text_folder"] = "text_folder"
    path: Path = Field(description="Folder with one sub-folder per label.")
    max_length: PositiveInt = Field(
        default=32, description="Tokens per sample: longer lines are cut, shorter padded."
    )
    vocab_size: int = Field(
        default=1000,
        ge=3,
        description="Vocabulary size including id 0 (padding) and id 1 (out of vocabulary).",
    )


class SklearnSource(_Source):
    """A small data set bundled with scikit-learn (read from disk, never downloaded)."""

    kind: Literal["sklearn"] = "sklearn"
    name: Literal["digits", "iris", "wine", "breast_cancer"] = Field(
        description="digits: 8x8 gray images (values 0..16); the others: tables."
    )


SourceConfig = Annotated[
    CsvSource
    | ParquetSource
    | NpzSource
    | WavFolderSource
    | ImageFolderSource
    | VideoFolderSource
    | TextFolderSource
    | SklearnSource,
    Field(discriminator="kind"),
]
"""One data source; the `kind` key selects which."""


class ValidationConfig(BaseModel):
    """Thresholds of the data quality gate run before a snapshot is taken."""

    model_config = ConfigDict(extra="forbid")

    min_samples: int = Field(default=10, ge=0, description="Fewest samples accepted.")
    max_missing_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Largest share of NaN values accepted in float data (0.0 = none).",
    )
    min_class_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Smallest share of labelled samples the rarest class may have "
        "(0.0 = not checked).",
    )
    max_imbalance_ratio: float | None = Field(
        default=None,
        ge=1.0,
        description="Largest accepted ratio of the biggest to the smallest class count.",
    )
    value_range: tuple[float, float] | None = Field(
        default=None, description="[lo, hi]: every value must lie in this closed range."
    )
    expected_shape: list[PositiveInt] | None = Field(
        default=None, description="Shape of one sample, e.g. [16000] or [96, 96, 1]."
    )
    sample_rate: PositiveInt | None = Field(
        default=None, description="Expected audio sample rate in Hz."
    )
    require_labels: bool = Field(
        default=True, description="Fail if any sample is unlabeled (label -1)."
    )
    fail_on: Literal["error", "warning", "never"] = Field(
        default="error",
        description="Gate: error = failed checks stop the run; warning = warnings do too; "
        "never = report only.",
    )

    @model_validator(mode="after")
    def _range_ordered(self) -> ValidationConfig:
        if self.value_range is not None and self.value_range[0] > self.value_range[1]:
            lo, hi = self.value_range
            raise ValueError(f"value_range must be [lo, hi] with lo <= hi, got [{lo}, {hi}]")
        return self


class SplitConfig(BaseModel):
    """Fractions of each class that go to train, validation and test."""

    model_config = ConfigDict(extra="forbid")

    train: float = Field(default=0.7, ge=0.0, le=1.0, description="Share used for training.")
    validation: float = Field(
        default=0.15, ge=0.0, le=1.0, description="Share used for model selection."
    )
    test: float = Field(default=0.15, ge=0.0, le=1.0, description="Share held out for test.")
    seed: int = Field(
        default=42,
        ge=0,
        lt=2**64,
        description="Seed of the content hash that orders samples (an unsigned 64-bit int).",
    )
    stratify: bool = Field(
        default=True, description="Split each class separately so shares hold per class."
    )

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + validation + test must be 1, got {self.train} + "
                f"{self.validation} + {self.test} = {total:g}"
            )
        return self
