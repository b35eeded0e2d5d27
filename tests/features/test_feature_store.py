"""Feature store: materialize once per (snapshot, pipeline), load after, never half-write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinyops.errors import DataError, StoreError
from tinyops.features import (
    FEATURES_CODE_VERSION,
    FeaturePipeline,
    list_feature_sets,
    load_feature_set,
    materialize,
)

SNAPSHOT = "a3f1" * 16  # a sha256-like snapshot id
PIPELINE = FeaturePipeline([{"block": "scale", "mul": 0.5}, {"block": "standardize"}])


def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    # Train column 0 scales to [0, 2, 4]: mean 2, std √(8/3); column 1 to [1, 1, 1]: std 0.
    return {
        "train": (np.array([[0.0, 2.0], [4.0, 2.0], [8.0, 2.0]]), np.array([0, 1, 0])),
        "validation": (np.array([[2.0, 2.0]]), np.array([1])),
        "test": (np.array([[100.0, 2.0], [4.0, 2.0]]), np.array([1, 0])),
    }


def entries(root: Path) -> list[str]:
    folder = root / "features"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_materialize_fits_on_train_and_stores_every_split(tmp_path: Path) -> None:
    features = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    assert not features.cached
    assert features.key == f"{SNAPSHOT[:16]}-{PIPELINE.hash[:16]}"
    assert features.path == tmp_path / "features" / features.key
    assert sorted(p.name for p in features.path.iterdir()) == ["features.npz", "manifest.json"]
    assert features.splits == ("train", "validation", "test")
    assert features.input_shape == (2,)
    std = np.sqrt(8 / 3)
    np.testing.assert_allclose(features.x("train")[:, 0], [-2 / std, 0, 2 / std], rtol=1e-6)
    # Test statistics do not leak into the fit: its outlier is scaled by train's mean and std.
    np.testing.assert_allclose(features.x("test")[:, 0], [48 / std, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(features.y("test"), [1, 0])
    assert features.x("validation").dtype == np.float32
    assert features.params["blocks"][1]["mean"] == [2.0, 1.0]


def test_manifest_records_lineage_and_shapes(tmp_path: Path) -> None:
    features = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    manifest = json.loads((features.path / "manifest.json").read_text())
    assert manifest["snapshot_id"] == SNAPSHOT
    assert manifest["pipeline_hash"] == PIPELINE.hash
    assert manifest["code_version"] == FEATURES_CODE_VERSION
    assert manifest["blocks"] == PIPELINE.spec()["blocks"]
    assert manifest["splits"]["test"] == {"x_shape": [2, 2], "y_shape": [2], "y_dtype": "int64"}
    assert manifest["params"]["pipeline_hash"] == PIPELINE.hash
    assert manifest["created_at"].endswith("+00:00")


def test_second_materialize_loads_without_recomputing(tmp_path: Path) -> None:
    first = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    arrays = first.path / "features.npz"
    before = arrays.stat()
    # Different raw data under the same snapshot id: if it were recomputed, x would change.
    garbage = {"train": (np.full((3, 2), 7.0), np.zeros(3))}
    second = materialize(tmp_path, SNAPSHOT, PIPELINE, garbage)
    after = arrays.stat()
    assert second.cached
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    np.testing.assert_array_equal(second.x("test"), first.x("test"))
    assert entries(tmp_path) == [first.key]


def test_another_pipeline_is_another_entry(tmp_path: Path) -> None:
    first = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    other = FeaturePipeline([{"block": "minmax"}])
    second = materialize(tmp_path, SNAPSHOT, other, splits())
    assert not second.cached and second.key != first.key
    np.testing.assert_array_equal(second.x("train")[:, 0], [0.0, 0.5, 1.0])


def test_fitted_pipeline_reproduces_the_stored_features(tmp_path: Path) -> None:
    features = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    fitted = load_feature_set(tmp_path, SNAPSHOT[:8]).fitted_pipeline()
    assert fitted.hash == PIPELINE.hash
    x_test, _ = splits()["test"]
    assert fitted.transform(x_test).tobytes() == features.x("test").tobytes()


def test_audio_features_round_trip_with_the_pipeline_sample_rate(tmp_path: Path) -> None:
    pipeline = FeaturePipeline(
        [
            {"block": "mfcc", "frame_length": 256, "frame_step": 128, "fft_length": 256},
            {"block": "standardize", "axis": "all"},
        ],
        sample_rate=8000,
    )
    rng = np.random.default_rng(8)
    audio = {"train": (rng.standard_normal((4, 1024)), np.arange(4))}
    audio["test"] = (rng.standard_normal((2, 1024)), np.array([1, 2]))
    features = materialize(tmp_path, SNAPSHOT, pipeline, audio)
    assert features.input_shape == (7, 10)  # 1 + (1024 - 256) // 128 frames, 10 MFCCs
    assert float(np.mean(features.x("train"))) == pytest.approx(0.0, abs=1e-6)
    fitted = features.fitted_pipeline()
    assert fitted.hash == pipeline.hash
    assert fitted.transform(audio["test"][0]).tobytes() == features.x("test").tobytes()


def test_list_and_load_by_prefix(tmp_path: Path) -> None:
    assert list_feature_sets(tmp_path) == []
    a = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    b = materialize(tmp_path, "b" * 64, PIPELINE, splits())
    rows = list_feature_sets(tmp_path)
    assert sorted(r["key"] for r in rows) == sorted([a.key, b.key])
    row = next(r for r in rows if r["key"] == a.key)
    assert row["blocks"] == ["scale", "standardize"]
    assert row["rows"] == {"train": 3, "validation": 1, "test": 2}
    loaded = load_feature_set(tmp_path, a.key[:6])
    assert loaded.cached and loaded.key == a.key
    np.testing.assert_array_equal(loaded.x("train"), a.x("train"))
    with pytest.raises(StoreError, match=r"no feature set matches 'ffff'.*stored: "):
        load_feature_set(tmp_path, "ffff")
    materialize(tmp_path, SNAPSHOT, FeaturePipeline([{"block": "minmax"}]), splits())
    with pytest.raises(StoreError, match="matches several feature sets"):
        load_feature_set(tmp_path, SNAPSHOT[:16])


def test_missing_split_is_reported(tmp_path: Path) -> None:
    only_train = {"train": splits()["train"]}
    features = materialize(tmp_path, SNAPSHOT, PIPELINE, only_train)
    assert features.splits == ("train",)
    with pytest.raises(DataError, match="has no 'test' split; it holds: train"):
        features.x("test")


def test_corrupt_arrays_are_detected(tmp_path: Path) -> None:
    features = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    arrays = features.path / "features.npz"
    data = bytearray(arrays.read_bytes())
    data[-10] ^= 0xFF
    arrays.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"features.npz has sha256 .* the entry is corrupt"):
        load_feature_set(tmp_path, features.key)
    with pytest.raises(StoreError, match="corrupt"):
        materialize(tmp_path, SNAPSHOT, PIPELINE, splits())


def test_corrupt_manifest_is_detected_and_listed(tmp_path: Path) -> None:
    features = materialize(tmp_path, SNAPSHOT, PIPELINE, splits())
    (features.path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"manifest\.json is unreadable"):
        load_feature_set(tmp_path, features.key)
    (row,) = list_feature_sets(tmp_path)
    assert row["key"] == features.key and "unreadable" in row["error"]
    (features.path / "manifest.json").write_text('{"snapshot_id": "x"}')
    with pytest.raises(StoreError, match=r"lacks keys \['key', 'pipeline_hash'"):
        load_feature_set(tmp_path, features.key)


def test_failure_mid_way_leaves_no_entry(tmp_path: Path) -> None:
    broken = splits()
    broken["test"] = (np.zeros((2, 3)), np.array([0, 1]))  # 3 features where train has 2
    with pytest.raises(DataError, match=r"split 'test': .*expected samples of shape \(2,\)"):
        materialize(tmp_path, SNAPSHOT, PIPELINE, broken)
    # Neither the entry nor its temp folder remain; the next try succeeds from scratch.
    assert entries(tmp_path) == []
    assert not materialize(tmp_path, SNAPSHOT, PIPELINE, splits()).cached


def test_split_validation(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="splits must include 'train'"):
        materialize(tmp_path, SNAPSHOT, PIPELINE, {"test": splits()["test"]})
    with pytest.raises(DataError, match=r"unknown split names \['holdout'\]"):
        materialize(tmp_path, SNAPSHOT, PIPELINE, {**splits(), "holdout": splits()["test"]})
    with pytest.raises(DataError, match=r"split 'train': x has shape \(3, 2\) and y \(2,\)"):
        materialize(tmp_path, SNAPSHOT, PIPELINE, {"train": (np.zeros((3, 2)), np.zeros(2))})
    with pytest.raises(DataError, match=r"snapshot id '\.\./x' must be"):
        materialize(tmp_path, "../x", PIPELINE, splits())
    assert entries(tmp_path) == []
