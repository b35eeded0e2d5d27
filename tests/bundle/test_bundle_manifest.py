"""Manifest: SemVer validation and ordering, canonical bytes, field validation, paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from tinyops.bundle.manifest import (
    Manifest,
    TensorSpec,
    build_manifest,
    check_bundle_path,
    is_semver,
    semver_key,
)
from tinyops.errors import BundleError

SHA = "ab" * 32


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "kws",
        "version": "1.0.0",
        "target": "nano33ble",
        "created_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "expires_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "files": {"model.tflite": {"sha256": SHA, "size": 10}},
        "model": {
            "input": {"shape": [1, 3], "dtype": "int8", "scale": 0.5, "zero_point": -3},
            "output": {"shape": [1, 2], "dtype": "int8", "scale": 0.25, "zero_point": 10},
            "ops": ["FULLY_CONNECTED"],
        },
        "key_id": "0123456789abcdef",
    }
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    "version",
    ["0.0.0", "1.2.3", "10.20.30", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-0.3.7",
     "1.0.0-x.7.z.92", "1.0.0-alpha+001", "1.0.0+20130313144700", "1.0.0-beta+exp.sha.5114f85",
     "1.0.0-x-y-z.--"],
)  # fmt: skip
def test_valid_semver(version: str) -> None:
    assert is_semver(version)
    assert build_manifest(_fields(version=version)).version == version


@pytest.mark.parametrize(
    "version",
    ["1", "1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.03", "v1.2.3", "1.2.3-", "1.2.3+",
     "1.2.3-01", "1.2.3-alpha..1", "1.2.3-alpha_1", " 1.2.3", "1.2.3\n", "١.٢.٣"],
)  # fmt: skip
def test_invalid_semver(version: str) -> None:
    assert not is_semver(version)
    with pytest.raises(BundleError, match=r"version: Value error, expected a SemVer 2.0.0"):
        build_manifest(_fields(version=version))
    with pytest.raises(ValueError, match="not SemVer"):
        semver_key(version)


def test_semver_precedence_follows_the_specification() -> None:
    # The example chain of semver.org, item 11, plus core ordering and numeric identifiers.
    ordered = [
        "0.9.9",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.2",
        "1.0.0-alpha.10",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "1.10.0",
        "2.0.0",
    ]
    assert sorted(reversed(ordered), key=semver_key) == ordered
    # Build metadata does not take part in precedence.
    assert semver_key("1.0.0+build.1") == semver_key("1.0.0+build.2") == semver_key("1.0.0")


def test_canonical_bytes() -> None:
    manifest = build_manifest(_fields())
    data = manifest.to_json_bytes()
    text = data.decode()
    assert text.endswith("}\n") and not text.endswith("}\n\n")
    assert text.startswith(
        '{\n  "created_at": "2025-01-02T03:04:05Z",\n  "dataset_snapshot_id": null,'
    )
    assert '\n  "expires_at": "2026-01-02T03:04:05Z",' in text
    assert '"format": "tinyops.bundle/1"' in text
    assert '"rollback": false' in text
    assert (
        '\n    "model.tflite": {\n      "sha256": "' + SHA + '",\n      "size": 10\n    }' in text
    )
    raw = json.loads(data)
    assert list(raw) == sorted(raw)
    assert list(raw["measured"]) == sorted(raw["measured"])
    # Re-parsing gives the same manifest and the same bytes.
    again = Manifest.from_json_bytes(data)
    assert again == manifest
    assert again.to_json_bytes() == data


def test_timestamps_are_normalised_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    manifest = build_manifest(_fields(created_at=datetime(2025, 1, 2, 5, 4, 5, tzinfo=plus_two)))
    assert '"created_at": "2025-01-02T03:04:05Z"' in manifest.to_json_bytes().decode()
    assert manifest.created_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"created_at": datetime(2025, 1, 2)}, "created_at"),  # naive: no timezone
        ({"expires_at": datetime(2024, 1, 1, tzinfo=UTC)}, "expires_at"),
        ({"name": "../kws"}, "name"),
        ({"target": "nano 33"}, "target"),
        ({"key_id": "XYZ"}, "key_id"),
        ({"files": {"m": {"sha256": "00", "size": 1}}}, "files.m.sha256"),
        ({"files": {"m": {"sha256": SHA, "size": -1}}}, "files.m.size"),
        ({"files": {"../m": {"sha256": SHA, "size": 1}}}, "files"),
        ({"files": {"manifest.sig": {"sha256": SHA, "size": 64}}}, "files"),
        ({"format": "tinyops.bundle/2"}, "format"),
        ({"surprise": 1}, "surprise"),
        ({"measured": {"arena_bytes": -5}}, "measured.arena_bytes"),
    ],
)
def test_invalid_fields_are_named(overrides: dict[str, Any], location: str) -> None:
    with pytest.raises(BundleError, match=rf"invalid manifest: .*{location}"):
        build_manifest(_fields(**overrides))


@pytest.mark.parametrize(
    ("overrides", "location"),
    [
        ({"feature_params": {"mean": [0.0, float("nan")]}}, r"feature_params\.mean\[1\] is nan"),
        ({"feature_params": {"std": {"x": float("inf")}}}, r"feature_params\.std\.x is inf"),
        ({"measured": {"latency_ms": float("nan")}}, "measured.latency_ms"),
    ],
)
def test_nan_and_infinity_are_refused(overrides: dict[str, Any], location: str) -> None:
    # JSON cannot hold them; pydantic would otherwise write null in their place.
    with pytest.raises(BundleError, match=location):
        build_manifest(_fields(**overrides))


def test_from_json_bytes_names_the_source() -> None:
    with pytest.raises(BundleError, match=r"demo\.tinybundle: not valid UTF-8 JSON"):
        Manifest.from_json_bytes(b"{not json", source="demo.tinybundle")


@pytest.mark.parametrize(
    "path", ["model.tflite", "golden/inputs.bin", "arduino/Kws/src/Kws.h", "a.b-c_d"]
)
def test_safe_paths(path: str) -> None:
    assert check_bundle_path(path) == path


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../x", "'..' segment"),
        ("a/../../x", "'..' segment"),
        ("a//b", "empty, '.' or '..' segment"),
        ("./a", "'.' or '..' segment"),
        ("a/", "segment"),
        ("a\\..\\b", "backslash"),
        ("C:/x", "drive letter"),
        ("a\x00b", "control character"),
    ],
)
def test_unsafe_paths(path: str, problem: str) -> None:
    with pytest.raises(BundleError, match=rf"unsafe bundle path .*{problem}"):
        check_bundle_path(path)


def test_tensor_spec_from_litert_and_tflm_details() -> None:
    litert = {"shape": np.array([1, 49, 10, 1]), "dtype": np.int8, "quantization": (0.5, 83)}
    assert TensorSpec.from_details(litert) == TensorSpec(
        shape=(1, 49, 10, 1), dtype="int8", scale=0.5, zero_point=83
    )
    tflm = {
        "shape": np.array([1, 12], dtype=np.int32),
        "dtype": np.int8,
        "quantization_parameters": {
            "scales": np.array([0.00390625], dtype=np.float32),
            "zero_points": np.array([-128], dtype=np.int32),
            "quantized_dimension": 0,
        },
    }
    spec = TensorSpec.from_details(tflm)
    assert spec == TensorSpec(shape=(1, 12), dtype="int8", scale=0.00390625, zero_point=-128)
    assert spec.size == 12
    per_axis = {**tflm, "quantization_parameters": {"scales": [0.1, 0.2], "zero_points": [0, 0]}}
    with pytest.raises(BundleError, match="per axis"):
        TensorSpec.from_details(per_axis)
