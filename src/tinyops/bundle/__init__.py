"""Bundles: everything a device needs to run a validated model, signed.

    carray    the .tflite as a 16-byte aligned C array (model_data.h / .cc)
    golden    golden input/output vectors for an on-device self-test
    arduino   an Arduino library around the model, with a TFLM self-test sketch
    keys      Ed25519 signing keys and key ids
    manifest  manifest.json: files with hashes, model, measurements, lineage
    bundle    the reproducible, signed .tinybundle zip: write, verify, read

A bundle is trusted only through `verify_bundle`: the Ed25519 signature over the
manifest's exact bytes must check out under a trusted key, and then every file must
match its manifest hash. Nothing here imports TensorFlow.
"""

from tinyops.bundle.arduino import (
    TFLM_OP_RESOLVER_METHODS,
    arduino_library,
    arena_size_with_margin,
    library_name,
    resolver_methods,
)
from tinyops.bundle.bundle import (
    BUNDLE_SUFFIX,
    VerifiedBundle,
    bundle_filename,
    read_manifest,
    verify_bundle,
    write_bundle,
)
from tinyops.bundle.carray import model_data_sources, validate_c_identifier
from tinyops.bundle.golden import GoldenVectors, golden_header
from tinyops.bundle.keys import (
    KeyPair,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
)
from tinyops.bundle.manifest import (
    BUNDLE_FORMAT,
    FileEntry,
    Manifest,
    Measured,
    MlflowRef,
    ModelInfo,
    TensorSpec,
    check_bundle_path,
    is_semver,
    semver_key,
)

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_SUFFIX",
    "TFLM_OP_RESOLVER_METHODS",
    "FileEntry",
    "GoldenVectors",
    "KeyPair",
    "Manifest",
    "Measured",
    "MlflowRef",
    "ModelInfo",
    "TensorSpec",
    "VerifiedBundle",
    "arduino_library",
    "arena_size_with_margin",
    "bundle_filename",
    "check_bundle_path",
    "generate_keypair",
    "golden_header",
    "is_semver",
    "key_id",
    "library_name",
    "load_private_key",
    "load_public_key",
    "model_data_sources",
    "read_manifest",
    "resolver_methods",
    "semver_key",
    "validate_c_identifier",
    "verify_bundle",
    "write_bundle",
]
