"""The .tinybundle: one signed, reproducible file that carries a model to devices.

A bundle is a zip archive named `<name>-<version>-<target>.tinybundle` holding the files
a deployment needs (the .tflite, golden vectors, Arduino library, ...) plus

    manifest.json   every other file's sha256 and size, model and lineage metadata
    manifest.sig    raw 64-byte Ed25519 signature over the exact bytes of manifest.json

Reproducible: entries are sorted, stamped 1980-01-01 00:00:00 (the zip epoch), marked
as regular files with mode 0644 and deflated at level 9, so the same inputs (including
created_at and the deterministic Ed25519 signature) give the same bytes.

Immutable: a version, once written, is never replaced by different content; writing the
identical bundle again is a no-op.

Verification trusts nothing in the archive until the signature over manifest.json checks
out under one of the caller's trusted keys; only then are the manifest's claims (file
hashes and sizes, expiry) checked against the archive.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tinyops.bundle.keys import key_id
from tinyops.bundle.manifest import (
    MANIFEST_FILE,
    RESERVED_FILES,
    SIGNATURE_FILE,
    FileEntry,
    Manifest,
    Measured,
    MlflowRef,
    ModelInfo,
    build_manifest,
    check_bundle_path,
)
from tinyops.errors import BundleError, SignatureError
from tinyops.store.atomic import atomic_write_bytes, sha256_bytes

BUNDLE_SUFFIX = ".tinybundle"
# The earliest timestamp a zip (MS-DOS date) can hold.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# Regular file, rw-r--r--.
ZIP_FILE_MODE = stat.S_IFREG | 0o644
# "Made by" Unix, so that external_attr carries the POSIX mode above.
ZIP_CREATE_SYSTEM_UNIX = 3
ZIP_COMPRESS_LEVEL = 9
ED25519_SIGNATURE_BYTES = 64
# Read a signature of any plausible size, so a wrong one is reported as a signature error.
MAX_SIGNATURE_BYTES = 4096
# A manifest of a few hundred files is tens of KiB; refuse to inflate anything larger.
MAX_MANIFEST_BYTES = 1 << 20
DEFAULT_VALIDITY = timedelta(days=365)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, file hashes and expiry have all been checked."""

    path: Path
    manifest: Manifest
    files: dict[str, bytes]
    """Every file except manifest.json and manifest.sig, by path."""
    key_id: str
    """Id of the trusted key that signed it."""


def bundle_filename(name: str, version: str, target: str) -> str:
    return f"{name}-{version}-{target}{BUNDLE_SUFFIX}"


def _zip_bytes(entries: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(entries):
            info = zipfile.ZipInfo(path, date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = ZIP_CREATE_SYSTEM_UNIX
            info.external_attr = ZIP_FILE_MODE << 16
            archive.writestr(info, entries[path], compresslevel=ZIP_COMPRESS_LEVEL)
    return buffer.getvalue()


def write_bundle(
    out_dir: Path,
    *,
    name: str,
    version: str,
    target: str,
    files: Mapping[str, bytes],
    private_key: Ed25519PrivateKey,
    model: ModelInfo | Mapping[str, Any],
    measured: Measured | Mapping[str, Any] | None = None,
    dataset_snapshot_id: str | None = None,
    feature_pipeline_hash: str | None = None,
    feature_params: Mapping[str, Any] | None = None,
    mlflow: MlflowRef | Mapping[str, Any] | None = None,
    rollback: bool = False,
    created_at: datetime | None = None,
    expires_at: datetime | None = None,
    valid_for: timedelta = DEFAULT_VALIDITY,
) -> Path:
    """Write `<out_dir>/<name>-<version>-<target>.tinybundle` and return its path.

    `created_at` defaults to now (UTC, whole seconds), `expires_at` to created_at +
    `valid_for`. Pass both to rebuild a bundle bit for bit. If the file exists with the
    same bytes it is left alone; with different bytes, BundleError: versions are immutable.
    """
    for path, data in files.items():
        check_bundle_path(path)
        if path in RESERVED_FILES:
            raise BundleError(f"{path!r} is written by write_bundle itself; remove it from files")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise BundleError(f"bundle file {path!r} must be bytes, got {type(data).__name__}")
    contents = {path: bytes(data) for path, data in files.items()}
    if created_at is None:
        created_at = datetime.now(UTC).replace(microsecond=0)
    if expires_at is None:
        expires_at = created_at + valid_for
    manifest = build_manifest(
        {
            "name": name,
            "version": version,
            "target": target,
            "created_at": created_at,
            "expires_at": expires_at,
            "files": {
                path: FileEntry(sha256=sha256_bytes(data), size=len(data))
                for path, data in sorted(contents.items())
            },
            "model": model,
            "measured": measured if measured is not None else Measured(),
            "dataset_snapshot_id": dataset_snapshot_id,
            "feature_pipeline_hash": feature_pipeline_hash,
            "feature_params": dict(feature_params or {}),
            "mlflow": mlflow,
            "key_id": key_id(private_key.public_key()),
            "rollback": rollback,
        },
        source=f"manifest of {bundle_filename(name, version, target)}",
    )
    manifest_bytes = manifest.to_json_bytes()
    signature = private_key.sign(manifest_bytes)
    archive = _zip_bytes({**contents, MANIFEST_FILE: manifest_bytes, SIGNATURE_FILE: signature})

    destination = Path(out_dir) / bundle_filename(manifest.name, manifest.version, manifest.target)
    if destination.exists():
        if destination.read_bytes() == archive:
            return destination
        raise BundleError(
            f"{destination} already exists with different content: versions are immutable, "
            "publish a new version instead"
        )
    atomic_write_bytes(destination, archive)
    return destination


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path} is not a readable bundle (zip archive): {exc}") from exc


def _read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, limit: int | None = None
) -> bytes:
    if limit is not None and info.file_size > limit:
        raise BundleError(
            f"{path}: {info.filename} declares {info.file_size} bytes, more than the "
            f"{limit} allowed"
        )
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise BundleError(f"{path}: entry {info.filename} is corrupt: {exc}") from exc


def _entries(archive: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by name, after rejecting duplicates, folders and unsafe paths."""
    infos = archive.infolist()
    duplicates = sorted(n for n, c in Counter(i.filename for i in infos).items() if c > 1)
    if duplicates:
        raise BundleError(f"{path}: entries appear more than once: {', '.join(duplicates)}")
    for info in infos:
        try:
            check_bundle_path(info.filename.removesuffix("/") if info.is_dir() else info.filename)
        except BundleError as exc:
            raise BundleError(f"{path}: {exc}") from None
        if info.is_dir():
            raise BundleError(f"{path}: unexpected folder entry {info.filename!r}")
    return {info.filename: info for info in infos}


def _claimed_key_id(manifest_bytes: bytes) -> str | None:
    """key_id as written in an unverified manifest, for error messages only."""
    try:
        raw = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    claimed = raw.get("key_id") if isinstance(raw, dict) else None
    return claimed if isinstance(claimed, str) else None


def _signer(
    path: Path,
    manifest_bytes: bytes,
    signature: bytes,
    trusted_keys: Sequence[Ed25519PublicKey],
) -> Ed25519PublicKey:
    """The trusted key under which `signature` verifies `manifest_bytes`, else SignatureError."""
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureError(
            f"{path}: {SIGNATURE_FILE} holds {len(signature)} bytes, expected a "
            f"{ED25519_SIGNATURE_BYTES}-byte Ed25519 signature"
        )
    for key in trusted_keys:
        try:
            key.verify(signature, manifest_bytes)
        except InvalidSignature:
            continue
        return key
    trusted_ids = sorted(key_id(k) for k in trusted_keys)
    claimed = _claimed_key_id(manifest_bytes)
    if claimed is not None and claimed not in trusted_ids:
        raise SignatureError(
            f"{path}: signed by key {claimed}, which is not trusted "
            f"(trusted key ids: {', '.join(trusted_ids)})"
        )
    raise SignatureError(
        f"{path}: {SIGNATURE_FILE} does not verify {MANIFEST_FILE} under any trusted key "
        f"({', '.join(trusted_ids)}): the manifest or its signature was altered"
    )


def verify_bundle(
    path: Path,
    trusted_keys: Sequence[Ed25519PublicKey],
    now: datetime | None = None,
) -> VerifiedBundle:
    """Open, authenticate and check a bundle; return its manifest and files.

    BundleError: unreadable zip, unsafe or duplicate entry, malformed manifest, a file
    whose size or sha256 differs from the manifest, a missing or unlisted file.
    SignatureError: no signature, a signature that does not verify under a trusted key
    (altered manifest, altered signature, unknown key), or an expired bundle.
    """
    path = Path(path)
    if not trusted_keys:
        raise SignatureError(f"{path}: no trusted public keys given: cannot verify the signature")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")

    with _open_zip(path) as archive:
        entries = _entries(archive, path)
        if MANIFEST_FILE not in entries:
            raise BundleError(f"{path}: {MANIFEST_FILE} is missing")
        if SIGNATURE_FILE not in entries:
            raise SignatureError(f"{path}: {SIGNATURE_FILE} is missing: the bundle is unsigned")
        manifest_bytes = _read_entry(archive, entries[MANIFEST_FILE], path, MAX_MANIFEST_BYTES)
        signature = _read_entry(archive, entries[SIGNATURE_FILE], path, MAX_SIGNATURE_BYTES)
        signer = _signer(path, manifest_bytes, signature, trusted_keys)
        manifest = Manifest.from_json_bytes(manifest_bytes, source=f"{path}: {MANIFEST_FILE}")
        signer_id = key_id(signer)
        if manifest.key_id != signer_id:
            raise SignatureError(
                f"{path}: {MANIFEST_FILE} names key {manifest.key_id} but was signed by "
                f"trusted key {signer_id}"
            )
        if now.astimezone(UTC) >= manifest.expires_at:
            raise SignatureError(
                f"{path}: expired at {manifest.expires_at.isoformat()} "
                f"(now {now.astimezone(UTC).isoformat()}): re-sign or publish a new version"
            )

        present = set(entries) - RESERVED_FILES
        listed = set(manifest.files)
        if unlisted := sorted(present - listed):
            raise BundleError(f"{path}: files not listed in {MANIFEST_FILE}: {', '.join(unlisted)}")
        if missing := sorted(listed - present):
            raise BundleError(
                f"{path}: files listed in {MANIFEST_FILE} are missing: {', '.join(missing)}"
            )
        contents: dict[str, bytes] = {}
        for name in sorted(listed):
            expected = manifest.files[name]
            info = entries[name]
            if info.file_size != expected.size:
                raise BundleError(
                    f"{path}: {name} is {info.file_size} bytes, the manifest says {expected.size}"
                )
            data = _read_entry(archive, info, path, expected.size)
            digest = sha256_bytes(data)
            if len(data) != expected.size or digest != expected.sha256:
                raise BundleError(
                    f"{path}: {name} has sha256 {digest}, the manifest says {expected.sha256}"
                )
            contents[name] = data
    return VerifiedBundle(path=path, manifest=manifest, files=contents, key_id=signer_id)


def read_manifest(path: Path) -> Manifest:
    """The manifest of a bundle, parsed but NOT verified: for display only."""
    path = Path(path)
    with _open_zip(path) as archive:
        entries = _entries(archive, path)
        if MANIFEST_FILE not in entries:
            raise BundleError(f"{path}: {MANIFEST_FILE} is missing")
        data = _read_entry(archive, entries[MANIFEST_FILE], path, MAX_MANIFEST_BYTES)
    return Manifest.from_json_bytes(data, source=f"{path}: {MANIFEST_FILE}")
