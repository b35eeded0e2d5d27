"""Snapshots: deterministic split, content-addressed id, immutable and verified storage."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tinyops.data import (
    Dataset,
    SourceFingerprint,
    SplitConfig,
    create_snapshot,
    list_snapshots,
    load_snapshot,
)
from tinyops.data.snapshot import assign_split, sample_digests
from tinyops.errors import DataError, StoreError


def dataset(n: int = 60, seed: int = 0) -> Dataset:
    """n distinct 3-feature samples in 3 classes, with one unlabeled sample."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (np.arange(n) % 3).astype(np.int64)
    y[-1] = -1
    source = SourceFingerprint("csv", "data.csv", "ab" * 32, n)
    return Dataset(
        x, y, ("cat", "dog", "eel"), "table", feature_names=("a", "b", "c"), sources=(source,)
    )


def split_of(snapshot_x: np.ndarray, split: np.ndarray) -> dict[bytes, int]:
    return {row.tobytes(): int(s) for row, s in zip(snapshot_x, split, strict=True)}


def test_split_config_fractions_must_sum_to_one() -> None:
    with pytest.raises(ValidationError, match=r"must be 1, got 0.7 \+ 0.2 \+ 0.2"):
        SplitConfig(train=0.7, validation=0.2, test=0.2)


def test_split_cuts_each_class_at_the_fractions() -> None:
    ds = dataset(n=61)
    split = assign_split(sample_digests(ds), ds.y, SplitConfig())
    for label in (0, 1, 2):
        counts = np.bincount(split[ds.y == label], minlength=3)
        # 20 samples per class: round(14) train, round(17) - 14 = 3 validation, 3 test.
        assert counts.tolist() == [14, 3, 3]
    # Class "cat" has 21 samples: round(14.7) = 15 train, round(17.85) - 15 = 3, 3 test.
    ds21 = dataset(n=64)
    split21 = assign_split(sample_digests(ds21), ds21.y, SplitConfig())
    assert np.bincount(split21[ds21.y == 0], minlength=3).tolist() == [15, 3, 3]


def test_split_without_stratification_cuts_the_whole_set() -> None:
    ds = dataset(n=40)
    split = assign_split(
        sample_digests(ds), ds.y, SplitConfig(train=0.5, validation=0.25, test=0.25, stratify=False)
    )
    assert np.bincount(split, minlength=3).tolist() == [20, 10, 10]


def test_split_depends_on_the_seed() -> None:
    ds = dataset()
    digests = sample_digests(ds)
    first = assign_split(digests, ds.y, SplitConfig(seed=1))
    assert not np.array_equal(first, assign_split(digests, ds.y, SplitConfig(seed=2)))
    np.testing.assert_array_equal(first, assign_split(digests, ds.y, SplitConfig(seed=1)))


def test_sample_digest_covers_bytes_and_label() -> None:
    x = np.array([[1.0]], dtype=np.float32)
    one = Dataset(x, np.array([0]), ("a", "b"), "table")
    other = Dataset(x, np.array([1]), ("a", "b"), "table")
    expected = hashlib.sha256(x.tobytes() + (0).to_bytes(8, "little", signed=True)).digest()
    assert bytes(sample_digests(one)[0]) == expected
    assert bytes(sample_digests(one)[0]) != bytes(sample_digests(other)[0])


def test_seeded_rank_hashes_the_full_digest() -> None:
    # Digests ending in zero bytes must not be shortened before hashing (as S32 would do).
    digests = np.frombuffer(b"\x01" + b"\x00" * 31 + b"\x02" * 32, dtype="V32")
    y = np.array([0, 0], dtype=np.int64)
    config = SplitConfig(train=0.5, validation=0.5, test=0.0, seed=3)
    seed = (3).to_bytes(8, "little")
    ranks = [hashlib.sha256(seed + bytes(d)).digest()[:8] for d in digests]
    first = 0 if ranks[0] < ranks[1] else 1
    split = assign_split(digests, y, config)
    assert split[first] == 0 and split[1 - first] == 1
    # Seed 3 is one where hashing the stripped digest b"\x01" would swap the two samples.
    stripped = hashlib.sha256(seed + b"\x01").digest()[:8]
    assert (stripped < ranks[1]) != (ranks[0] < ranks[1])


def test_snapshot_is_stored_with_its_manifest(tmp_path: Path) -> None:
    ds = dataset()
    reports = {"validation": {"passed": True, "checks": []}, "dedup": {"removed": 0}}
    snap = create_snapshot(ds, SplitConfig(), tmp_path, reports)
    assert snap.path == tmp_path / "snapshots" / snap.id
    assert sorted(p.name for p in snap.path.iterdir()) == ["data.npz", "manifest.json"]
    manifest = json.loads((snap.path / "manifest.json").read_text())
    assert manifest == snap.manifest
    assert manifest["id"] == snap.id and len(snap.id) == 64
    assert manifest["modality"] == "table"
    assert manifest["shape"] == [60, 3] and manifest["dtype"] == "float32"
    assert manifest["classes"] == ["cat", "dog", "eel"]
    assert manifest["label_counts"] == {"cat": 20, "dog": 20, "eel": 19}
    assert manifest["unlabeled"] == 1
    train = manifest["split_counts"]["train"]
    assert train["per_class"] == {"cat": 14, "dog": 14, "eel": 13}
    assert sum(manifest["split_counts"][s]["total"] for s in ("train", "validation", "test")) == 60
    assert manifest["feature_names"] == ["a", "b", "c"]
    assert manifest["sources"] == [
        {"kind": "csv", "location": "data.csv", "sha256": "ab" * 32, "samples": 60}
    ]
    assert manifest["split"] == {
        "train": 0.7,
        "validation": 0.15,
        "test": 0.15,
        "seed": 42,
        "stratify": True,
    }
    assert manifest["reports"] == reports
    # Samples are stored in canonical order: sorted by digest.
    digests = [bytes(d) for d in sample_digests(snap.dataset)]
    assert digests == sorted(digests)


def test_subset_returns_one_split(tmp_path: Path) -> None:
    snap = create_snapshot(dataset(), SplitConfig(), tmp_path, None)
    x_train, y_train = snap.subset("train")
    x_test, _ = snap.subset("test")
    # Train: 14 cat + 14 dog + round(19 * 0.7) = 13 eel + the one unlabeled sample.
    assert len(x_train) == int((snap.split == 0).sum()) == 42
    assert len(y_train) == 42 and len(x_test) == int((snap.split == 2).sum())
    with pytest.raises(DataError, match="unknown split 'dev'"):
        snap.subset("dev")  # type: ignore[arg-type]


def test_same_data_in_another_order_gives_the_same_snapshot(tmp_path: Path) -> None:
    ds = dataset()
    first = create_snapshot(ds, SplitConfig(), tmp_path / "one", None)
    order = np.random.default_rng(7).permutation(len(ds))
    second = create_snapshot(ds.take(order), SplitConfig(), tmp_path / "two", None)
    assert first.id == second.id
    np.testing.assert_array_equal(first.dataset.x, second.dataset.x)
    # Each sample lands in the same split whatever the input order.
    assert split_of(first.dataset.x, first.split) == split_of(second.dataset.x, second.split)


def test_any_change_gives_a_new_id(tmp_path: Path) -> None:
    ds = dataset()
    base = create_snapshot(ds, SplitConfig(), tmp_path, None).id
    x = ds.x.copy()
    x[3, 1] += 1e-3
    changed_value = Dataset(x, ds.y, ds.classes, ds.modality, feature_names=ds.feature_names)
    y = ds.y.copy()
    y[0] = 1 if y[0] != 1 else 2
    relabelled = Dataset(ds.x, y, ds.classes, ds.modality, feature_names=ds.feature_names)
    renamed = Dataset(
        ds.x, ds.y, ("cat", "dog", "fox"), ds.modality, feature_names=ds.feature_names
    )
    ids = {
        create_snapshot(changed_value, SplitConfig(), tmp_path, None).id,
        create_snapshot(relabelled, SplitConfig(), tmp_path, None).id,
        create_snapshot(renamed, SplitConfig(), tmp_path, None).id,
        create_snapshot(ds, SplitConfig(seed=43), tmp_path, None).id,
    }
    assert base not in ids and len(ids) == 4
    # Sources are recorded, not hashed: the same samples from another file keep the id.
    moved = Dataset(ds.x, ds.y, ds.classes, ds.modality, feature_names=ds.feature_names)
    assert create_snapshot(moved, SplitConfig(), tmp_path, None).id == base


def test_existing_snapshot_is_not_rewritten(tmp_path: Path) -> None:
    ds = dataset()
    first = create_snapshot(ds, SplitConfig(), tmp_path, {"note": "first"})
    manifest_file = first.path / "manifest.json"
    written = manifest_file.stat().st_mtime_ns
    again = create_snapshot(ds, SplitConfig(), tmp_path, {"note": "second"})
    assert again.id == first.id
    assert again.manifest["reports"] == {"note": "first"}
    assert manifest_file.stat().st_mtime_ns == written


def test_a_failure_while_writing_leaves_no_entry(tmp_path: Path) -> None:
    # A report that is not JSON makes the manifest write fail after data.npz is written.
    with pytest.raises(TypeError):
        create_snapshot(dataset(), SplitConfig(), tmp_path, {"bad": object()})
    assert list((tmp_path / "snapshots").iterdir()) == []
    assert list_snapshots(tmp_path) == []


def test_lookup_by_prefix(tmp_path: Path) -> None:
    snap = create_snapshot(dataset(), SplitConfig(), tmp_path, None)
    assert load_snapshot(tmp_path, snap.id[:6]).id == snap.id
    assert load_snapshot(tmp_path, snap.id.upper()).id == snap.id
    with pytest.raises(StoreError, match="at least 6 hex characters"):
        load_snapshot(tmp_path, snap.id[:5])
    missing = "0" * 6 if not snap.id.startswith("000000") else "f" * 6
    with pytest.raises(StoreError, match=f"no snapshot with id starting '{missing}'"):
        load_snapshot(tmp_path, missing)


def test_ambiguous_prefix_is_an_error(tmp_path: Path) -> None:
    snap = create_snapshot(dataset(), SplitConfig(), tmp_path, None)
    # A second entry that shares the first 6 characters (never valid, but enough to clash).
    twin = snap.path.parent / (snap.id[:6] + "0" * 58)
    twin.mkdir()
    with pytest.raises(StoreError, match="is ambiguous"):
        load_snapshot(tmp_path, snap.id[:6])
    assert load_snapshot(tmp_path, snap.id).id == snap.id


def test_tampered_data_is_detected(tmp_path: Path) -> None:
    snap = create_snapshot(dataset(), SplitConfig(), tmp_path, None)
    x = snap.dataset.x.copy()
    x[0, 0] = 99.0
    np.savez(snap.path / "data.npz", x=x, y=snap.dataset.y, split=snap.split)
    with pytest.raises(StoreError, match="was modified: its content hashes to"):
        load_snapshot(tmp_path, snap.id)


def test_tampered_manifest_is_detected(tmp_path: Path) -> None:
    snap = create_snapshot(dataset(), SplitConfig(), tmp_path, None)
    manifest = dict(snap.manifest, classes=["cat", "dog", "fox"])
    (snap.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="was modified"):
        load_snapshot(tmp_path, snap.id)


def test_corrupt_entries_name_the_path(tmp_path: Path) -> None:
    snap = create_snapshot(dataset(), SplitConfig(), tmp_path, None)
    (snap.path / "data.npz").write_bytes(b"not a zip")
    with pytest.raises(StoreError, match=r"snapshot data .*data\.npz is unreadable"):
        load_snapshot(tmp_path, snap.id)
    (snap.path / "manifest.json").write_text("{broken")
    with pytest.raises(StoreError, match=r"manifest .*manifest\.json is unreadable"):
        list_snapshots(tmp_path)


def test_list_snapshots_newest_first(tmp_path: Path) -> None:
    assert list_snapshots(tmp_path) == []
    old = create_snapshot(dataset(seed=1), SplitConfig(), tmp_path, None)
    new = create_snapshot(dataset(seed=2), SplitConfig(), tmp_path, None)
    # Make the order explicit instead of relying on the clock's resolution.
    for snap, stamp in ((old, "2026-01-01T00:00:00+00:00"), (new, "2026-02-01T00:00:00+00:00")):
        manifest = dict(snap.manifest, created_at=stamp)
        (snap.path / "manifest.json").write_text(json.dumps(manifest))
    # A temporary folder of an interrupted write is not a snapshot.
    os.mkdir(tmp_path / "snapshots" / ".abc.tmp")
    assert [m["id"] for m in list_snapshots(tmp_path)] == [new.id, old.id]


def test_empty_data_set_cannot_be_snapshotted(tmp_path: Path) -> None:
    empty = Dataset(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), (), "table")
    with pytest.raises(DataError, match="cannot snapshot an empty data set"):
        create_snapshot(empty, SplitConfig(), tmp_path, None)
