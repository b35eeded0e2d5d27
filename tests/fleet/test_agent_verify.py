"""Verification before install: each refusal, a valid upgrade and a valid signed rollback."""

from __future__ import annotations

import json
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_agent_support import (
    HARDWARE,
    NOW,
    OTHER_KEY,
    RELEASE_KEY,
    SERVER_KEY,
    make_bundle,
    offer_for,
    rezip,
)

from tinyops.fleet.agent.messages import ReleaseOffer, SignedRollbackOrder
from tinyops.fleet.agent.state import SlotContent
from tinyops.fleet.agent.verify import BundleCache, UpdateRefused, check_offer, verify_release
from tinyops.security.rollback import sign_rollback_order
from tinyops.store.atomic import sha256_bytes

DEVICE = "pi-0001"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return {
        "1.0.0": make_bundle(root / "a", "1.0.0"),
        "1.1.0": make_bundle(root / "a", "1.1.0"),
        "1.2.0": make_bundle(root / "a", "1.2.0"),
        "expired": make_bundle(
            root / "expired", "1.2.0", created_at=NOW - timedelta(days=10), expires_at=NOW
        ),
        "other-target": make_bundle(root / "target", "1.2.0", target="nano33ble"),
        "other-key": make_bundle(root / "key", "1.2.0", key=OTHER_KEY),
    }


def manifest_of(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        manifest: dict[str, Any] = json.loads(archive.read("manifest.json"))
    return manifest


def installed(path: Path) -> SlotContent:
    manifest = manifest_of(path)
    data = path.read_bytes()
    return SlotContent(
        name=manifest["name"],
        version=manifest["version"],
        target=manifest["target"],
        sha256=sha256_bytes(data),
        size=len(data),
        filename=path.name,
        installed_at=NOW - timedelta(days=30),
    )


def verify(
    data: bytes,
    offer: dict[str, Any],
    *,
    current: SlotContent | None = None,
    rollback: dict[str, Any] | None = None,
    hardware: str = HARDWARE,
    now: Any = NOW,
    cache: BundleCache | None = None,
) -> Any:
    return verify_release(
        data,
        offer=ReleaseOffer.model_validate(offer),
        trusted_keys=[RELEASE_KEY.public_key()],
        hardware=hardware,
        device_id=DEVICE,
        installed=current,
        rollback=SignedRollbackOrder.model_validate(rollback) if rollback else None,
        server_key=SERVER_KEY.public_key(),
        now=now,
        cache=cache,
    )


def order(path: Path, **overrides: Any) -> dict[str, Any]:
    data = path.read_bytes()
    fields: dict[str, Any] = {
        "device_id": DEVICE,
        "deployment_id": 9,
        "sha256": sha256_bytes(data),
        "version": manifest_of(path)["version"],
        "issued_at": NOW - timedelta(hours=1),
        "expires_at": NOW + timedelta(hours=1),
    }
    fields.update(overrides)
    return sign_rollback_order(SERVER_KEY, fields)


def refused(check: str, *args: Any, **kwargs: Any) -> UpdateRefused:
    with pytest.raises(UpdateRefused) as caught:
        verify(*args, **kwargs)
    assert caught.value.check == check, str(caught.value)
    return caught.value


def test_valid_upgrade_is_accepted(bundles: dict[str, Path]) -> None:
    path = bundles["1.2.0"]
    result = verify(path.read_bytes(), offer_for(path), current=installed(bundles["1.1.0"]))
    assert result.kind == "update"
    assert result.bundle.manifest.version == "1.2.0"
    assert result.sha256 == sha256_bytes(path.read_bytes())
    assert "model.tflite" in result.bundle.files


def test_first_install_and_identical_reinstall_are_accepted(bundles: dict[str, Path]) -> None:
    path = bundles["1.1.0"]
    assert verify(path.read_bytes(), offer_for(path)).kind == "update"
    assert verify(path.read_bytes(), offer_for(path), current=installed(path)).kind == "update"


def test_valid_signed_rollback_is_accepted(bundles: dict[str, Path]) -> None:
    older = bundles["1.0.0"]
    result = verify(
        older.read_bytes(),
        offer_for(older),
        current=installed(bundles["1.2.0"]),
        rollback=order(older),
    )
    assert result.kind == "rollback"
    assert result.bundle.manifest.version == "1.0.0"


def test_flipped_byte_is_refused(bundles: dict[str, Path]) -> None:
    data = bytearray(bundles["1.2.0"].read_bytes())
    data[len(data) // 2] ^= 0x01
    # Against the announced hash: the file is not the one announced.
    err = refused("sha256", bytes(data), offer_for(bundles["1.2.0"]))
    assert "the check-in announced" in str(err)
    # A server announcing the tampered file's own hash does not help it through.
    tampered = offer_for(bundles["1.2.0"], sha256=sha256_bytes(bytes(data)))
    with pytest.raises(UpdateRefused) as caught:
        verify(bytes(data), tampered)
    assert caught.value.check in ("bundle", "signature")


def test_tampered_model_is_refused_by_its_manifest_hash(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    path = rezip(bundles["1.2.0"], tmp_path / "t.tinybundle", {"model.tflite": b"\0" * 700})
    err = refused("bundle", path.read_bytes(), offer_for(path))
    assert "model.tflite is 700 bytes, the manifest says" in str(err)
    assert str(tmp_path) not in str(err)


def test_altered_manifest_is_refused_by_its_signature(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    with zipfile.ZipFile(bundles["1.2.0"]) as archive:
        manifest = archive.read("manifest.json")
    altered = manifest.replace(b'"version": "1.2.0"', b'"version": "9.0.0"')
    assert altered != manifest
    path = rezip(bundles["1.2.0"], tmp_path / "m.tinybundle", {"manifest.json": altered})
    err = refused("signature", path.read_bytes(), offer_for(path))
    assert "does not verify manifest.json" in str(err)


def test_unsigned_bundle_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    path = rezip(bundles["1.2.0"], tmp_path / "u.tinybundle", {"manifest.sig": None})
    err = refused("signature", path.read_bytes(), offer_for(path))
    assert "unsigned" in str(err)


def test_bundle_from_unknown_key_is_refused(bundles: dict[str, Path]) -> None:
    path = bundles["other-key"]
    err = refused("signature", path.read_bytes(), offer_for(path))
    assert "which is not trusted" in str(err)


def test_expired_bundle_is_refused(bundles: dict[str, Path]) -> None:
    path = bundles["expired"]
    err = refused("expired", path.read_bytes(), offer_for(path))
    assert "expired at 2026-11-27T10:00:00Z" in str(err)
    # The same bundle was fine a second before its expiry on the device's clock.
    assert verify(path.read_bytes(), offer_for(path), now=NOW - timedelta(seconds=1))


def test_wrong_target_is_refused(bundles: dict[str, Path]) -> None:
    path = bundles["other-target"]
    err = refused("target", path.read_bytes(), offer_for(path, target=HARDWARE))
    assert "bundle targets 'nano33ble'" in str(err)
    # Announced honestly, it is refused before any download.
    with pytest.raises(UpdateRefused, match="targets 'nano33ble', this device is 'rpi4'"):
        check_offer(
            ReleaseOffer.model_validate(offer_for(path)),
            hardware=HARDWARE,
            device_id=DEVICE,
            installed=None,
            rollback=None,
            server_key=None,
            now=NOW,
        )


def test_size_and_announcement_mismatches_are_refused(bundles: dict[str, Path]) -> None:
    path = bundles["1.2.0"]
    data = path.read_bytes()
    refused("size", data, offer_for(path, size=len(data) + 1))
    err = refused("offer", data, offer_for(path, version="1.3.0"))
    assert "bundle is digits 1.2.0, the check-in announced digits 1.3.0" in str(err)


def test_downgrade_without_order_is_refused(bundles: dict[str, Path]) -> None:
    older = bundles["1.0.0"]
    err = refused(
        "downgrade", older.read_bytes(), offer_for(older), current=installed(bundles["1.2.0"])
    )
    assert "1.0.0 is not newer than the installed 1.2.0" in str(err)


def test_same_version_with_other_bytes_is_refused(bundles: dict[str, Path]) -> None:
    # Same name and version, different content (another key signed it): not a reinstall.
    current = installed(bundles["other-key"])
    path = bundles["1.2.0"]
    refused("downgrade", path.read_bytes(), offer_for(path), current=current)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device_id": "pi-0002"}, "for device 'pi-0002', not this device 'pi-0001'"),
        ({"expires_at": NOW}, "rollback order expired"),
        ({"version": "1.1.0"}, "for version 1.1.0, not the offered 1.0.0"),
        ({"sha256": "00" * 32}, "not the offered"),
    ],
)
def test_downgrade_with_a_bad_order_is_refused(
    bundles: dict[str, Path], overrides: dict[str, Any], message: str
) -> None:
    older = bundles["1.0.0"]
    err = refused(
        "rollback-order",
        older.read_bytes(),
        offer_for(older),
        current=installed(bundles["1.2.0"]),
        rollback=order(older, **overrides),
    )
    assert message in str(err)


def test_order_signed_by_another_key_is_refused(bundles: dict[str, Path]) -> None:
    older = bundles["1.0.0"]
    forged = sign_rollback_order(OTHER_KEY, order(older)["order"])
    err = refused(
        "rollback-order",
        older.read_bytes(),
        offer_for(older),
        current=installed(bundles["1.2.0"]),
        rollback=forged,
    )
    assert "does not verify under the server key" in str(err)


def test_cache_verifies_identical_bytes_once(bundles: dict[str, Path]) -> None:
    cache = BundleCache(max_entries=1)
    path = bundles["1.2.0"]
    first = verify(path.read_bytes(), offer_for(path), cache=cache)
    second = verify(path.read_bytes(), offer_for(path), cache=cache)
    assert first.bundle is second.bundle
    # Expiry is checked on every call, with each device's clock, even when cached.
    refused(
        "expired", path.read_bytes(), offer_for(path), now=NOW + timedelta(days=400), cache=cache
    )
    # Another trusted key set is another cache entry: it is verified afresh (and fails).
    with pytest.raises(Exception, match="not trusted"):
        cache.open(path.read_bytes(), [OTHER_KEY.public_key()])
    # One entry only: the older one was evicted.
    other = bundles["1.1.0"]
    verify(other.read_bytes(), offer_for(other), cache=cache)
    assert cache.get(sha256_bytes(path.read_bytes()), [RELEASE_KEY.public_key()]) is None
