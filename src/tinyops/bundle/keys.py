"""Ed25519 signing keys for bundles.

A bundle is signed with an Ed25519 private key (64-byte signatures, 32-byte public keys,
deterministic: the same key and message always give the same signature). Keys live in
two PEM files:

    <name>.key   PKCS#8 private key, unencrypted, mode 0600 (owner read/write only)
    <name>.pub   SubjectPublicKeyInfo public key, safe to hand to devices and CI

A key id is the first 16 hex digits (64 bits) of the sha256 of the raw 32-byte public
key. The manifest records it so a verifier holding several trusted keys knows which one
should have signed, and so rotation shows up in the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tinyops.errors import BundleError, SignatureError
from tinyops.store.atomic import atomic_write_bytes

# Owner read/write only: a private key readable by others is a leaked key.
PRIVATE_KEY_MODE = 0o600
# Public keys are meant to be shared.
PUBLIC_KEY_MODE = 0o644
# 16 hex digits = 64 bits: collisions among a project's handful of keys are negligible.
KEY_ID_HEX_DIGITS = 16


@dataclass(frozen=True)
class KeyPair:
    """A generated key pair and where its two files were written."""

    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    private_path: Path
    public_path: Path
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of sha256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_DIGITS]


def generate_keypair(directory: Path, name: str = "signing", overwrite: bool = False) -> KeyPair:
    """Create `<name>.key` and `<name>.pub` in `directory`.

    Refuses (BundleError naming the path) if either file exists, unless `overwrite`:
    replacing a key silently would orphan every bundle it signed.
    """
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise BundleError(f"key name {name!r} must be a plain file name without '/'")
    private_path = directory / f"{name}.key"
    public_path = directory / f"{name}.pub"
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise BundleError(
                    f"{path} already exists: refusing to replace a signing key "
                    "(pass overwrite=True to rotate it deliberately)"
                )
    private_key = Ed25519PrivateKey.generate()
    public_key = private_key.public_key()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # The mode is set before the key bytes are written: the private key is never readable
    # by others, not even for an instant.
    atomic_write_bytes(private_path, private_pem, mode=PRIVATE_KEY_MODE)
    atomic_write_bytes(public_path, public_pem, mode=PUBLIC_KEY_MODE)
    return KeyPair(private_key, public_key, private_path, public_path, key_id(public_key))


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an unencrypted PKCS#8 PEM Ed25519 private key; SignatureError names the file."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise SignatureError(
            f"{path} is a password-protected private key: expected an unencrypted PKCS#8 PEM"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(
            f"{path} is not a readable PEM private key ({exc}): expected PKCS#8 Ed25519"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(
            f"{path} holds a {type(key).__name__}: expected an Ed25519 private key"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a SubjectPublicKeyInfo PEM Ed25519 public key; SignatureError names the file."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SignatureError(
            f"{path} is not a readable PEM public key ({exc}): expected an Ed25519 "
            "SubjectPublicKeyInfo"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} holds a {type(key).__name__}: expected an Ed25519 public key")
    return key
