"""The local, content-addressed store under a project's `.tinyops/` folder.

Everything written here goes through `atomic`: a temp path in the same folder, then a
rename, so a crash or a failed gate never leaves a half-written entry behind.
"""

from tinyops.store.atomic import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    canonical_json,
    sha256_bytes,
    sha256_file,
)

__all__ = [
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "canonical_json",
    "sha256_bytes",
    "sha256_file",
]
