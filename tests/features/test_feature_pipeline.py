"""FeaturePipeline: hash identity, fitting on train only, params round trip, shape errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tinyops.errors import DataError, ProjectError
from tinyops.features import (
    FEATURES_CODE_VERSION,
    FeaturePipeline,
    FittedPipeline,
    ScaleConfig,
    StandardizeConfig,
)
from tinyops.store import canonical_json, sha256_bytes

DIGITS = [{"block": "scale", "mul": 0.0625}, {"block": "reshape", "shape": [8, 8, 1]}]


def test_hash_is_sha256_of_the_canonical_spec() -> None:
    pipeline = FeaturePipeline(DIGITS)
    assert pipeline.spec() == {
        "blocks": [
            {"block": "scale", "mul": 0.0625, "add": 0.0},
            {"block": "reshape", "shape": [8, 8, 1]},
        ],
        "sample_rate": None,
        "code_version": FEATURES_CODE_VERSION,
    }
    assert pipeline.hash == sha256_bytes(canonical_json(pipeline.spec()))
    # Pinned: a change here means every stored feature set gets a new key. Bump
    # FEATURES_CODE_VERSION on purpose, and update this value with it.
    assert pipeline.hash == "487a0252b880ceae7b8e36c16e156c2b0fa0f9daa0036fd5db5a458970af926a"


def test_hash_is_the_same_in_another_process() -> None:
    code = (
        "from tinyops.features import FeaturePipeline;"
        "print(FeaturePipeline([{'block': 'mfcc'}, {'block': 'standardize'}], 16000).hash)"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    here = FeaturePipeline([{"block": "mfcc"}, {"block": "standardize"}], 16000).hash
    assert other == here


def test_defaults_spelled_out_or_omitted_give_the_same_hash() -> None:
    omitted = FeaturePipeline([{"block": "mfcc"}, {"block": "fft_band_power"}], sample_rate=16000)
    spelled = FeaturePipeline(
        [
            {
                "block": "mfcc",
                "sample_rate": 16000,
                "frame_length": 640,
                "frame_step": 320,
                "fft_length": 1024,
                "num_mel_bins": 40,
                "lower_hz": 20,
                "upper_hz": 4000,
                "num_coefficients": 10,
            },
            {"block": "fft_band_power", "bands": 8, "log": False},
        ],
        sample_rate=16000,
    )
    assert omitted.hash == spelled.hash
    models = FeaturePipeline([ScaleConfig(mul=0.0625), {"block": "reshape", "shape": (8, 8, 1)}])
    assert models.hash == FeaturePipeline(DIGITS).hash


def test_any_change_changes_the_hash() -> None:
    base = FeaturePipeline([{"block": "mfcc"}, {"block": "standardize"}], sample_rate=16000)
    variants = [
        FeaturePipeline(
            [{"block": "mfcc", "num_coefficients": 12}, {"block": "standardize"}], 16000
        ),
        FeaturePipeline([{"block": "mfcc"}, {"block": "standardize", "eps": 1e-5}], 16000),
        FeaturePipeline([{"block": "mfcc"}, {"block": "standardize"}], sample_rate=8000),
        FeaturePipeline([{"block": "mfcc"}, {"block": "minmax"}], sample_rate=16000),
        FeaturePipeline([{"block": "mfcc"}], sample_rate=16000),
    ]
    hashes = {base.hash} | {v.hash for v in variants}
    assert len(hashes) == len(variants) + 1


def test_sample_rate_is_resolved_and_checked() -> None:
    pipeline = FeaturePipeline([{"block": "log_mel"}], sample_rate=16000)
    assert pipeline.blocks[0].sample_rate == 16000  # type: ignore[union-attr]
    with pytest.raises(ProjectError, match=r"feature block 0 \(log_mel\): needs sample_rate"):
        FeaturePipeline([{"block": "log_mel"}])
    with pytest.raises(
        ProjectError, match=r"block 1 \(mfcc\): upper_hz \(4000.0\) is above Nyquist"
    ):
        FeaturePipeline([{"block": "cast_float"}, {"block": "mfcc"}], sample_rate=6000)
    with pytest.raises(ProjectError, match=r"edges_hz reaches 60.0 Hz, above Nyquist \(50.0 Hz"):
        FeaturePipeline([{"block": "fft_band_power", "edges_hz": [0, 60]}], sample_rate=100)


def test_fit_learns_each_block_on_the_output_of_the_previous() -> None:
    pipeline = FeaturePipeline([{"block": "scale", "mul": 2.0}, {"block": "standardize"}])
    train = np.array([[1.0, 0.0], [3.0, 10.0]])
    fitted = pipeline.fit(train)
    # After scaling: [[2, 0], [6, 20]] → mean [4, 10], std [2, 10].
    params = fitted.params()["blocks"]
    assert params == [None, {"block": "standardize", "mean": [4.0, 10.0], "std": [2.0, 10.0]}]
    np.testing.assert_array_equal(fitted.transform(np.array([[4.0, 20.0]])), [[2.0, 3.0]])


def test_fit_uses_train_only_so_test_data_does_not_leak() -> None:
    pipeline = FeaturePipeline([{"block": "minmax"}])
    train = np.array([[0.0], [10.0]])
    test = np.array([[1000.0], [-1000.0]])
    fitted = pipeline.fit(train)
    np.testing.assert_array_equal(fitted.transform(test), [[100.0], [-100.0]])
    # Transforming the test split changes nothing learned, and train features stay put.
    assert fitted.params()["blocks"][0] == {"block": "minmax", "min": [0.0], "max": [10.0]}
    np.testing.assert_array_equal(fitted.transform(train), [[0.0], [1.0]])


def test_params_round_trip_through_json_exactly() -> None:
    rng = np.random.default_rng(5)
    pipeline = FeaturePipeline(
        [
            {"block": "window", "length": 16, "stride": 8},
            {"block": "fft_band_power", "bands": 4},
            {"block": "standardize", "axis": "sample"},
            {"block": "minmax", "clip": True},
        ]
    )
    train, test = rng.standard_normal((20, 64)), rng.standard_normal((5, 64))
    fitted = pipeline.fit(train)
    restored = FittedPipeline.from_params(pipeline, json.loads(json.dumps(fitted.params())))
    assert restored.transform(test).tobytes() == fitted.transform(test).tobytes()
    assert restored.input_shape == (64,)


def test_from_params_refuses_params_of_another_pipeline() -> None:
    fitted = FeaturePipeline([{"block": "standardize"}]).fit(np.ones((3, 2)))
    other = FeaturePipeline([{"block": "standardize", "eps": 0.1}])
    with pytest.raises(DataError, match="belong to feature pipeline"):
        FittedPipeline.from_params(other, fitted.params())
    broken = fitted.params() | {"blocks": [{"block": "standardize", "mean": [0.0]}]}
    with pytest.raises(DataError, match=r"block 0 \(standardize\): expected an object with keys"):
        FittedPipeline.from_params(fitted.pipeline, broken)


def test_fit_transform_and_transform_are_deterministic() -> None:
    audio = np.random.default_rng(6).standard_normal((6, 8000))
    pipeline = FeaturePipeline([{"block": "mfcc"}, {"block": "standardize"}], sample_rate=8000)
    fitted, train_features = pipeline.fit_transform(audio)
    again, train_again = pipeline.fit_transform(audio)
    assert train_features.tobytes() == train_again.tobytes()
    assert fitted.transform(audio).tobytes() == train_features.tobytes()
    assert json.dumps(fitted.params()) == json.dumps(again.params())


@pytest.mark.parametrize(
    ("blocks", "sample_rate", "input_shape", "expected"),
    [
        (DIGITS, None, (64,), (8, 8, 1)),
        ([{"block": "mfcc"}, {"block": "standardize"}], 16000, (16000,), (49, 10)),
        (
            [
                {"block": "window", "length": 32, "stride": 16},
                {"block": "fft_band_power", "bands": 4, "channels_last": True, "log": True},
            ],
            None,
            (128, 3),
            (7, 4, 3),
        ),
        (
            [{"block": "image_resize", "size": [6, 4]}, {"block": "grayscale"}],
            None,
            (10, 12, 3),
            (6, 4, 1),
        ),
    ],
)
def test_output_shape_matches_transform(
    blocks: list[dict[str, object]],
    sample_rate: int | None,
    input_shape: tuple[int, ...],
    expected: tuple[int, ...],
) -> None:
    pipeline = FeaturePipeline(blocks, sample_rate=sample_rate)
    assert pipeline.output_shape(input_shape) == expected
    fitted = pipeline.fit(np.random.default_rng(7).random((3, *input_shape)))
    assert fitted.transform(np.zeros((2, *input_shape))).shape == (2, *expected)
    assert fitted.output_shape == expected


def test_shape_errors_name_the_block_and_the_expected_shape() -> None:
    pipeline = FeaturePipeline([{"block": "scale"}, {"block": "grayscale"}])
    with pytest.raises(DataError, match=r"feature block 1 \(grayscale\): .*\(N, H, W, 3\)"):
        pipeline.fit(np.zeros((2, 4, 4, 1)))
    fitted = FeaturePipeline([StandardizeConfig()]).fit(np.ones((3, 4)))
    with pytest.raises(
        DataError, match=r"feature block 0 \(standardize\): expected samples of shape \(4,\)"
    ):
        fitted.transform(np.ones((2, 5)))
    with pytest.raises(DataError, match="cannot fit on an empty train split"):
        FeaturePipeline(DIGITS).fit(np.zeros((0, 64)))
    with pytest.raises(DataError, match="expected a numeric array, got dtype <U1"):
        FeaturePipeline(DIGITS).fit(np.array([["a"]]))
