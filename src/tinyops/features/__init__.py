"""Feature engineering with exact, documented math, hashed and cached per dataset snapshot.

A `FeaturePipeline` is an ordered list of blocks (scale, standardize, minmax, window,
fft_band_power, log_mel, mfcc, image_resize, grayscale, image_normalize, reshape,
cast_float). Each block is plain NumPy whose docstring states the arithmetic a device must
repeat; `blocks` holds them. The pipeline's hash names the computation; `materialize`
stores the features of a snapshot once per (snapshot, pipeline) and loads them afterwards.
"""

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
from tinyops.features.pipeline import FEATURES_CODE_VERSION, FeaturePipeline, FittedPipeline
from tinyops.features.store import (
    FeatureSet,
    feature_set_key,
    list_feature_sets,
    load_feature_set,
    materialize,
)

__all__ = [
    "FEATURES_CODE_VERSION",
    "BlockConfig",
    "CastFloatConfig",
    "FeaturePipeline",
    "FeatureSet",
    "FeaturesConfig",
    "FftBandPowerConfig",
    "FittedPipeline",
    "GrayscaleConfig",
    "ImageNormalizeConfig",
    "ImageResizeConfig",
    "LogMelConfig",
    "MfccConfig",
    "MinMaxConfig",
    "ReshapeConfig",
    "ScaleConfig",
    "StandardizeConfig",
    "WindowConfig",
    "feature_set_key",
    "list_feature_sets",
    "load_feature_set",
    "materialize",
    "parse_blocks",
]
