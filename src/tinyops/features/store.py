"""The feature store: features computed once per (dataset snapshot, feature pipeline).

A feature set lives at `<store_root>/features/<snapshot id[:16]>-<pipeline hash[:16]>/`:

    features.npz    x_train, y_train, x_validation, y_validation, x_test, y_test
                    (the splits that were given; x float32, y as given)
    manifest.json   snapshot id, pipeline hash and blocks, fitted params, shapes,
                    sha256 of features.npz, creation time, feature code version

Both inputs of the key are content hashes, so an existing entry is the answer: it is
loaded, never recomputed. An entry is written into a temp folder and renamed into place,
so a failure leaves no entry behind, and a reader never sees half of one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tinyops.errors import DataError, StoreError
from tinyops.features.pipeline import FEATURES_CODE_VERSION, FeaturePipeline, FittedPipeline
from tinyops.store.atomic import atomic_dir, atomic_write_json, sha256_file

SPLITS = ("train", "validation", "test")
"""Split names a feature set may hold; train is required, as the fitted blocks learn on it."""

FEATURES_DIR = "features"
ARRAYS_FILE = "features.npz"
MANIFEST_FILE = "manifest.json"

_SNAPSHOT_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]*$")
_MANIFEST_KEYS = (
    "key",
    "snapshot_id",
    "pipeline_hash",
    "code_version",
    "blocks",
    "sample_rate",
    "params",
    "splits",
    "input_shape",
    "features_sha256",
    "created_at",
)


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Materialized features of one snapshot under one pipeline."""

    key: str
    path: Path
    snapshot_id: str
    pipeline_hash: str
    manifest: dict[str, Any]
    cached: bool
    """True when the entry already existed and was loaded rather than computed."""
    arrays: Mapping[str, NDArray[Any]] = field(repr=False)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if f"x_{s}" in self.arrays)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the features: the model's input shape."""
        return tuple(int(d) for d in self.manifest["input_shape"])

    @property
    def params(self) -> dict[str, Any]:
        """Fitted parameters of the pipeline (see `FittedPipeline.params`)."""
        params: dict[str, Any] = self.manifest["params"]
        return params

    def x(self, split: str) -> NDArray[np.float32]:
        return np.asarray(self._array("x", split), dtype=np.float32)

    def y(self, split: str) -> NDArray[Any]:
        return self._array("y", split)

    def fitted_pipeline(self) -> FittedPipeline:
        """The fitted pipeline that produced these features, to transform new raw data."""
        pipeline = FeaturePipeline(self.manifest["blocks"], self.manifest["sample_rate"])
        return FittedPipeline.from_params(pipeline, self.params)

    def _array(self, prefix: str, split: str) -> NDArray[Any]:
        name = f"{prefix}_{split}"
        if name not in self.arrays:
            raise DataError(
                f"feature set {self.key} has no '{split}' split; it holds: {', '.join(self.splits)}"
            )
        return self.arrays[name]


def feature_set_key(snapshot_id: str, pipeline_hash: str) -> str:
    return f"{snapshot_id[:16]}-{pipeline_hash[:16]}"


def materialize(
    store_root: Path,
    snapshot_id: str,
    pipeline: FeaturePipeline,
    splits: Mapping[str, tuple[ArrayLike, ArrayLike]],
) -> FeatureSet:
    """Features of a snapshot's splits, computed and stored once, then loaded from the store.

    `splits` maps "train" (required), "validation" and "test" to (x, y). The pipeline is
    fitted on train only and applied to every split.
    """
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise DataError(
            f"snapshot id {snapshot_id!r} must be letters, digits, '-' or '_' (a content hash)"
        )
    key = feature_set_key(snapshot_id, pipeline.hash)
    final = Path(store_root) / FEATURES_DIR / key
    if final.exists():
        return _load(final, cached=True, expect=(snapshot_id, pipeline.hash))
    labelled = _check_splits(splits)
    with atomic_dir(final) as tmp:
        x_train, y_train = labelled["train"]
        fitted, features = pipeline.fit_transform(x_train)
        arrays: dict[str, NDArray[Any]] = {"x_train": features, "y_train": y_train}
        for name in SPLITS[1:]:
            if name in labelled:
                x, y = labelled[name]
                try:
                    arrays[f"x_{name}"] = fitted.transform(x)
                except DataError as exc:
                    raise DataError(f"split '{name}': {exc}") from exc
                arrays[f"y_{name}"] = y
        np.savez(tmp / ARRAYS_FILE, allow_pickle=False, **arrays)
        manifest = {
            "key": key,
            "snapshot_id": snapshot_id,
            "pipeline_hash": pipeline.hash,
            "code_version": FEATURES_CODE_VERSION,
            "blocks": pipeline.spec()["blocks"],
            "sample_rate": pipeline.sample_rate,
            "params": fitted.params(),
            "input_shape": list(features.shape[1:]),
            "splits": {
                name: {
                    "x_shape": list(arrays[f"x_{name}"].shape),
                    "y_shape": list(arrays[f"y_{name}"].shape),
                    "y_dtype": str(arrays[f"y_{name}"].dtype),
                }
                for name in SPLITS
                if f"x_{name}" in arrays
            },
            "features_sha256": sha256_file(tmp / ARRAYS_FILE),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
    # Read back what is on disk: if a concurrent writer won the rename, its entry is the one.
    return _load(final, cached=False, expect=(snapshot_id, pipeline.hash))


def list_feature_sets(store_root: Path) -> list[dict[str, Any]]:
    """One summary per stored feature set, oldest first; unreadable entries carry `error`."""
    rows: list[dict[str, Any]] = []
    for entry in _entries(Path(store_root)):
        try:
            manifest = _read_manifest(entry)
            row = {
                "key": entry.name,
                "path": str(entry),
                "snapshot_id": manifest["snapshot_id"],
                "pipeline_hash": manifest["pipeline_hash"],
                "blocks": [b["block"] for b in manifest["blocks"]],
                "input_shape": manifest["input_shape"],
                "rows": {name: s["x_shape"][0] for name, s in manifest["splits"].items()},
                "code_version": manifest["code_version"],
                "created_at": manifest["created_at"],
            }
        except StoreError as exc:
            row = {"key": entry.name, "path": str(entry), "error": str(exc)}
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            error = f"feature set {entry}: {MANIFEST_FILE} is malformed ({exc!r})"
            row = {"key": entry.name, "path": str(entry), "error": error}
        rows.append(row)
    return sorted(rows, key=lambda r: (str(r.get("created_at", "")), r["key"]))


def load_feature_set(store_root: Path, key_or_prefix: str) -> FeatureSet:
    """Load the feature set whose key is, or starts with, `key_or_prefix`."""
    entries = _entries(Path(store_root))
    exact = [e for e in entries if e.name == key_or_prefix]
    matches = exact or [e for e in entries if key_or_prefix and e.name.startswith(key_or_prefix)]
    where = Path(store_root) / FEATURES_DIR
    if not matches:
        known = ", ".join(e.name for e in entries) or "none"
        raise StoreError(f"no feature set matches {key_or_prefix!r} in {where} (stored: {known})")
    if len(matches) > 1:
        names = ", ".join(e.name for e in matches)
        raise StoreError(f"{key_or_prefix!r} matches several feature sets in {where}: {names}")
    return _load(matches[0], cached=True, expect=None)


def _entries(store_root: Path) -> list[Path]:
    folder = store_root / FEATURES_DIR
    if not folder.is_dir():
        return []
    # Names starting with "." are temp folders of writes in progress (see atomic_dir).
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _check_splits(
    splits: Mapping[str, tuple[ArrayLike, ArrayLike]],
) -> dict[str, tuple[NDArray[Any], NDArray[Any]]]:
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise DataError(f"unknown split names {unknown}; expected some of {list(SPLITS)}")
    if "train" not in splits:
        raise DataError("splits must include 'train': the pipeline is fitted on it")
    checked: dict[str, tuple[NDArray[Any], NDArray[Any]]] = {}
    for name, (x, y) in splits.items():
        x_arr, y_arr = np.asarray(x), np.asarray(y)
        if x_arr.ndim < 1 or y_arr.ndim < 1 or len(x_arr) != len(y_arr):
            raise DataError(
                f"split '{name}': x has shape {x_arr.shape} and y {y_arr.shape};"
                " both need the same number of samples on axis 0"
            )
        if y_arr.dtype.kind not in "biufU":
            raise DataError(
                f"split '{name}': labels y have dtype {y_arr.dtype}; expected numbers or strings"
            )
        checked[name] = (x_arr, y_arr)
    return checked


def _read_manifest(entry: Path) -> dict[str, Any]:
    path = entry / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise StoreError(f"feature set {entry}: {MANIFEST_FILE} is missing") from exc
    except (OSError, ValueError) as exc:
        raise StoreError(f"feature set {entry}: {MANIFEST_FILE} is unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise StoreError(f"feature set {entry}: {MANIFEST_FILE} must hold a JSON object")
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
        raise StoreError(f"feature set {entry}: {MANIFEST_FILE} lacks keys {missing}")
    return manifest


def _load(entry: Path, *, cached: bool, expect: tuple[str, str] | None) -> FeatureSet:
    manifest = _read_manifest(entry)
    if expect is not None and (manifest["snapshot_id"], manifest["pipeline_hash"]) != expect:
        raise StoreError(
            f"feature set {entry} holds snapshot {manifest['snapshot_id']} under pipeline"
            f" {manifest['pipeline_hash']}, not snapshot {expect[0]} under {expect[1]}"
        )
    arrays_path = entry / ARRAYS_FILE
    if not arrays_path.is_file():
        raise StoreError(f"feature set {entry}: {ARRAYS_FILE} is missing")
    digest = sha256_file(arrays_path)
    if digest != manifest["features_sha256"]:
        raise StoreError(
            f"feature set {entry}: {ARRAYS_FILE} has sha256 {digest}, the manifest says"
            f" {manifest['features_sha256']}; the entry is corrupt: delete it and materialize"
            " again"
        )
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise StoreError(f"feature set {entry}: {ARRAYS_FILE} is unreadable ({exc})") from exc
    try:
        recorded = {
            f"{prefix}_{name}": tuple(shapes[f"{prefix}_shape"])
            for name, shapes in manifest["splits"].items()
            for prefix in ("x", "y")
        }
    except (KeyError, TypeError, AttributeError) as exc:
        raise StoreError(
            f"feature set {entry}: {MANIFEST_FILE} 'splits' is malformed ({exc!r})"
        ) from exc
    for name, expected in recorded.items():
        array = arrays.get(name)
        if array is None or array.shape != expected:
            got = None if array is None else array.shape
            raise StoreError(
                f"feature set {entry}: array {name} has shape {got}, the manifest says {expected}"
            )
    return FeatureSet(
        key=entry.name,
        path=entry,
        snapshot_id=manifest["snapshot_id"],
        pipeline_hash=manifest["pipeline_hash"],
        manifest=manifest,
        cached=cached,
        arrays=arrays,
    )
