"""The JSON that travels on the protocol's MQTT topics (docs/device-protocol.md, *MQTT*).

A request (device → server, on `.../req/{op}`):

    {"request_id": "9f2c...", "token": "dev_...", "body": {...the HTTP body...}}

plus `deployment_id` for `status` and `command_id` for `command_result` (the ids HTTP
carries in its path). `enroll` has no `token` (its body holds the enrollment token);
`commands` has no `body`.

Its reply (server → device, on `.../res/{op}`):

    {"request_id": "9f2c...", "status": 200, "body": {...the HTTP answer...}}

`status` is the HTTP status the same request gets over HTTP; `body` is the HTTP answer
body: the response JSON, null where HTTP answers 204, or the error body
`{"error": {"code", "message", "field"}}` for a 4xx/5xx. `request_id` is echoed, or null
when the request had none that could be read.

A notification (server → device, on `.../notify`): `{"action": "checkin"}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

# A request id: what a device picks to match the reply to its request (e.g. 16 hex digits).
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"
_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
# The status of a successful reply, per operation: the HTTP endpoint's status.
SUCCESS_STATUS: Final[dict[str, int]] = {
    "enroll": 201,
    "checkin": 200,
    "status": 204,
    "telemetry": 202,
    "sketches": 202,
    "commands": 200,
    "command_result": 204,
}
NOTIFY_CHECKIN: Final = b'{"action":"checkin"}'


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON (non-ASCII characters kept as they are)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def request_id_of(data: Any) -> str | None:
    """The request id of a decoded request, if it has a well-formed one."""
    if isinstance(data, dict):
        value = data.get("request_id")
        if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return None


def reply_payload(request_id: str | None, status: int, body: Any) -> bytes:
    return encode({"request_id": request_id, "status": status, "body": body})


@dataclass(frozen=True)
class Reply:
    """A decoded reply."""

    request_id: str | None
    status: int
    body: Any

    @property
    def error(self) -> dict[str, Any] | None:
        """The `{"code", "message", "field", ...}` of an error reply, if it has one."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return dict(self.body["error"])
        return None


def parse_reply(payload: bytes) -> Reply:
    """Decode a reply; ValueError naming what is wrong with it."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"the reply is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"the reply is a JSON {type(data).__name__}, expected an object")
    status = data.get("status")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"the reply's status is {status!r}, expected an HTTP status 100..599")
    request_id = data.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        raise ValueError(f"the reply's request_id is {request_id!r}, expected a string or null")
    return Reply(request_id, status, data.get("body"))


__all__ = [
    "NOTIFY_CHECKIN",
    "REQUEST_ID_PATTERN",
    "SUCCESS_STATUS",
    "Reply",
    "encode",
    "parse_reply",
    "reply_payload",
    "request_id_of",
]
