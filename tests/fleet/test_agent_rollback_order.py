"""Server-signed rollback orders: signing, and each reason a device refuses one."""

from __future__ import annotations

import base64
import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from test_agent_support import NOW, OTHER_KEY, SERVER_KEY

from tinyops.errors import SignatureError
from tinyops.security.rollback import (
    public_key_from_b64,
    public_key_to_b64,
    sign_rollback_order,
    verify_rollback_order,
)
from tinyops.store.atomic import canonical_json

SHA = "ab" * 32
ORDER = {
    "device_id": "pi-0001",
    "deployment_id": 17,
    "sha256": SHA,
    "version": "1.1.0",
    "issued_at": NOW,
    "expires_at": NOW + timedelta(hours=24),
}


def _verify(signed: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "device_id": "pi-0001",
        "sha256": SHA,
        "version": "1.1.0",
        "now": NOW + timedelta(hours=1),
    }
    args.update(overrides)
    return verify_rollback_order(SERVER_KEY.public_key(), signed, **args)


def test_signed_order_has_wire_form_and_verifies() -> None:
    signed = sign_rollback_order(SERVER_KEY, ORDER)
    assert set(signed) == {"order", "signature"}
    # Times become protocol strings before signing, so the device recomputes the same bytes.
    assert signed["order"]["issued_at"] == "2026-11-27T10:00:00Z"
    assert signed["order"]["expires_at"] == "2026-11-28T10:00:00Z"
    signature = base64.b64decode(signed["signature"], validate=True)
    SERVER_KEY.public_key().verify(signature, canonical_json(signed["order"]))
    # After a JSON round trip, as the device receives it.
    assert _verify(json.loads(json.dumps(signed))) == signed["order"]


def test_signing_is_deterministic_and_string_times_are_accepted() -> None:
    as_strings = {
        **ORDER,
        "issued_at": "2026-11-27T10:00:00Z",
        "expires_at": "2026-11-28T10:00:00Z",
    }
    assert sign_rollback_order(SERVER_KEY, ORDER) == sign_rollback_order(SERVER_KEY, as_strings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device_id": "pi-0002"}, r"for device 'pi-0001', not this device 'pi-0002'"),
        ({"sha256": "cd" * 32}, r"for bundle sha256 abab.*not the offered cdcd"),
        ({"version": "1.0.0"}, r"for version 1.1.0, not the offered 1.0.0"),
        ({"now": NOW + timedelta(hours=24)}, r"expired at 2026-11-28T10:00:00Z"),
    ],
)
def test_order_for_something_else_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        _verify(sign_rollback_order(SERVER_KEY, ORDER), **overrides)


def test_altered_order_is_refused() -> None:
    signed = sign_rollback_order(SERVER_KEY, ORDER)
    altered = copy.deepcopy(signed)
    altered["order"]["device_id"] = "pi-0002"
    with pytest.raises(SignatureError, match="does not verify under the server key"):
        _verify(altered, device_id="pi-0002")
    extended = copy.deepcopy(signed)
    extended["order"]["expires_at"] = "2027-11-28T10:00:00Z"
    with pytest.raises(SignatureError, match="does not verify"):
        _verify(extended)


def test_order_signed_by_another_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not verify under the server key"):
        _verify(sign_rollback_order(OTHER_KEY, ORDER))


def test_malformed_wire_forms_are_refused() -> None:
    signed = sign_rollback_order(SERVER_KEY, ORDER)
    with pytest.raises(SignatureError, match="exactly the keys order and signature"):
        _verify({"order": signed["order"]})
    with pytest.raises(SignatureError, match="not valid base64"):
        _verify({**signed, "signature": "not base64!"})
    with pytest.raises(SignatureError, match="decodes to 3 bytes, expected a 64-byte"):
        _verify({**signed, "signature": base64.b64encode(b"abc").decode()})


def test_orders_missing_fields_cannot_be_signed() -> None:
    partial = {k: v for k, v in ORDER.items() if k != "version"}
    with pytest.raises(SignatureError, match="missing version"):
        sign_rollback_order(SERVER_KEY, partial)
    with pytest.raises(SignatureError, match="unexpected note"):
        sign_rollback_order(SERVER_KEY, {**ORDER, "note": "x"})
    with pytest.raises(SignatureError, match="sha256 must be 64 lowercase hex digits"):
        sign_rollback_order(SERVER_KEY, {**ORDER, "sha256": "ABC"})


def test_server_key_round_trips_through_base64() -> None:
    text = public_key_to_b64(SERVER_KEY.public_key())
    assert len(base64.b64decode(text)) == 32
    assert public_key_to_b64(public_key_from_b64(text)) == text
    with pytest.raises(SignatureError, match="server_key decodes to 3 bytes"):
        public_key_from_b64(base64.b64encode(b"abc").decode())
