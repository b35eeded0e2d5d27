"""The .tinybundle: round trip, reproducibility, immutability, and every kind of tampering."""

from __future__ import annotations

import json
import warnings
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinyops.bundle.arduino import arduino_library
from tinyops.bundle.bundle import read_manifest, verify_bundle, write_bundle
from tinyops.bundle.golden import GoldenVectors
from tinyops.bundle.keys import key_id
from tinyops.bundle.manifest import Manifest, TensorSpec
from tinyops.errors import BundleError, SignatureError

CREATED = datetime(2025, 1, 1, tzinfo=UTC)
EXPIRES = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 1, tzinfo=UTC)
FILES = {
    "model.tflite": b"TFL3" + bytes(range(200)),
    "golden/inputs.bin": bytes([1, 2, 3]),
    "notes/README.txt": b"keyword spotting\n",
}
MODEL: dict[str, Any] = {
    "input": {"shape": [1, 3], "dtype": "int8", "scale": 0.5, "zero_point": -3},
    "output": {"shape": [1, 2], "dtype": "int8", "scale": 0.25, "zero_point": 10},
    "ops": ["FULLY_CONNECTED", "SOFTMAX"],
}
BUNDLE_NAME = "kws-1.0.0-nano33ble.tinybundle"


def _write(out_dir: Path, key: Ed25519PrivateKey, **overrides: Any) -> Path:
    args: dict[str, Any] = {
        "name": "kws",
        "version": "1.0.0",
        "target": "nano33ble",
        "files": FILES,
        "private_key": key,
        "model": MODEL,
        "measured": {"arena_bytes": 2_032, "latency_ms": 4.5, "model_bytes": 204},
        "dataset_snapshot_id": "snap-1",
        "feature_pipeline_hash": "f" * 64,
        "feature_params": {"mean": [0.5, -1.25], "std": [2.0, 1.0]},
        "mlflow": {"run_id": "abc123", "model_name": "kws", "model_version": "3"},
        "created_at": CREATED,
        "expires_at": EXPIRES,
    }
    args.update(overrides)
    return write_bundle(out_dir, **args)


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _rezip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """Rewrite `path` as a zip of exactly `entries` (names used verbatim, duplicates kept)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return path


def _resigned(entries: dict[str, bytes], key: Ed25519PrivateKey, edit: Any) -> dict[str, bytes]:
    """Entries with manifest.json edited by `edit(raw_dict)` and signed again by `key`."""
    raw = json.loads(entries["manifest.json"])
    edit(raw)
    manifest = (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode()
    return {**entries, "manifest.json": manifest, "manifest.sig": key.sign(manifest)}


@pytest.fixture
def bundle(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Path:
    return _write(tmp_path / "out", signing_key)


def test_round_trip(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    assert bundle.name == BUNDLE_NAME
    verified = verify_bundle(bundle, [signing_key.public_key()], now=NOW)
    assert verified.files == FILES
    assert verified.key_id == key_id(signing_key.public_key())
    manifest = verified.manifest
    assert (manifest.name, manifest.version, manifest.target) == ("kws", "1.0.0", "nano33ble")
    assert manifest.created_at == CREATED and manifest.expires_at == EXPIRES
    assert manifest.files["model.tflite"].size == 204
    assert manifest.model.input.shape == (1, 3)
    assert manifest.measured.arena_bytes == 2_032 and manifest.measured.latency_ms == 4.5
    assert manifest.feature_params == {"mean": [0.5, -1.25], "std": [2.0, 1.0]}
    assert manifest.mlflow is not None and manifest.mlflow.model_version == "3"
    assert manifest.rollback is False
    assert read_manifest(bundle) == manifest


def test_archive_layout_is_fixed(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    with zipfile.ZipFile(bundle) as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names) == sorted([*FILES, "manifest.json", "manifest.sig"])
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == 0o100644  # regular file, rw-r--r--
        assert info.compress_type == zipfile.ZIP_DEFLATED
    entries = _entries(bundle)
    assert len(entries["manifest.sig"]) == 64
    signing_key.public_key().verify(entries["manifest.sig"], entries["manifest.json"])
    assert (
        entries["manifest.json"]
        == Manifest.from_json_bytes(entries["manifest.json"]).to_json_bytes()
    )


def test_same_inputs_give_the_same_bytes(
    tmp_path: Path, bundle: Path, signing_key: Ed25519PrivateKey
) -> None:
    again = _write(tmp_path / "elsewhere", signing_key)
    assert again.read_bytes() == bundle.read_bytes()
    # Writing the identical bundle over itself is a no-op, not an error.
    assert _write(bundle.parent, signing_key) == bundle
    assert sorted(p.name for p in bundle.parent.iterdir()) == [BUNDLE_NAME]


def test_versions_are_immutable(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    before = bundle.read_bytes()
    with pytest.raises(BundleError, match=rf"{BUNDLE_NAME} already exists with different"):
        _write(bundle.parent, signing_key, files={**FILES, "model.tflite": b"TFL3 other"})
    with pytest.raises(BundleError, match="versions are immutable"):
        _write(bundle.parent, signing_key, created_at=CREATED + timedelta(seconds=1))
    assert bundle.read_bytes() == before
    newer = _write(bundle.parent, signing_key, version="1.0.1")
    assert newer.name == "kws-1.0.1-nano33ble.tinybundle"


def test_non_semver_version_is_refused(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    with pytest.raises(BundleError, match="version: Value error, expected a SemVer"):
        _write(tmp_path, signing_key, version="1.0")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["manifest.json", "manifest.sig", "../x", "/abs", "a//b"])
def test_write_refuses_reserved_and_unsafe_paths(
    tmp_path: Path, signing_key: Ed25519PrivateKey, path: str
) -> None:
    with pytest.raises(BundleError, match=r"manifest|unsafe"):
        _write(tmp_path, signing_key, files={**FILES, path: b"x"})
    assert list(tmp_path.iterdir()) == []


def test_flipped_byte_in_a_file(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    entries = _entries(bundle)
    model = bytearray(entries["model.tflite"])
    model[100] ^= 0x01
    _rezip(bundle, sorted({**entries, "model.tflite": bytes(model)}.items()))
    with pytest.raises(BundleError, match=r"model.tflite has sha256 .*, the manifest says") as info:
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)
    assert type(info.value) is BundleError


def test_resized_file(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    entries = _entries(bundle)
    _rezip(bundle, sorted({**entries, "model.tflite": entries["model.tflite"] + b"!"}.items()))
    with pytest.raises(BundleError, match=r"model.tflite is 205 bytes, the manifest says 204"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_flipped_byte_in_the_raw_archive(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    with zipfile.ZipFile(bundle) as archive:
        info = archive.getinfo("model.tflite")
    data = bytearray(bundle.read_bytes())
    # Local header is 30 bytes + name; flip a byte inside the compressed data after it.
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0xFF
    bundle.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model.tflite") as raised:
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)
    assert type(raised.value) is BundleError


@pytest.mark.parametrize("offset", [0, 7, 200, -3])
def test_flipped_byte_in_the_manifest(
    bundle: Path, signing_key: Ed25519PrivateKey, offset: int
) -> None:
    entries = _entries(bundle)
    manifest = bytearray(entries["manifest.json"])
    manifest[offset] ^= 0x01
    _rezip(bundle, sorted({**entries, "manifest.json": bytes(manifest)}.items()))
    with pytest.raises(SignatureError):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_edited_manifest_is_caught_by_the_signature(
    bundle: Path, signing_key: Ed25519PrivateKey
) -> None:
    entries = _entries(bundle)
    raw = json.loads(entries["manifest.json"])
    raw["expires_at"] = "2099-01-01T00:00:00Z"
    edited = (json.dumps(raw, indent=2, sort_keys=True) + "\n").encode()
    _rezip(bundle, sorted({**entries, "manifest.json": edited}.items()))
    with pytest.raises(SignatureError, match=r"does not verify manifest.json"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_flipped_byte_in_the_signature(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    entries = _entries(bundle)
    signature = bytearray(entries["manifest.sig"])
    signature[10] ^= 0x80
    _rezip(bundle, sorted({**entries, "manifest.sig": bytes(signature)}.items()))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_truncated_or_missing_signature(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    entries = _entries(bundle)
    _rezip(bundle, sorted({**entries, "manifest.sig": entries["manifest.sig"][:63]}.items()))
    with pytest.raises(SignatureError, match="holds 63 bytes, expected a 64-byte"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)
    del entries["manifest.sig"]
    _rezip(bundle, sorted(entries.items()))
    with pytest.raises(SignatureError, match=r"manifest.sig is missing"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_added_file(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    entries = _entries(bundle)
    _rezip(bundle, sorted({**entries, "payload.bin": b"\x90\x90"}.items()))
    with pytest.raises(BundleError, match=r"files not listed in manifest.json: payload.bin"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_removed_file(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    entries = _entries(bundle)
    del entries["golden/inputs.bin"]
    _rezip(bundle, sorted(entries.items()))
    with pytest.raises(
        BundleError, match=r"listed in manifest.json are missing: golden/inputs.bin"
    ):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


@pytest.mark.parametrize("evil", ["../evil.sh", "/tmp/evil.sh", "a/../../evil.sh", "a\\..\\e"])
def test_path_traversal_entry(bundle: Path, signing_key: Ed25519PrivateKey, evil: str) -> None:
    entries = _entries(bundle)
    _rezip(bundle, [*sorted(entries.items()), (evil, b"rm -rf ~")])
    with pytest.raises(BundleError, match="unsafe bundle path"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)
    with pytest.raises(BundleError, match="unsafe bundle path"):
        read_manifest(bundle)


def test_path_traversal_in_a_signed_manifest(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    # Even the holder of a trusted key cannot make a verifier accept '../' paths.
    entries = _resigned(
        _entries(bundle),
        signing_key,
        lambda raw: raw["files"].update({"../x": {"sha256": "0" * 64, "size": 0}}),
    )
    _rezip(bundle, sorted(entries.items()))
    with pytest.raises(BundleError, match=r"files: Value error, unsafe bundle path '\.\./x'"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_duplicate_entries(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    entries = _entries(bundle)
    _rezip(bundle, [*sorted(entries.items()), ("model.tflite", b"TFL3 evil twin")])
    with pytest.raises(BundleError, match=r"more than once: model.tflite"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_unknown_key(
    bundle: Path, signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    ours = key_id(signing_key.public_key())
    theirs = key_id(other_key.public_key())
    with pytest.raises(
        SignatureError, match=rf"signed by key {ours}, which is not trusted.*{theirs}"
    ):
        verify_bundle(bundle, [other_key.public_key()], now=NOW)
    # Among several trusted keys, the right one is found.
    verified = verify_bundle(bundle, [other_key.public_key(), signing_key.public_key()], now=NOW)
    assert verified.key_id == ours


def test_resigned_by_an_untrusted_key(
    bundle: Path, signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    theirs = key_id(other_key.public_key())
    entries = _resigned(_entries(bundle), other_key, lambda raw: raw.update(key_id=theirs))
    _rezip(bundle, sorted(entries.items()))
    with pytest.raises(SignatureError, match=rf"signed by key {theirs}, which is not trusted"):
        verify_bundle(bundle, [signing_key.public_key()], now=NOW)


def test_manifest_key_id_must_name_the_signer(
    bundle: Path, signing_key: Ed25519PrivateKey, other_key: Ed25519PrivateKey
) -> None:
    # Signed by a trusted key, but claims another: the lineage would lie.
    entries = _resigned(_entries(bundle), other_key, lambda raw: None)
    _rezip(bundle, sorted(entries.items()))
    trusted = [signing_key.public_key(), other_key.public_key()]
    with pytest.raises(SignatureError, match=r"names key .* but was signed by trusted key"):
        verify_bundle(bundle, trusted, now=NOW)


def test_expired(bundle: Path, signing_key: Ed25519PrivateKey) -> None:
    trusted = [signing_key.public_key()]
    verify_bundle(bundle, trusted, now=EXPIRES - timedelta(seconds=1))
    with pytest.raises(SignatureError, match="expired at 2026-01-01T00:00:00"):
        verify_bundle(bundle, trusted, now=EXPIRES)
    # Display needs no verification.
    assert read_manifest(bundle).expires_at == EXPIRES


def test_default_validity_is_a_year_from_now(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    path = _write(tmp_path, signing_key, created_at=None, expires_at=None)
    manifest = verify_bundle(path, [signing_key.public_key()]).manifest
    assert manifest.expires_at - manifest.created_at == timedelta(days=365)
    assert manifest.created_at.microsecond == 0


def test_not_a_bundle(tmp_path: Path, signing_key: Ed25519PrivateKey) -> None:
    junk = tmp_path / "junk.tinybundle"
    junk.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(BundleError, match=r"junk.tinybundle is not a readable bundle"):
        verify_bundle(junk, [signing_key.public_key()], now=NOW)
    with pytest.raises(BundleError, match=r"absent.tinybundle is not a readable bundle"):
        read_manifest(tmp_path / "absent.tinybundle")


def test_verify_needs_trusted_keys_and_an_aware_now(bundle: Path) -> None:
    with pytest.raises(SignatureError, match="no trusted public keys"):
        verify_bundle(bundle, [], now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_bundle(bundle, [Ed25519PrivateKey.generate().public_key()], now=datetime(2025, 6, 1))


def test_bundle_with_golden_vectors_and_arduino_library(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    golden = GoldenVectors(
        np.array([[[1, -2, 3]]], dtype=np.int8),
        np.array([[[-128, 5]]], dtype=np.int8),
        (0.5, -3),
        (0.25, 10),
        tolerance=1,
    )
    model = FILES["model.tflite"]
    library = arduino_library(
        "kws",
        "1.0.0",
        model,
        golden,
        TensorSpec.model_validate(MODEL["input"]),
        TensorSpec.model_validate(MODEL["output"]),
        1_000,
        MODEL["ops"],
    )
    files = {"model.tflite": model, **golden.to_files(), **library}
    path = _write(tmp_path, signing_key, files=files)
    verified = verify_bundle(path, [signing_key.public_key()], now=NOW)
    assert verified.files == files
    back = GoldenVectors.from_files(verified.files)
    np.testing.assert_array_equal(back.outputs, golden.outputs)
    assert "arduino/Kws/examples/SelfTest/SelfTest.ino" in verified.manifest.files
