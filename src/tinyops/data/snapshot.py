"""Dataset snapshots: immutable, content-addressed copies of a data set and its split.

A snapshot is what training reads. It lives at `<store>/snapshots/<id>/`:

    data.npz        x, y and split (0 train, 1 validation, 2 test), in canonical order
    manifest.json   id, creation time, modality, shape, dtype, classes, label and split
                    counts, sample rate, feature names, source fingerprints, split config
                    and the reports given by the caller (validation, dedup)

Determinism, so that the same data always gives the same snapshot:

- each sample's digest is sha256(x row bytes ‖ label as int64); samples are stored sorted
  by digest, so reading files in another order changes nothing;
- the split is a function of content and seed only: within each class (or over all
  samples if not stratified) samples are ranked by sha256(seed ‖ digest) and cut at the
  configured fractions. A sample keeps its split however the data set is shuffled;
- the id is the sha256 over a canonical header (dtypes, shapes, classes, modality, sample
  rate, feature names) followed by the bytes of x, y and split. Any change gives a new id;
  where the data came from (sources) and when are recorded but are not part of the id.

An existing snapshot is never rewritten. Loading one re-hashes its content and refuses
(`StoreError`) if it no longer matches its id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from tinyops.data.config import SplitConfig
from tinyops.data.dataset import Dataset, SourceFingerprint
from tinyops.errors import DataError, StoreError
from tinyops.store.atomic import atomic_dir, atomic_write_json, canonical_json

__all__ = [
    "SPLIT_NAMES",
    "Snapshot",
    "SplitConfig",
    "assign_split",
    "create_snapshot",
    "list_snapshots",
    "load_snapshot",
    "sample_digests",
    "snapshot_id",
]

SplitName = Literal["train", "validation", "test"]
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "validation", "test")
"""Split names by their code in the split array."""

SNAPSHOT_FORMAT = 1
"""Version of the canonical encoding the id is computed over."""

MIN_PREFIX = 6  # hex characters needed to look a snapshot up by a prefix of its id
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot: its data set (in canonical order) and split per sample."""

    id: str
    path: Path
    manifest: dict[str, Any]
    dataset: Dataset
    split: NDArray[np.int8]

    def subset(self, name: SplitName) -> tuple[NDArray[Any], NDArray[np.int64]]:
        """The (x, y) of one split: "train", "validation" or "test"."""
        if name not in SPLIT_NAMES:
            raise DataError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")
        mask = self.split == SPLIT_NAMES.index(name)
        return self.dataset.x[mask], self.dataset.y[mask]


def sample_digests(ds: Dataset) -> NDArray[np.void]:
    """sha256 of each sample's bytes followed by its label (int64, little-endian).

    Returned as (N,) opaque 32-byte items (`V32`): they sort bytewise, and unlike `S32`
    they keep trailing zero bytes.
    """
    n = len(ds)
    row_bytes = math.prod(ds.x.shape[1:]) * ds.x.dtype.itemsize
    rows = np.ascontiguousarray(ds.x).view(np.uint8).reshape(n, row_bytes)
    labels = ds.y.astype("<i8").view(np.uint8).reshape(n, 8)
    records = np.concatenate([rows, labels], axis=1)
    digests = b"".join(hashlib.sha256(record).digest() for record in records)
    return np.frombuffer(digests, dtype="V32")


def assign_split(
    digests: NDArray[np.void], y: NDArray[np.int64], config: SplitConfig
) -> NDArray[np.int8]:
    """Split code per sample (0 train, 1 validation, 2 test) from content and seed only.

    Within each stratum (a class, the unlabeled samples, or everything if not stratified)
    samples are ranked by sha256(seed as 8 bytes little-endian ‖ digest); the first
    round(n·train) go to train, up to round(n·(train + validation)) to validation, the
    rest to test (rounding half up, n = samples in the stratum).
    """
    seed = config.seed.to_bytes(8, "little")
    ranks = np.frombuffer(
        b"".join(hashlib.sha256(seed + bytes(d)).digest()[:8] for d in digests), dtype=">u8"
    )
    split = np.empty(len(digests), dtype=np.int8)
    strata = np.unique(y) if config.stratify else np.array([0])
    for stratum in strata:
        members = np.flatnonzero(y == stratum) if config.stratify else np.arange(len(y))
        ordered = members[np.argsort(ranks[members], kind="stable")]
        n = len(ordered)
        train_end = math.floor(n * config.train + 0.5)
        validation_end = max(train_end, math.floor(n * (config.train + config.validation) + 0.5))
        split[ordered[:train_end]] = 0
        split[ordered[train_end:validation_end]] = 1
        split[ordered[validation_end:]] = 2
    return split


def snapshot_id(ds: Dataset, split: NDArray[np.int8]) -> str:
    """sha256 (hex) over the canonical encoding of a data set and its split array."""
    header = {
        "format": SNAPSHOT_FORMAT,
        "x_dtype": ds.x.dtype.str,
        "x_shape": list(ds.x.shape),
        "y_dtype": ds.y.dtype.str,
        "split_dtype": split.dtype.str,
        "classes": list(ds.classes),
        "modality": ds.modality,
        "sample_rate": ds.sample_rate,
        "feature_names": None if ds.feature_names is None else list(ds.feature_names),
    }
    h = hashlib.sha256(canonical_json(header) + b"\n")
    for array in (ds.x, ds.y, split):
        h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def create_snapshot(
    ds: Dataset,
    split: SplitConfig,
    store_root: Path,
    report: dict[str, Any] | None = None,
) -> Snapshot:
    """Store `ds` with its split as a snapshot, or return the identical one already stored.

    `report` holds the reports to keep with the data (JSON-safe), e.g.
    {"validation": ValidationReport.to_dict(), "dedup": DedupReport.to_dict()}; it is
    stored as given under the manifest's "reports" key. An existing snapshot with the same
    id is returned unchanged, with the manifest it was first written with.
    """
    if len(ds) == 0:
        raise DataError("cannot snapshot an empty data set: expected at least one sample")
    digests = sample_digests(ds)
    order = np.argsort(digests, kind="stable")
    canonical = ds.take(order)
    assignment = assign_split(digests[order], canonical.y, split)
    sid = snapshot_id(canonical, assignment)
    final = _snapshots_dir(store_root) / sid
    if final.exists():
        return load_snapshot(store_root, sid)
    manifest = _manifest(sid, canonical, assignment, split, report)
    with atomic_dir(final) as tmp:
        np.savez(tmp / "data.npz", x=canonical.x, y=canonical.y, split=assignment)
        atomic_write_json(tmp / "manifest.json", manifest)
    return load_snapshot(store_root, sid)


def load_snapshot(store_root: Path, snapshot: str) -> Snapshot:
    """Load a snapshot by id or unique id prefix (≥ 6 hex characters) and verify it."""
    path = _resolve(store_root, snapshot)
    manifest = _read_manifest(path)
    data_path = path / "data.npz"
    try:
        with np.load(data_path, allow_pickle=False) as archive:
            x = np.asarray(archive["x"])
            y = np.asarray(archive["y"])
            split = np.asarray(archive["split"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise StoreError(f"snapshot data {data_path} is unreadable: {exc}") from exc
    try:
        dataset = Dataset(
            x=x,
            y=y,
            classes=tuple(manifest["classes"]),
            modality=manifest["modality"],
            sample_rate=manifest["sample_rate"],
            feature_names=(
                None if manifest["feature_names"] is None else tuple(manifest["feature_names"])
            ),
            sources=tuple(SourceFingerprint(**s) for s in manifest["sources"]),
        )
    except (KeyError, TypeError, DataError) as exc:
        raise StoreError(f"snapshot {path} is inconsistent: {exc}") from exc
    if split.shape != y.shape or split.dtype != np.int8:
        raise StoreError(
            f"snapshot data {data_path} has a split of {split.dtype} {split.shape}; "
            f"expected int8 {y.shape}"
        )
    actual = snapshot_id(dataset, split)
    if actual != path.name or manifest.get("id") != path.name:
        raise StoreError(
            f"snapshot {path} was modified: its content hashes to {actual} and its manifest "
            f"says {manifest.get('id')}, but it is stored as {path.name}"
        )
    return Snapshot(id=path.name, path=path, manifest=manifest, dataset=dataset, split=split)


def list_snapshots(store_root: Path) -> list[dict[str, Any]]:
    """Manifests of every stored snapshot, newest first (content is not re-hashed)."""
    root = _snapshots_dir(store_root)
    if not root.is_dir():
        return []
    manifests = [_read_manifest(p) for p in _entries(root)]
    manifests.sort(key=lambda m: (str(m.get("created_at", "")), str(m.get("id"))), reverse=True)
    return manifests


def _manifest(
    sid: str,
    ds: Dataset,
    split: NDArray[np.int8],
    config: SplitConfig,
    report: dict[str, Any] | None,
) -> dict[str, Any]:
    def counts(mask: NDArray[np.bool_]) -> dict[str, Any]:
        labels = ds.y[mask]
        per_class = np.bincount(labels[labels >= 0], minlength=len(ds.classes))
        return {
            "total": int(mask.sum()),
            "per_class": dict(zip(ds.classes, per_class.tolist(), strict=True)),
            "unlabeled": int((labels < 0).sum()),
        }

    everything = counts(np.ones(len(ds), dtype=bool))
    return {
        "id": sid,
        "format": SNAPSHOT_FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "modality": ds.modality,
        "shape": list(ds.x.shape),
        "dtype": str(ds.x.dtype),
        "classes": list(ds.classes),
        "label_counts": everything["per_class"],
        "unlabeled": everything["unlabeled"],
        "split_counts": {name: counts(split == code) for code, name in enumerate(SPLIT_NAMES)},
        "sample_rate": ds.sample_rate,
        "feature_names": None if ds.feature_names is None else list(ds.feature_names),
        "sources": [s.to_dict() for s in ds.sources],
        "split": config.model_dump(mode="json"),
        "reports": report,
    }


def _snapshots_dir(store_root: Path) -> Path:
    return store_root / "snapshots"


def _entries(root: Path) -> list[Path]:
    # Names starting with a dot are atomic_dir's temporary folders, never snapshots.
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _resolve(store_root: Path, snapshot: str) -> Path:
    root = _snapshots_dir(store_root)
    snapshot = snapshot.lower()
    if len(snapshot) < MIN_PREFIX or not _HEX.fullmatch(snapshot):
        raise StoreError(
            f"snapshot id {snapshot!r} is not valid: expected at least {MIN_PREFIX} "
            "hex characters of a snapshot id"
        )
    matches = [p for p in _entries(root) if p.name.startswith(snapshot)] if root.is_dir() else []
    if not matches:
        raise StoreError(f"no snapshot with id starting {snapshot!r} in {root}")
    if len(matches) > 1:
        names = ", ".join(p.name[:12] for p in matches)
        raise StoreError(
            f"snapshot id prefix {snapshot!r} is ambiguous in {root}: matches {names}; "
            "give more characters"
        )
    return matches[0]


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"snapshot manifest {manifest_path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict):
        raise StoreError(f"snapshot manifest {manifest_path} is not a JSON object")
    return manifest
