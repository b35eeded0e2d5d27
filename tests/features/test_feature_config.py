"""Block configuration: the tagged union, filled-in defaults and errors with key paths."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from tinyops.errors import ProjectError
from tinyops.features import (
    FeaturesConfig,
    FftBandPowerConfig,
    MfccConfig,
    ReshapeConfig,
    ScaleConfig,
    parse_blocks,
)


def test_blocks_parse_from_yaml_into_their_models() -> None:
    text = """
    sample_rate: 16000
    blocks:
      - {block: mfcc, num_coefficients: 13}
      - {block: standardize, axis: all}
    """
    config = FeaturesConfig.model_validate(yaml.safe_load(text))
    mfcc, standardize = config.blocks
    assert isinstance(mfcc, MfccConfig) and mfcc.num_coefficients == 13
    assert mfcc.frame_length == 640 and mfcc.sample_rate is None  # filled later, by the pipeline
    assert standardize.block == "standardize" and standardize.axis == "all"


def test_models_fill_every_default_in_their_dump() -> None:
    assert ScaleConfig().model_dump() == {"block": "scale", "mul": 1.0, "add": 0.0}
    assert ReshapeConfig(shape=[8, 8, 1]).model_dump(mode="json")["shape"] == [8, 8, 1]


def test_unknown_block_lists_the_known_ones() -> None:
    with pytest.raises(ProjectError, match=r"feature block 1: unknown block 'fft'.*fft_band_power"):
        parse_blocks([{"block": "scale"}, {"block": "fft"}])
    with pytest.raises(ProjectError, match="feature block 0: 'block' is missing"):
        parse_blocks([{"mul": 2.0}])


def test_errors_name_block_index_name_and_field() -> None:
    with pytest.raises(ProjectError, match=r"feature block 0 \(scale\) field 'mull'.*got 2"):
        parse_blocks([{"block": "scale", "mull": 2}])
    with pytest.raises(ProjectError, match=r"block 1 \(window\) field 'stride': .*greater than 0"):
        parse_blocks([{"block": "scale"}, {"block": "window", "length": 4, "stride": 0}])
    with pytest.raises(ProjectError, match=r"fft_length \(256\) must be >= frame_length \(640\)"):
        parse_blocks([{"block": "log_mel", "fft_length": 256}])
    with pytest.raises(ProjectError, match=r"num_coefficients \(50\) must be <= num_mel_bins"):
        parse_blocks([{"block": "mfcc", "num_coefficients": 50}])
    with pytest.raises(ProjectError, match=r"shape entries must be positive.*\[-1, -1\]"):
        parse_blocks([{"block": "reshape", "shape": [-1, -1]}])


def test_band_count_follows_the_edges() -> None:
    assert FftBandPowerConfig().bands == 8
    assert FftBandPowerConfig(edges_hz=(0.0, 5.0, 20.0)).bands == 2
    with pytest.raises(pydantic.ValidationError, match="bands=3 disagrees with edges_hz"):
        FftBandPowerConfig(bands=3, edges_hz=(0.0, 5.0))
    with pytest.raises(pydantic.ValidationError, match="strictly increasing"):
        FftBandPowerConfig(edges_hz=(0.0, 5.0, 5.0))


def test_configs_are_frozen() -> None:
    block = ScaleConfig(mul=2.0)
    with pytest.raises(pydantic.ValidationError):
        block.mul = 3.0  # type: ignore[misc]
