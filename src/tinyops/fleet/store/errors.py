"""Errors of fleet operations, each carrying the HTTP status the server answers with.

The store raises them from inside its transactions (which then roll back, so a refused
operation changes nothing); the server turns them into the protocol's error body
`{"error": {"code", "message", "field"}}`.
"""

from __future__ import annotations

from typing import ClassVar

from tinyops.errors import TinyopsError


class FleetError(TinyopsError):
    """A refused fleet operation: `message` says what was wrong and what was expected."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad-request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        """JSON path of the offending request field, when there is one."""
        self.code = code or self.default_code
        self.headers = headers
        """HTTP headers the answer must carry (e.g. Content-Range of a 416)."""


class Unauthorized(FleetError):
    """No valid credential (a missing, unknown, expired or used-up token)."""

    status = 401
    default_code = "unauthorized"


class Forbidden(FleetError):
    """A valid credential asking for something that is not its own."""

    status = 403
    default_code = "forbidden"


class NotFound(FleetError):
    """The named device, release, deployment, token or command does not exist."""

    status = 404
    default_code = "not-found"


class Conflict(FleetError):
    """The request contradicts the current state (an immutable version, a busy device)."""

    status = 409
    default_code = "conflict"


class RangeNotSatisfiable(FleetError):
    """A download's Range header asks for bytes the file does not have."""

    status = 416
    default_code = "range-not-satisfiable"


class Invalid(FleetError):
    """Well-formed but unacceptable input (a bad bundle, a selector that matches nothing)."""

    status = 422
    default_code = "invalid"
