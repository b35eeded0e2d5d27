"""What a device checks before it installs a release, and why it refuses one.

Before download (`check_offer`, on what the check-in announced) and again after download
(`verify_release`, on the bytes and their verified manifest), in this order:

    size, sha256     the file is exactly the one the check-in announced
    signature        manifest.sig verifies under one of the agent's trusted release keys
    bundle           every file matches its manifest hash and size (tampering)
    expired          the manifest's expires_at is still in the future (device clock)
    target           manifest.target and the announced target are this device's hardware
    offer            the manifest's name and version are the ones announced
    downgrade        the version is newer than the installed one (SemVer precedence); the
                     same version only with the same bytes (a reinstall, not a swap)
    rollback-order   ...unless the check-in carries a rollback order the server signed for
                     this device, this sha256 and this version, not yet expired

The version rule compares with the installed release whatever its model name, so that a
downgrade cannot be smuggled in through a detour via another model name.

Each refusal is an `UpdateRefused` naming the check, with a message the agent reports to
the server as the failure reason. `BundleCache` verifies a bundle's signature and hashes
once per (sha256, trusted keys): a fleet simulator runs the same bundle on thousands of
devices, and identical bytes verify identically (expiry, which depends on each device's
clock, is checked on every call).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tinyops.bundle.bundle import VerifiedBundle, verify_bundle
from tinyops.bundle.keys import key_id
from tinyops.bundle.manifest import is_semver, semver_key
from tinyops.errors import BundleError, SignatureError
from tinyops.fleet.agent.messages import ReleaseOffer, SignedRollbackOrder
from tinyops.fleet.agent.state import SlotContent, UpdateKind
from tinyops.security.rollback import format_time, verify_rollback_order
from tinyops.store.atomic import atomic_write_bytes, sha256_bytes

RefusalCheck = Literal[
    "size",
    "sha256",
    "signature",
    "bundle",
    "expired",
    "target",
    "offer",
    "downgrade",
    "rollback-order",
]
# Before every real expiry: opening a bundle at this instant checks signature and hashes
# only; expiry is then checked against the device's own clock.
_BEFORE_ANY_EXPIRY: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Distinct bundles a cache keeps (a device needs 2: its two slots; a simulated fleet a few).
DEFAULT_CACHE_ENTRIES: Final = 16


class UpdateRefused(BundleError):
    """A release failed one of the checks before installation; `check` names which."""

    def __init__(self, check: RefusalCheck, message: str) -> None:
        super().__init__(message)
        self.check: RefusalCheck = check


@dataclass(frozen=True)
class VerifiedRelease:
    """A downloaded release that passed every check, ready to be written to a slot."""

    bundle: VerifiedBundle
    kind: UpdateKind
    sha256: str
    size: int


class BundleCache:
    """Verified bundles (signature and every file hash) by sha256, least recently used out."""

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, tuple[str, ...]], VerifiedBundle] = OrderedDict()

    @staticmethod
    def _key(sha256: str, trusted_keys: Sequence[Ed25519PublicKey]) -> tuple[str, tuple[str, ...]]:
        return sha256, tuple(sorted(key_id(k) for k in trusted_keys))

    def get(self, sha256: str, trusted_keys: Sequence[Ed25519PublicKey]) -> VerifiedBundle | None:
        """The bundle with this sha256 if it was verified under the same trusted keys."""
        key = self._key(sha256, trusted_keys)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def open(
        self,
        data: bytes,
        trusted_keys: Sequence[Ed25519PublicKey],
        sha256: str | None = None,
    ) -> VerifiedBundle:
        """Verify the signature and every file hash of `data` (not the expiry).

        `sha256` is the sha256 of `data` when the caller has computed it already.

        SignatureError or BundleError as `verify_bundle` raises them, naming the bundle by
        its sha256 rather than by the temporary file it is checked in.
        """
        digest = sha256 if sha256 is not None else sha256_bytes(data)
        cached = self.get(digest, trusted_keys)
        if cached is not None:
            return cached
        label = f"bundle {digest[:16]}"
        with tempfile.TemporaryDirectory(prefix="tinyops-agent-") as folder:
            path = Path(folder) / f"{digest[:16]}.tinybundle"
            atomic_write_bytes(path, data)
            try:
                verified = verify_bundle(path, trusted_keys, now=_BEFORE_ANY_EXPIRY)
            except BundleError as exc:
                # Same error class (SignatureError stays one), without the temp path.
                raise type(exc)(str(exc).replace(str(path), label)) from None
        verified = dataclasses.replace(verified, path=Path(label))
        self._entries[self._key(digest, trusted_keys)] = verified
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return verified


def check_offer(
    offer: ReleaseOffer,
    *,
    hardware: str,
    device_id: str,
    installed: SlotContent | None,
    rollback: SignedRollbackOrder | None,
    server_key: Ed25519PublicKey | None,
    now: datetime,
) -> UpdateKind:
    """Target, version and rollback-order checks of an announced release (no download).

    Returns "rollback" when a valid signed order comes with it, else "update".
    """
    if offer.target != hardware:
        raise UpdateRefused(
            "target",
            f"release {offer.name} {offer.version} targets {offer.target!r}, "
            f"this device is {hardware!r}",
        )
    if not is_semver(offer.version):
        raise UpdateRefused(
            "offer", f"version {offer.version!r} is not SemVer 2.0.0 (MAJOR.MINOR.PATCH)"
        )
    if rollback is not None:
        if server_key is None:
            raise UpdateRefused(
                "rollback-order",
                "the check-in carries a rollback order but the agent has no server key to "
                "verify it (enroll first, or pass server_key)",
            )
        try:
            verify_rollback_order(
                server_key,
                rollback.model_dump(mode="json"),
                device_id=device_id,
                sha256=offer.sha256,
                version=offer.version,
                now=now,
            )
        except SignatureError as exc:
            raise UpdateRefused("rollback-order", str(exc)) from None
        return "rollback"
    if installed is not None and is_semver(installed.version):
        new, old = semver_key(offer.version), semver_key(installed.version)
        if new < old or (new == old and offer.sha256 != installed.sha256):
            raise UpdateRefused(
                "downgrade",
                f"version {offer.version} is not newer than the installed {installed.version}"
                " and no rollback order signed by the server came with it",
            )
    return "update"


def verify_release(
    data: bytes,
    *,
    offer: ReleaseOffer,
    trusted_keys: Sequence[Ed25519PublicKey],
    hardware: str,
    device_id: str,
    installed: SlotContent | None,
    rollback: SignedRollbackOrder | None,
    server_key: Ed25519PublicKey | None,
    now: datetime,
    cache: BundleCache | None = None,
) -> VerifiedRelease:
    """Every check of the module docstring on the downloaded bytes; UpdateRefused if one fails."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if len(data) != offer.size:
        raise UpdateRefused(
            "size", f"downloaded {len(data)} bytes, the check-in announced {offer.size}"
        )
    digest = sha256_bytes(data)
    if digest != offer.sha256:
        raise UpdateRefused(
            "sha256", f"downloaded file has sha256 {digest}, the check-in announced {offer.sha256}"
        )
    try:
        bundle = (cache if cache is not None else BundleCache()).open(data, trusted_keys, digest)
    except SignatureError as exc:
        raise UpdateRefused("signature", str(exc)) from None
    except BundleError as exc:
        raise UpdateRefused("bundle", str(exc)) from None
    manifest = bundle.manifest
    if now.astimezone(UTC) >= manifest.expires_at:
        raise UpdateRefused(
            "expired",
            f"release {manifest.name} {manifest.version} expired at "
            f"{format_time(manifest.expires_at)} (device time {format_time(now)})",
        )
    if manifest.target != hardware or manifest.target != offer.target:
        raise UpdateRefused(
            "target",
            f"bundle targets {manifest.target!r} (announced {offer.target!r}), "
            f"this device is {hardware!r}",
        )
    if manifest.name != offer.name or manifest.version != offer.version:
        raise UpdateRefused(
            "offer",
            f"bundle is {manifest.name} {manifest.version}, the check-in announced "
            f"{offer.name} {offer.version}",
        )
    kind = check_offer(
        offer,
        hardware=hardware,
        device_id=device_id,
        installed=installed,
        rollback=rollback,
        server_key=server_key,
        now=now,
    )
    return VerifiedRelease(bundle=bundle, kind=kind, sha256=digest, size=len(data))


__all__ = [
    "BundleCache",
    "RefusalCheck",
    "UpdateRefused",
    "VerifiedRelease",
    "check_offer",
    "verify_release",
]
