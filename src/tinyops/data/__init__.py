"""The data stage: read sources, check them, screen duplicates, take a snapshot.

    load_sources(configs, base_dir) -> Dataset          sources.py (csv, wav, images ...)
    validate(ds, ValidationConfig) -> ValidationReport  validate.py (the quality gate)
    remove_duplicates(ds) -> (Dataset, DedupReport)     dedup.py
    create_snapshot(ds, SplitConfig, store_root, report) -> Snapshot    snapshot.py

A snapshot is immutable and content-addressed: the same samples give the same id and the
same train/validation/test split, whatever order the files were read in. Importing this
package is cheap: pandas, OpenCV and scikit-learn are imported only by the readers that
need them.
"""

from tinyops.data.config import (
    CsvSource,
    ImageFolderSource,
    NpzSource,
    ParquetSource,
    SklearnSource,
    SourceConfig,
    SplitConfig,
    TextFolderSource,
    ValidationConfig,
    VideoFolderSource,
    WavFolderSource,
)
from tinyops.data.dataset import Dataset, SourceFingerprint, concatenate
from tinyops.data.dedup import DedupReport, remove_duplicates
from tinyops.data.snapshot import Snapshot, create_snapshot, list_snapshots, load_snapshot
from tinyops.data.sources import load_source, load_sources
from tinyops.data.validate import Check, ValidationReport, require_passed, validate

__all__ = [
    "Check",
    "CsvSource",
    "Dataset",
    "DedupReport",
    "ImageFolderSource",
    "NpzSource",
    "ParquetSource",
    "SklearnSource",
    "Snapshot",
    "SourceConfig",
    "SourceFingerprint",
    "SplitConfig",
    "TextFolderSource",
    "ValidationConfig",
    "ValidationReport",
    "VideoFolderSource",
    "WavFolderSource",
    "concatenate",
    "create_snapshot",
    "list_snapshots",
    "load_snapshot",
    "load_source",
    "load_sources",
    "remove_duplicates",
    "require_passed",
    "validate",
]
