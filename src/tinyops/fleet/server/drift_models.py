"""Request and response bodies of the drift-monitoring API (docs/drift.md, *Server side*).

The same first line of defence as `models.py`: bounded strings and lists, finite floats,
unknown fields refused. Counts are strict integers (a JSON 3.0 or "3" is refused, not
coerced), so a fractional or negative bin count is a 422 naming its path, e.g.
`histograms.features.band_03[2]`. What needs the release's profile (bin counts per
feature, totals, known feature names, class indices) is checked by
`drift_service.check_sketch`, which names the field the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import Field, StrictInt, StringConstraints

from tinyops.fleet.server.models import (
    NAME_PATTERN,
    DeviceId,
    Name,
    Request,
    Response,
    Version,
    WireTime,
)

# Bounds of one sketch: far above any microcontroller model, far below the body limit.
MAX_FEATURES: Final = 1024
MAX_BINS: Final = 1024
MAX_SAMPLES: Final = 10_000
MAX_FEEDBACK_ITEMS: Final = 10_000
MAX_LABELED_ITEMS: Final = 10_000
MAX_COUNT: Final = 2**53
# "<project>/<dataset>": a name with at most one slash-separated level below it.
DATASET_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?$"

Count = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Dataset = Annotated[str, StringConstraints(pattern=DATASET_PATTERN)]
PredictionId = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ClassName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class ReleaseNameIn(Request):
    """A release by model name and version (the device's board is its target)."""

    name: Name
    version: Version


class WindowIn(Request):
    start: WireTime = Field(description="Start of the window (UTC, ISO 8601).")
    end: WireTime = Field(description="End of the window; after start.")


class HistogramsIn(Request):
    """`Histograms.to_dict()`: counts in the bins of the release's reference profile."""

    format: Literal["tinyops.drift-histograms"] = Field(default="tinyops.drift-histograms")
    features: dict[FeatureName, Annotated[list[Count], Field(max_length=MAX_BINS)]] = Field(
        max_length=MAX_FEATURES, description="One count list per profile feature."
    )
    predictions: Annotated[list[Count], Field(max_length=MAX_BINS)] | None = Field(
        default=None, description="Predictions per class."
    )
    confidence: Annotated[list[Count], Field(max_length=MAX_BINS)] | None = Field(
        default=None, description="Confidences in the 10 confidence bins."
    )


class SampleIn(Request):
    """A raw sample, sent only when the release's policy allows samples."""

    features: Annotated[list[float], Field(min_length=1, max_length=MAX_FEATURES)] = Field(
        description="The summary row, in the profile's feature order."
    )
    prediction: Annotated[StrictInt, Field(ge=0)] = Field(description="Predicted class index.")
    id: PredictionId | None = Field(
        default=None, description="Prediction id, for feedback labels (unique per device)."
    )


class SketchIn(Request):
    release: ReleaseNameIn = Field(description="The release the device runs.")
    window: WindowIn
    count: Count = Field(description="Inferences in the window.")
    histograms: HistogramsIn
    samples: list[SampleIn] = Field(default_factory=list, max_length=MAX_SAMPLES)


class SketchAck(Response):
    accepted: bool
    window_id: int


class FeedbackItemIn(Request):
    prediction_id: PredictionId
    label: Annotated[StrictInt, Field(ge=0)] = Field(description="The true class index.")


class FeedbackIn(Request):
    release: ReleaseNameIn
    device: DeviceId
    items: list[FeedbackItemIn] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)


class FeedbackAck(Response):
    accepted: int


class LabeledSampleIn(Request):
    """A newly labeled sample: a feature vector or named values (not both)."""

    features: Annotated[list[float], Field(min_length=1, max_length=MAX_FEATURES)] | None = None
    values: (
        Annotated[dict[FeatureName, float], Field(min_length=1, max_length=MAX_FEATURES)] | None
    ) = None
    label: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | ClassName
    device: DeviceId | None = None
    t: WireTime | None = None


class SamplesIn(Request):
    dataset: Dataset = Field(description="'<project>/<dataset>' or a plain dataset name.")
    items: list[LabeledSampleIn] = Field(min_length=1, max_length=MAX_LABELED_ITEMS)


class SamplesAck(Response):
    accepted: int
    total: int = Field(description="Samples the dataset holds now.")


class LabeledSampleOut(Response):
    id: int
    features: list[float] | None
    values: dict[str, float] | None
    label: int | str
    device: str | None
    t: datetime | None = Field(description="When it was observed, or null.")
    received_at: datetime


class SamplesPage(Response):
    items: list[LabeledSampleOut]
    next: int | None = Field(description="Pass as ?since_id= for the next page; null at the end.")
