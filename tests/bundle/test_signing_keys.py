"""Ed25519 key files: formats, permissions, overwrite refusal, key ids, bad files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tinyops.bundle.keys import generate_keypair, key_id, load_private_key, load_public_key
from tinyops.errors import BundleError, SignatureError

# RFC 8032, section 7.1, TEST 1.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE_OF_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_key_id_is_sha256_prefix_of_raw_public_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(RFC8032_SECRET)
    assert _raw(key) == RFC8032_PUBLIC
    # sha256(d75a98...511a) = 21fe31dfa154a261...
    assert key_id(key.public_key()) == "21fe31dfa154a261"
    assert key.sign(b"") == RFC8032_SIGNATURE_OF_EMPTY


def test_generate_writes_pem_files_with_modes(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "keys")
    assert pair.private_path == tmp_path / "keys" / "signing.key"
    assert pair.public_path == tmp_path / "keys" / "signing.pub"
    private_pem = pair.private_path.read_bytes()
    public_pem = pair.public_path.read_bytes()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")  # SubjectPublicKeyInfo
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.public_path.stat().st_mode) == 0o644
    # No temp files left behind.
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["signing.key", "signing.pub"]

    private = load_private_key(pair.private_path)
    public = load_public_key(pair.public_path)
    assert _raw(private) == _raw(pair.private_key)
    assert key_id(public) == pair.key_id == key_id(private.public_key())
    public.verify(private.sign(b"manifest"), b"manifest")


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path, name="release")
    with pytest.raises(BundleError, match=r"release\.key already exists"):
        generate_keypair(tmp_path, name="release")
    assert key_id(load_public_key(first.public_path)) == first.key_id

    first.private_path.unlink()
    # A lone public key also blocks: the pair must stay consistent.
    with pytest.raises(BundleError, match=r"release\.pub already exists"):
        generate_keypair(tmp_path, name="release")

    rotated = generate_keypair(tmp_path, name="release", overwrite=True)
    assert rotated.key_id != first.key_id
    assert key_id(load_public_key(rotated.public_path)) == rotated.key_id


def test_key_name_must_be_a_plain_file_name(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="plain file name"):
        generate_keypair(tmp_path, name="../escape")


def test_public_key_file_is_not_a_private_key(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path)
    with pytest.raises(SignatureError, match=str(pair.public_path)):
        load_private_key(pair.public_path)
    with pytest.raises(SignatureError, match=str(pair.private_path)):
        load_public_key(pair.private_path)


def test_corrupt_and_missing_files_are_named(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.key"
    corrupt.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SignatureError, match=r"corrupt.key is not a readable PEM private key"):
        load_private_key(corrupt)
    with pytest.raises(SignatureError, match=r"cannot read public key .*absent.pub"):
        load_public_key(tmp_path / "absent.pub")


def test_wrong_key_type_is_named(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.key"
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(SignatureError, match=r"ec.key holds a .*expected an Ed25519 private key"):
        load_private_key(path)
    pub = tmp_path / "ec.pub"
    pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(SignatureError, match="expected an Ed25519 public key"):
        load_public_key(pub)


def test_encrypted_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.key"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(SignatureError, match=r"locked.key is a password-protected"):
        load_private_key(path)
