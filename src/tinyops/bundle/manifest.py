"""The bundle manifest: what a bundle holds, where it came from, and how it measured.

`manifest.json` lists every other file of the bundle with its sha256 and size, describes
the model's input and output tensors and operators, records the measured footprint on
the target board, and points back to the data snapshot, feature pipeline and MLflow run
it was built from. `manifest.sig` is an Ed25519 signature over the exact bytes of
`manifest.json`, so signing the manifest signs every file through its hash.

The bytes are canonical (keys sorted, two-space indent, one trailing newline, UTF-8):
the same manifest always serializes to the same bytes, so a bundle can be rebuilt
bit for bit and its signature checked without re-encoding.

Versions follow Semantic Versioning 2.0.0 (https://semver.org); `semver_key` orders them
as the specification does, pre-releases before their release.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from tinyops.errors import BundleError

BUNDLE_FORMAT: Final = "tinyops.bundle/1"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
RESERVED_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})

# Semantic Versioning 2.0.0, from semver.org, restricted to ASCII digits.
_SEMVER = re.compile(
    r"(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*)"
    r"(?:-(?P<pre>(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
# Names and board ids end up in file names: keep them to portable characters.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def is_semver(version: str) -> bool:
    return _SEMVER.fullmatch(version) is not None


def semver_key(version: str) -> SemverKey:
    """A sort key that orders versions by SemVer 2.0.0 precedence.

    Pre-release versions sort before their release (1.0.0-rc.1 < 1.0.0); pre-release
    identifiers compare numerically when numeric, in ASCII order otherwise, and numeric
    ones sort before alphanumeric ones; a longer list of identifiers wins a tie. Build
    metadata (after '+') does not take part in ordering.
    """
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(
            f"version {version!r} is not SemVer 2.0.0 (MAJOR.MINOR.PATCH[-pre][+build])"
        )
    core = (int(match["major"]), int(match["minor"]), int(match["patch"]))
    pre = match["pre"]
    if pre is None:
        # A release outranks every pre-release of the same core version.
        return (*core, 1, ())
    identifiers = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split("."))
    return (*core, 0, identifiers)


def check_bundle_path(path: str) -> str:
    """Return `path` if it is a safe relative POSIX path inside a bundle, else BundleError.

    Rejects absolute paths, '..' and '.' segments, empty segments, backslashes, drive
    letters and control characters: a bundle must never write outside the folder it is
    unpacked into ("zip slip").
    """
    problem = None
    if not path:
        problem = "is empty"
    elif path.startswith("/"):
        problem = "is absolute"
    elif "\\" in path:
        problem = "contains a backslash"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        problem = "contains a control character"
    elif re.match(r"[A-Za-z]:", path):
        problem = "starts with a drive letter"
    else:
        parts = path.split("/")
        if any(p in ("", ".", "..") for p in parts):
            problem = "has an empty, '.' or '..' segment"
        elif PurePosixPath(path).as_posix() != path:
            problem = "is not in normal form"
    if problem is not None:
        raise BundleError(
            f"unsafe bundle path {path!r}: it {problem}; expected a relative path like "
            "'model.tflite' or 'golden/inputs.bin'"
        )
    return path


class FileEntry(BaseModel):
    """One file of the bundle, identified by content."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    sha256: str = Field(description="Lowercase hex sha256 of the file's bytes.")
    size: int = Field(ge=0, description="Size of the file, in bytes.")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.fullmatch(value):
            raise ValueError("expected 64 lowercase hex digits")
        return value


class TensorSpec(BaseModel):
    """Shape, element type and affine quantization of one model input or output tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    shape: tuple[int, ...] = Field(
        min_length=1,
        description="Full tensor shape, batch dimension included, e.g. (1, 49, 10, 1).",
    )
    dtype: Literal["int8", "uint8", "int16", "int32", "float32"] = Field(
        default="int8", description="Element type, numpy name."
    )
    scale: float = Field(
        default=0.0,
        ge=0.0,
        description="Quantization scale (real = scale * (q - zero_point)); 0 if not quantized.",
    )
    zero_point: int = Field(default=0, description="Quantization zero point, in q units.")

    @field_validator("shape")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 1 for d in value):
            raise ValueError("every dimension must be >= 1")
        return value

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> TensorSpec:
        """Build from a tensor's details, as LiteRT or the TFLM Python runtime report them.

        LiteRT's get_input_details()[i] carries `quantization` = (scale, zero_point); the
        TFLM runtime's get_input_details(i) carries `quantization_parameters` with arrays
        `scales` and `zero_points` (one entry each for per-tensor quantization).
        """
        import numpy as np

        if "quantization" in details:
            scale, zero_point = details["quantization"]
        else:
            params = details["quantization_parameters"]
            scales, zero_points = list(params["scales"]), list(params["zero_points"])
            if len(scales) > 1 or len(zero_points) > 1:
                raise BundleError(
                    f"tensor is quantized per axis ({len(scales)} scales): expected one "
                    "scale and zero point for the whole tensor"
                )
            scale = scales[0] if scales else 0.0
            zero_point = zero_points[0] if zero_points else 0
        return cls(
            shape=tuple(int(d) for d in details["shape"]),
            dtype=np.dtype(details["dtype"]).name,
            scale=float(scale),
            zero_point=int(zero_point),
        )


class ModelInfo(BaseModel):
    """What firmware needs to know to feed the model and read its answer."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input: TensorSpec = Field(description="The model's (single) input tensor.")
    output: TensorSpec = Field(description="The model's (single) output tensor.")
    ops: list[str] = Field(
        default_factory=list,
        description="TFLite builtin operator names the model uses, e.g. ['CONV_2D', 'SOFTMAX'].",
    )
    task: Literal["classification", "anomaly"] = Field(
        default="classification",
        description="classification: argmax of the output is the class; anomaly: an "
        "autoencoder whose reconstruction error is the score.",
    )
    variant: str | None = Field(
        default=None, description="Which optimization variant this is, e.g. 'int8'."
    )


class Measured(BaseModel):
    """Footprint measured for the target board; None where not measured."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    arena_bytes: int | None = Field(default=None, ge=0, description="TFLM tensor arena, bytes.")
    ram_bytes: int | None = Field(default=None, ge=0, description="Total RAM use, bytes.")
    flash_bytes: int | None = Field(default=None, ge=0, description="Total flash use, bytes.")
    model_bytes: int | None = Field(default=None, ge=0, description=".tflite size, bytes.")
    latency_ms: float | None = Field(default=None, ge=0, description="One inference, ms.")
    energy_mj: float | None = Field(default=None, ge=0, description="One inference, mJ.")


class MlflowRef(BaseModel):
    """Where the model is registered in MLflow."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    run_id: str | None = Field(default=None, description="MLflow run that trained the model.")
    model_name: str | None = Field(default=None, description="Registered model name.")
    model_version: str | None = Field(default=None, description="Registered model version.")


class Manifest(BaseModel):
    """manifest.json of a .tinybundle; the signature covers its canonical bytes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    format: Literal["tinyops.bundle/1"] = Field(
        default=BUNDLE_FORMAT, description="Bundle format identifier and revision."
    )
    name: str = Field(description="Model name: letters, digits, '.', '_', '-'; at most 64.")
    version: str = Field(description="Semantic Versioning 2.0.0 version, e.g. 1.2.0-rc.1.")
    target: str = Field(description="Board id the bundle was built and measured for.")
    created_at: AwareDatetime = Field(description="When the bundle was built (UTC).")
    expires_at: AwareDatetime = Field(description="After this instant (UTC) devices refuse it.")
    files: dict[str, FileEntry] = Field(
        description="Every file of the bundle except manifest.json and manifest.sig."
    )
    model: ModelInfo = Field(description="Input/output tensors and operators of the model.")
    measured: Measured = Field(
        default_factory=Measured, description="Footprint measured on the target."
    )
    dataset_snapshot_id: str | None = Field(
        default=None, description="Id of the data snapshot the model was trained on."
    )
    feature_pipeline_hash: str | None = Field(
        default=None, description="Hash of the feature pipeline definition and its code."
    )
    feature_params: dict[str, Any] = Field(
        default_factory=dict,
        description="Fitted preprocessing parameters the device must apply (e.g. mean, std).",
    )
    mlflow: MlflowRef | None = Field(default=None, description="MLflow lineage of the model.")
    key_id: str = Field(description="Id of the Ed25519 key that signed manifest.json.")
    rollback: bool = Field(
        default=False,
        description="True if this bundle deliberately re-issues an older model version.",
    )

    @field_validator("name", "target")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _SAFE_NAME.fullmatch(value):
            raise ValueError(
                "expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not is_semver(value):
            raise ValueError("expected a SemVer 2.0.0 version MAJOR.MINOR.PATCH[-pre][+build]")
        return value

    @field_validator("key_id")
    @classmethod
    def _key_id(cls, value: str) -> str:
        if not _KEY_ID.fullmatch(value):
            raise ValueError("expected 16 lowercase hex digits")
        return value

    @field_validator("created_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @field_validator("files")
    @classmethod
    def _paths(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for path in value:
            if path in RESERVED_FILES:
                raise ValueError(f"{path!r} is reserved for the manifest and its signature")
            try:
                check_bundle_path(path)
            except BundleError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("feature_params")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        # JSON has no NaN or infinity, and pydantic would silently write them as null.
        def walk(item: Any, where: str) -> None:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{where} is {item}: NaN and infinity have no JSON form")
            if isinstance(item, Mapping):
                for key, sub in item.items():
                    walk(sub, f"{where}.{key}")
            elif isinstance(item, list | tuple):
                for index, sub in enumerate(item):
                    walk(sub, f"{where}[{index}]")

        walk(value, "feature_params")
        return value

    @model_validator(mode="after")
    def _window(self) -> Manifest:
        if self.expires_at <= self.created_at:
            raise ValueError(
                f"expires_at {self.expires_at.isoformat()} must be after "
                f"created_at {self.created_at.isoformat()}"
            )
        return self

    @field_serializer("created_at", "expires_at")
    def _iso_utc(self, value: datetime) -> str:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def to_json_bytes(self) -> bytes:
        """The canonical bytes of manifest.json (what the signature is taken over)."""
        try:
            text = json.dumps(
                self.model_dump(mode="json"),
                indent=2,
                sort_keys=True,
                ensure_ascii=False,
                allow_nan=False,
            )
        except ValueError as exc:
            raise BundleError(
                f"{MANIFEST_FILE}: {exc}; NaN and infinity have no JSON form"
            ) from exc
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes, source: str = MANIFEST_FILE) -> Manifest:
        """Parse and validate manifest bytes; BundleError names `source` and the bad field."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BundleError(f"{source}: not valid UTF-8 JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{source}: expected a JSON object at the top level")
        return build_manifest(raw, source)


def build_manifest(fields: Mapping[str, Any], source: str = MANIFEST_FILE) -> Manifest:
    """Validate `fields` into a Manifest, turning pydantic errors into one BundleError."""
    try:
        return Manifest.model_validate(dict(fields))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise BundleError(f"{source}: invalid manifest: {problems}") from exc
