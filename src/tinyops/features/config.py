"""Configuration of feature blocks: one pydantic model per block, tagged by `block`.

A feature pipeline is written in the project file as a list of blocks, for example

    features:
      sample_rate: 16000
      blocks:
        - {block: mfcc, num_coefficients: 10}
        - {block: standardize}

Each entry is validated into the model whose `block` literal matches (a discriminated
union), with every default filled in. The filled-in models are what the pipeline hash is
taken over, so spelling a default out or leaving it implicit names the same pipeline.

Only the shape of the configuration is checked here. Checks that need the sample rate
(a filter above Nyquist, say) happen when a `FeaturePipeline` is built, because the rate
may come from the pipeline rather than the block.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from tinyops.errors import ProjectError

StatAxis = Literal["last", "sample", "all"]
"""Which values share one fitted statistic.

- `last`: one statistic per index of the last axis (a feature, or an image channel),
  reduced over the batch and every other axis;
- `sample`: one statistic per element of a sample, reduced over the batch axis only;
- `all`: a single statistic for the whole array.
"""

DEFAULT_BANDS = 8
"""Number of equal-width bands of `fft_band_power` when neither bands nor edges are given."""


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ScaleConfig(_Block):
    """y = x · mul + add (for example mul = 1/16 maps 4-bit digit pixels 0..16 to 0..1)."""

    block: Literal["scale"] = "scale"
    mul: float = 1.0
    """Multiplier applied first."""
    add: float = 0.0
    """Offset added after the multiplication."""


class StandardizeConfig(_Block):
    """y = (x - mean) / max(std, eps), with mean and std fitted on the train split."""

    block: Literal["standardize"] = "standardize"
    axis: StatAxis = "last"
    """`last`: per feature/channel; `sample`: per element; `all`: one mean and std."""
    eps: float = Field(default=1e-6, gt=0)
    """Floor of the standard deviation, so that constant features do not divide by zero."""


class MinMaxConfig(_Block):
    """y = (x - min) / max(max - min, eps), with min and max fitted on the train split."""

    block: Literal["minmax"] = "minmax"
    axis: StatAxis = "last"
    """`last`: per feature/channel; `sample`: per element; `all`: one min and max."""
    clip: bool = False
    """Clip the result to [0, 1] (values outside the train range otherwise fall outside)."""
    eps: float = Field(default=1e-6, gt=0)
    """Floor of the range max - min, so that constant features do not divide by zero."""


class WindowConfig(_Block):
    """Frame a time series (N, T[, C]) into (N, frames, length[, C]); trailing samples drop."""

    block: Literal["window"] = "window"
    length: int = Field(gt=0)
    """Frame length, in samples."""
    stride: int = Field(gt=0)
    """Hop between the starts of two frames, in samples."""


class FftBandPowerConfig(_Block):
    """Hann-windowed power spectrum summed in frequency bands, optionally as log10."""

    block: Literal["fft_band_power"] = "fft_band_power"
    bands: int | None = Field(default=None, gt=0)
    """Number of equal-width bands from 0 Hz to Nyquist (default 8; len(edges_hz) - 1 when
    edges are given)."""
    edges_hz: tuple[float, ...] | None = None
    """Band edges in Hz, strictly increasing, at least two; needs a sample rate."""
    sample_rate: int | None = Field(default=None, gt=0)
    """Sampling rate in Hz; defaults to the pipeline's. Only needed with `edges_hz`."""
    log: bool = False
    """Return log10(power + 1e-10) instead of the power."""
    channels_last: bool = False
    """The last axis holds channels (N, T, C): the FFT then runs along the axis before it."""

    @model_validator(mode="after")
    def _fill_bands(self) -> FftBandPowerConfig:
        if self.edges_hz is None:
            if self.bands is None:
                object.__setattr__(self, "bands", DEFAULT_BANDS)
            return self
        edges = self.edges_hz
        if len(edges) < 2:
            raise ValueError(f"edges_hz needs at least 2 edges (one band), got {list(edges)}")
        if edges[0] < 0 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"edges_hz must be >= 0 and strictly increasing, got {list(edges)}")
        if self.bands is None:
            object.__setattr__(self, "bands", len(edges) - 1)
        elif self.bands != len(edges) - 1:
            raise ValueError(
                f"bands={self.bands} disagrees with edges_hz, which give {len(edges) - 1} bands;"
                " give one or the other"
            )
        return self


class _MelSettings(_Block):
    """Framing, FFT and mel filterbank settings shared by `log_mel` and `mfcc`."""

    sample_rate: int | None = Field(default=None, gt=0)
    """Sampling rate in Hz; defaults to the pipeline's. Required by one or the other."""
    frame_length: int = Field(default=640, gt=0)
    """Frame length in samples (640 = 40 ms at 16 kHz)."""
    frame_step: int = Field(default=320, gt=0)
    """Hop between frames in samples (320 = 20 ms at 16 kHz)."""
    fft_length: int = Field(default=1024, gt=0)
    """FFT size in samples, >= frame_length; each frame is zero-padded to it."""
    num_mel_bins: int = Field(default=40, gt=0)
    """Number of triangular mel filters."""
    lower_hz: float = Field(default=20.0, ge=0)
    """Lower edge of the lowest mel filter, in Hz."""
    upper_hz: float = Field(default=4000.0, gt=0)
    """Upper edge of the highest mel filter, in Hz (at most half the sample rate)."""

    @model_validator(mode="after")
    def _check_ranges(self) -> _MelSettings:
        if self.fft_length < self.frame_length:
            raise ValueError(
                f"fft_length ({self.fft_length}) must be >= frame_length ({self.frame_length})"
            )
        if self.upper_hz <= self.lower_hz:
            raise ValueError(
                f"upper_hz ({self.upper_hz}) must be greater than lower_hz ({self.lower_hz})"
            )
        return self


class LogMelConfig(_MelSettings):
    """Natural log of HTK mel filterbank energies of audio (N, S) → (N, frames, num_mel_bins)."""

    block: Literal["log_mel"] = "log_mel"


class MfccConfig(_MelSettings):
    """Orthonormal DCT-II of log-mel energies, first coefficients → (N, frames, coefs)."""

    block: Literal["mfcc"] = "mfcc"
    num_coefficients: int = Field(default=10, gt=0)
    """Number of cepstral coefficients kept (at most num_mel_bins)."""

    @model_validator(mode="after")
    def _check_coefficients(self) -> MfccConfig:
        if self.num_coefficients > self.num_mel_bins:
            raise ValueError(
                f"num_coefficients ({self.num_coefficients}) must be <= num_mel_bins"
                f" ({self.num_mel_bins})"
            )
        return self


class ImageResizeConfig(_Block):
    """Bilinear resize of (N, H, W[, C]) images with half-pixel centres."""

    block: Literal["image_resize"] = "image_resize"
    size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]]
    """Output [height, width] in pixels."""


class GrayscaleConfig(_Block):
    """ITU-R BT.601 luma of RGB images: 0.299 R + 0.587 G + 0.114 B."""

    block: Literal["grayscale"] = "grayscale"
    keep_channel_axis: bool = True
    """Return (N, H, W, 1) rather than (N, H, W)."""


class ImageNormalizeConfig(_Block):
    """y = (x / 255 - mean[c]) / std[c] per channel c (the last axis)."""

    block: Literal["image_normalize"] = "image_normalize"
    mean: tuple[float, ...] = Field(default=(0.0,), min_length=1)
    """Per-channel mean in the 0..1 scale; one value applies to every channel."""
    std: tuple[Annotated[float, Field(gt=0)], ...] = Field(default=(1.0,), min_length=1)
    """Per-channel standard deviation in the 0..1 scale; one value applies to every channel."""


class ReshapeConfig(_Block):
    """Reshape every sample to `shape` (row-major order kept); one entry may be -1."""

    block: Literal["reshape"] = "reshape"
    shape: tuple[int, ...] = Field(min_length=1)
    """Per-sample shape, for example [8, 8, 1]."""

    @model_validator(mode="after")
    def _check_shape(self) -> ReshapeConfig:
        if any(d == 0 or d < -1 for d in self.shape) or self.shape.count(-1) > 1:
            raise ValueError(
                f"shape entries must be positive, with at most one -1, got {list(self.shape)}"
            )
        return self


class CastFloatConfig(_Block):
    """y = float32(x): makes the pipeline's dtype contract explicit for integer inputs."""

    block: Literal["cast_float"] = "cast_float"


BlockConfig = Annotated[
    ScaleConfig
    | StandardizeConfig
    | MinMaxConfig
    | WindowConfig
    | FftBandPowerConfig
    | LogMelConfig
    | MfccConfig
    | ImageResizeConfig
    | GrayscaleConfig
    | ImageNormalizeConfig
    | ReshapeConfig
    | CastFloatConfig,
    Field(discriminator="block"),
]
"""Any one block configuration, chosen by its `block` name."""

BLOCK_NAMES: tuple[str, ...] = (
    "scale",
    "standardize",
    "minmax",
    "window",
    "fft_band_power",
    "log_mel",
    "mfcc",
    "image_resize",
    "grayscale",
    "image_normalize",
    "reshape",
    "cast_float",
)


class FeaturesConfig(BaseModel):
    """The `features` section of a project: a sample rate and an ordered list of blocks."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    sample_rate: int | None = Field(default=None, gt=0)
    """Sampling rate of the raw signal in Hz, used by blocks that do not set their own."""
    blocks: tuple[BlockConfig, ...] = ()
    """Blocks applied in order to every sample."""


@functools.cache
def _blocks_adapter() -> TypeAdapter[list[BlockConfig]]:
    # Built on first use: constructing the validator costs milliseconds at import time.
    return TypeAdapter(list[BlockConfig])


def parse_blocks(raw: Sequence[BlockConfig | Mapping[str, Any]]) -> list[BlockConfig]:
    """Validate block entries (models or plain mappings) into block configs.

    Raises ProjectError naming the block index and the offending key.
    """
    items: list[Any] = [b.model_dump() if isinstance(b, BaseModel) else b for b in raw]
    try:
        return _blocks_adapter().validate_python(items)
    except ValidationError as exc:
        raise ProjectError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = f"feature block {loc[0]}" if loc and isinstance(loc[0], int) else "feature blocks"
        if len(loc) > 1:
            # pydantic puts the union tag (the block name) second in the location.
            where += f" ({loc[1]})"
        keys = ".".join(str(p) for p in loc[2:])
        field = f" field '{keys}'" if keys else ""
        if err["type"] == "union_tag_not_found":
            msg = f"'block' is missing; it names the block, one of: {', '.join(BLOCK_NAMES)}"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown block {err['input'].get('block')!r}; expected one of:"
            msg += f" {', '.join(BLOCK_NAMES)}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if keys and err["type"] != "missing":
                msg += f", got {err['input']!r}"
        lines.append(f"{where}{field}: {msg}")
    return "; ".join(lines)
