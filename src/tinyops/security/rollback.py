"""Rollback orders: the server's signed permission for one device to install an older release.

A device refuses any release whose version is not newer than the one it runs (a signed but
old bundle may carry a fixed vulnerability or a worse model; replaying it must not work).
When a deployment is rolled back, the server instead hands each device an order

    {"device_id": "nano-0042", "deployment_id": 17, "sha256": "<bundle sha256>",
     "version": "1.1.0", "issued_at": "2026-11-27T10:00:00Z",
     "expires_at": "2026-11-28T10:00:00Z"}

signed with the server's Ed25519 key over the order's canonical JSON (sorted keys, no
whitespace: `tinyops.store.atomic.canonical_json`). The device learns that key when it
enrolls (`server_key`: base64 of the raw 32-byte public key) and accepts the downgrade only
if the signature verifies and the order names this device, exactly this bundle (sha256)
and version, and has not expired. An order is therefore useless to any other device, for
any other bundle, or after its expiry.

Wire form: `{"order": {...}, "signature": "<base64 of the 64-byte Ed25519 signature>"}`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tinyops.errors import SignatureError
from tinyops.store.atomic import canonical_json

ORDER_FIELDS: Final = frozenset(
    {"device_id", "deployment_id", "sha256", "version", "issued_at", "expires_at"}
)
# Raw Ed25519 sizes, in bytes (RFC 8032).
ED25519_PUBLIC_KEY_BYTES: Final = 32
ED25519_SIGNATURE_BYTES: Final = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")


def public_key_to_b64(public_key: Ed25519PublicKey) -> str:
    """Standard base64 of the raw 32-byte public key: the `server_key` of an enrollment."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str, what: str = "server_key") -> Ed25519PublicKey:
    """Parse a base64 raw Ed25519 public key; SignatureError names `what` if malformed."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{what} is not valid base64: {exc}") from exc
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise SignatureError(
            f"{what} decodes to {len(raw)} bytes, expected a raw "
            f"{ED25519_PUBLIC_KEY_BYTES}-byte Ed25519 public key"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with a 'Z' suffix, the protocol's time format."""
    if moment.tzinfo is None:
        raise ValueError(f"time {moment!r} must be timezone-aware (UTC)")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise SignatureError(
            f"rollback order field {field} is {value!r}: expected an ISO 8601 UTC time string"
        )
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SignatureError(
            f"rollback order field {field} is {value!r}: expected an ISO 8601 UTC time "
            "such as 2026-11-27T10:00:00Z"
        ) from exc
    if moment.tzinfo is None:
        raise SignatureError(
            f"rollback order field {field} is {value!r}: expected a time zone (Z for UTC)"
        )
    return moment.astimezone(UTC)


def _normalized(order: Mapping[str, Any]) -> dict[str, Any]:
    """The order with datetimes written as protocol time strings, after checking its fields."""
    keys = set(order)
    if keys != ORDER_FIELDS:
        missing = sorted(ORDER_FIELDS - keys)
        extra = sorted(keys - ORDER_FIELDS)
        raise SignatureError(
            "rollback order must have exactly the fields "
            f"{', '.join(sorted(ORDER_FIELDS))}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    result = dict(order)
    for field in ("issued_at", "expires_at"):
        value = result[field]
        result[field] = format_time(value) if isinstance(value, datetime) else value
        _parse_time(result[field], field)
    for field in ("device_id", "version"):
        if not isinstance(result[field], str) or not result[field]:
            raise SignatureError(f"rollback order field {field} must be a non-empty string")
    if not isinstance(result["sha256"], str) or not _SHA256.fullmatch(result["sha256"]):
        raise SignatureError("rollback order field sha256 must be 64 lowercase hex digits")
    deployment_id = result["deployment_id"]
    if isinstance(deployment_id, bool) or not isinstance(deployment_id, int):
        raise SignatureError("rollback order field deployment_id must be an integer")
    return result


def sign_rollback_order(private_key: Ed25519PrivateKey, order: Mapping[str, Any]) -> dict[str, Any]:
    """Sign `order` (the six fields above; datetimes allowed) and return the wire form.

    The signature covers `canonical_json(order)` with times already written as strings,
    which is exactly what the device recomputes from the JSON it receives.
    """
    normalized = _normalized(order)
    signature = private_key.sign(canonical_json(normalized))
    return {"order": normalized, "signature": base64.b64encode(signature).decode("ascii")}


def verify_rollback_order(
    public_key: Ed25519PublicKey,
    signed: Mapping[str, Any],
    device_id: str,
    sha256: str,
    version: str,
    now: datetime,
) -> dict[str, Any]:
    """Return the order if the server signed it for this device, bundle and version.

    SignatureError (naming the failed check) if the wire form is malformed, the signature
    does not verify under `public_key`, or the order names another device, another bundle
    (sha256), another version, or expired at or before `now`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    if not isinstance(signed, Mapping) or set(signed) != {"order", "signature"}:
        raise SignatureError("rollback must be an object with exactly the keys order and signature")
    order, signature_text = signed["order"], signed["signature"]
    if not isinstance(order, Mapping):
        raise SignatureError("rollback.order must be an object")
    if not isinstance(signature_text, str):
        raise SignatureError("rollback.signature must be a base64 string")
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"rollback.signature is not valid base64: {exc}") from exc
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureError(
            f"rollback.signature decodes to {len(signature)} bytes, expected a "
            f"{ED25519_SIGNATURE_BYTES}-byte Ed25519 signature"
        )
    # The signature is checked over the order exactly as received, before reading any field.
    try:
        public_key.verify(signature, canonical_json(dict(order)))
    except InvalidSignature:
        raise SignatureError(
            "rollback order signature does not verify under the server key: the order was "
            "altered or signed by another server"
        ) from None
    checked = _normalized(order)
    if checked["device_id"] != device_id:
        raise SignatureError(
            f"rollback order is for device {checked['device_id']!r}, not this device {device_id!r}"
        )
    if checked["sha256"] != sha256:
        raise SignatureError(
            f"rollback order is for bundle sha256 {checked['sha256']}, not the offered {sha256}"
        )
    if checked["version"] != version:
        raise SignatureError(
            f"rollback order is for version {checked['version']}, not the offered {version}"
        )
    expires_at = _parse_time(checked["expires_at"], "expires_at")
    if now.astimezone(UTC) >= expires_at:
        raise SignatureError(
            f"rollback order expired at {checked['expires_at']} (now {format_time(now)})"
        )
    return checked


__all__ = [
    "ORDER_FIELDS",
    "format_time",
    "public_key_from_b64",
    "public_key_to_b64",
    "sign_rollback_order",
    "verify_rollback_order",
]
