"""A feature pipeline: an ordered list of blocks, its identity hash, and its fitted state.

`FeaturePipeline` is the configuration: blocks with every default filled in and the
sample rate resolved. Its `hash` names the computation, so that features materialized
for a dataset snapshot can be found again instead of recomputed, and so that a bundle can
record which feature code its model expects on the device.

`FittedPipeline` adds what was learned from the train split (means, standard deviations,
minima, maxima), in order: each fitted block sees the output of the blocks before it.
Its `params()` is plain JSON, the form in which the constants travel to a device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError, ProjectError
from tinyops.features import blocks as dsp
from tinyops.features.config import (
    BlockConfig,
    CastFloatConfig,
    FeaturesConfig,
    FftBandPowerConfig,
    GrayscaleConfig,
    ImageNormalizeConfig,
    ImageResizeConfig,
    LogMelConfig,
    MfccConfig,
    MinMaxConfig,
    ReshapeConfig,
    ScaleConfig,
    StandardizeConfig,
    WindowConfig,
    parse_blocks,
)
from tinyops.store.atomic import canonical_json, sha256_bytes

# Version of the blocks' arithmetic. Bump it whenever any block's math changes (a formula,
# a constant, a default, a rounding step): it enters the pipeline hash, so features
# materialized by older code are never mistaken for the new ones.
FEATURES_CODE_VERSION = "1"

BlockParams = dsp.StandardizeParams | dsp.MinMaxParams
"""Fitted state of one block; stateless blocks have None."""


def _resolve(index: int, cfg: BlockConfig, sample_rate: int | None) -> BlockConfig:
    """Fill the block's sample rate from the pipeline and check rate-dependent settings."""
    if not isinstance(cfg, FftBandPowerConfig | LogMelConfig | MfccConfig):
        return cfg
    if cfg.sample_rate is None and sample_rate is not None:
        cfg = cfg.model_copy(update={"sample_rate": sample_rate})
    rate = cfg.sample_rate
    where = f"feature block {index} ({cfg.block})"
    if isinstance(cfg, FftBandPowerConfig):
        if cfg.edges_hz is None:
            return cfg
        if rate is None:
            raise ProjectError(f"{where}: edges_hz needs sample_rate (Hz) on the block or pipeline")
        if cfg.edges_hz[-1] > rate / 2:
            raise ProjectError(
                f"{where}: edges_hz reaches {cfg.edges_hz[-1]} Hz, above Nyquist ({rate / 2} Hz"
                f" at sample_rate {rate})"
            )
        return cfg
    if rate is None:
        raise ProjectError(f"{where}: needs sample_rate (Hz) on the block or on the pipeline")
    if cfg.upper_hz > rate / 2:
        raise ProjectError(
            f"{where}: upper_hz ({cfg.upper_hz}) is above Nyquist ({rate / 2} Hz at"
            f" sample_rate {rate})"
        )
    return cfg


@contextlib.contextmanager
def _in_block(index: int, cfg: BlockConfig) -> Iterator[None]:
    """Prefix data errors raised inside a block with the block's position and name."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"feature block {index} ({cfg.block}): {exc}") from exc


def _fit_block(cfg: BlockConfig, x: NDArray[Any]) -> BlockParams | None:
    if isinstance(cfg, StandardizeConfig):
        return dsp.fit_standardize(x, cfg.axis)
    if isinstance(cfg, MinMaxConfig):
        return dsp.fit_minmax(x, cfg.axis)
    return None


def _needs_fit(cfg: BlockConfig) -> bool:
    return isinstance(cfg, StandardizeConfig | MinMaxConfig)


def _apply(cfg: BlockConfig, x: NDArray[Any], params: BlockParams | None) -> dsp.Float32Array:
    match cfg:
        case ScaleConfig():
            return dsp.scale(x, cfg.mul, cfg.add)
        case StandardizeConfig():
            assert isinstance(params, dsp.StandardizeParams)
            return dsp.standardize(x, params, cfg.eps)
        case MinMaxConfig():
            assert isinstance(params, dsp.MinMaxParams)
            return dsp.minmax(x, params, cfg.eps, cfg.clip)
        case WindowConfig():
            return dsp.window(x, cfg.length, cfg.stride)
        case FftBandPowerConfig():
            return dsp.fft_band_power(
                x,
                bands=cfg.bands,
                edges_hz=cfg.edges_hz,
                sample_rate=cfg.sample_rate,
                log=cfg.log,
                channels_last=cfg.channels_last,
            )
        case LogMelConfig():
            assert cfg.sample_rate is not None
            return dsp.log_mel(x, sample_rate=cfg.sample_rate, **_mel_kwargs(cfg))
        case MfccConfig():
            assert cfg.sample_rate is not None
            return dsp.mfcc(
                x,
                sample_rate=cfg.sample_rate,
                num_coefficients=cfg.num_coefficients,
                **_mel_kwargs(cfg),
            )
        case ImageResizeConfig():
            return dsp.image_resize(x, cfg.size)
        case GrayscaleConfig():
            return dsp.grayscale(x, cfg.keep_channel_axis)
        case ImageNormalizeConfig():
            return dsp.image_normalize(x, cfg.mean, cfg.std)
        case ReshapeConfig():
            return dsp.reshape(x, cfg.shape)
        case CastFloatConfig():
            return dsp.cast_float(x)
    raise AssertionError(f"unhandled feature block {cfg!r}")


def _mel_kwargs(cfg: LogMelConfig | MfccConfig) -> dict[str, Any]:
    return {
        "frame_length": cfg.frame_length,
        "frame_step": cfg.frame_step,
        "fft_length": cfg.fft_length,
        "num_mel_bins": cfg.num_mel_bins,
        "lower_hz": cfg.lower_hz,
        "upper_hz": cfg.upper_hz,
    }


def _batch(x: ArrayLike, what: str) -> NDArray[Any]:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim < 1:
        raise DataError(f"{what}: expected a batch (N, ...) with the sample axis first")
    return arr


class FeaturePipeline:
    """An ordered list of feature blocks and the sample rate of the raw signal (Hz)."""

    def __init__(
        self,
        blocks: Sequence[BlockConfig | Mapping[str, Any]],
        sample_rate: int | None = None,
    ) -> None:
        if sample_rate is not None and sample_rate <= 0:
            raise ProjectError(
                f"features.sample_rate must be a positive integer (Hz), got {sample_rate}"
            )
        parsed = parse_blocks(blocks)
        self.sample_rate = sample_rate
        self.blocks: tuple[BlockConfig, ...] = tuple(
            _resolve(i, cfg, sample_rate) for i, cfg in enumerate(parsed)
        )
        self.hash = sha256_bytes(canonical_json(self.spec()))

    @classmethod
    def from_config(cls, config: FeaturesConfig) -> FeaturePipeline:
        return cls(config.blocks, sample_rate=config.sample_rate)

    def spec(self) -> dict[str, Any]:
        """The JSON document the hash is taken over: blocks with defaults, rate, code version."""
        return {
            "blocks": [cfg.model_dump(mode="json") for cfg in self.blocks],
            "sample_rate": self.sample_rate,
            "code_version": FEATURES_CODE_VERSION,
        }

    def __repr__(self) -> str:
        names = ", ".join(cfg.block for cfg in self.blocks)
        return f"FeaturePipeline([{names}], hash={self.hash[:12]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeaturePipeline) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def fit(self, x_train: ArrayLike) -> FittedPipeline:
        """Fit the fitted blocks on the train split, each on the output of the ones before."""
        return self.fit_transform(x_train)[0]

    def fit_transform(self, x_train: ArrayLike) -> tuple[FittedPipeline, dsp.Float32Array]:
        """Fit on the train split and return the fitted pipeline with the train features."""
        arr = _batch(x_train, "feature pipeline input")
        if arr.shape[0] == 0:
            raise DataError("feature pipeline: cannot fit on an empty train split (0 samples)")
        params: list[BlockParams | None] = []
        x: NDArray[Any] = arr
        for i, cfg in enumerate(self.blocks):
            with _in_block(i, cfg):
                p = _fit_block(cfg, x)
                x = _apply(cfg, x, p)
            params.append(p)
        fitted = FittedPipeline(self, tuple(params), tuple(int(d) for d in arr.shape[1:]))
        return fitted, np.asarray(x, dtype=np.float32)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape for per-sample `input_shape` (runs one zero sample)."""
        x: NDArray[Any] = np.zeros((1, *input_shape), dtype=np.float32)
        for i, cfg in enumerate(self.blocks):
            # Fitted blocks keep the shape: skip them rather than invent parameters.
            if _needs_fit(cfg):
                continue
            with _in_block(i, cfg):
                x = _apply(cfg, x, None)
        return tuple(int(d) for d in x.shape[1:])


@dataclass(frozen=True, eq=False)
class FittedPipeline:
    """A feature pipeline with the parameters it learned from the train split."""

    pipeline: FeaturePipeline
    block_params: tuple[BlockParams | None, ...]
    input_shape: tuple[int, ...]
    """Per-sample shape of the raw input the pipeline was fitted on."""

    @property
    def hash(self) -> str:
        return self.pipeline.hash

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the features."""
        return self.pipeline.output_shape(self.input_shape)

    def transform(self, x: ArrayLike) -> dsp.Float32Array:
        """Features of a batch (N, *input_shape) as float32."""
        arr = _batch(x, "feature pipeline input")
        got = tuple(int(d) for d in arr.shape[1:])
        if got != self.input_shape:
            first = (
                f"feature block 0 ({self.pipeline.blocks[0].block})"
                if self.pipeline.blocks
                else "feature pipeline"
            )
            raise DataError(
                f"{first}: expected samples of shape {self.input_shape} (the shape the"
                f" pipeline was fitted on), got {got}"
            )
        out: NDArray[Any] = arr
        for i, (cfg, p) in enumerate(zip(self.pipeline.blocks, self.block_params, strict=True)):
            with _in_block(i, cfg):
                out = _apply(cfg, out, p)
        return np.asarray(out, dtype=np.float32)

    def params(self) -> dict[str, Any]:
        """Fitted parameters as JSON-safe data; float32 values survive a JSON round trip."""
        entries: list[dict[str, Any] | None] = []
        for cfg, p in zip(self.pipeline.blocks, self.block_params, strict=True):
            if isinstance(p, dsp.StandardizeParams):
                entries.append({"block": cfg.block, "mean": p.mean.tolist(), "std": p.std.tolist()})
            elif isinstance(p, dsp.MinMaxParams):
                entries.append(
                    {"block": cfg.block, "min": p.minimum.tolist(), "max": p.maximum.tolist()}
                )
            else:
                entries.append(None)
        return {
            "code_version": FEATURES_CODE_VERSION,
            "pipeline_hash": self.hash,
            "input_shape": list(self.input_shape),
            "blocks": entries,
        }

    @classmethod
    def from_params(cls, pipeline: FeaturePipeline, params: Mapping[str, Any]) -> FittedPipeline:
        """Rebuild a fitted pipeline from `params()` output, checking that they belong to it."""
        if params.get("pipeline_hash") != pipeline.hash:
            raise DataError(
                f"fitted params belong to feature pipeline {str(params.get('pipeline_hash'))[:16]},"
                f" not to {pipeline.hash[:16]}"
            )
        entries = params.get("blocks")
        shape = params.get("input_shape")
        if not isinstance(entries, list) or len(entries) != len(pipeline.blocks):
            raise DataError(
                f"fitted params: 'blocks' must be a list of {len(pipeline.blocks)} entries"
            )
        if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
            raise DataError("fitted params: 'input_shape' must be a list of integers")
        restored: list[BlockParams | None] = []
        for i, (cfg, entry) in enumerate(zip(pipeline.blocks, entries, strict=True)):
            restored.append(_restore(i, cfg, entry))
        return cls(pipeline, tuple(restored), tuple(shape))


def _restore(index: int, cfg: BlockConfig, entry: Any) -> BlockParams | None:
    where = f"fitted params of feature block {index} ({cfg.block})"
    if not _needs_fit(cfg):
        if entry is not None:
            raise DataError(f"{where}: this block has no fitted state, got {entry!r}")
        return None
    keys = ("mean", "std") if isinstance(cfg, StandardizeConfig) else ("min", "max")
    if not isinstance(entry, Mapping) or any(k not in entry for k in keys):
        raise DataError(f"{where}: expected an object with keys {list(keys)}")
    try:
        a, b = (np.asarray(entry[k], dtype=np.float32) for k in keys)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: {list(keys)} must be numbers or nested lists ({exc})") from exc
    if a.shape != b.shape:
        raise DataError(f"{where}: '{keys[0]}' has shape {a.shape} but '{keys[1]}' {b.shape}")
    if isinstance(cfg, StandardizeConfig):
        return dsp.StandardizeParams(mean=a, std=b)
    return dsp.MinMaxParams(minimum=a, maximum=b)
