"""Dashboard sessions: a signed cookie naming an API token, and CSRF tokens.

The browser logs in with an API token once; from then on it holds a cookie with

    <base64url(JSON {"tid": token id, "iat": issued at (unix s), "nonce": 16 random bytes})>
    "." <base64url(HMAC-SHA256(secret, first part))>

The token itself is never stored in the cookie, so a stolen cookie cannot be replayed on
the API, and a revoked token ends its sessions at once: every request looks the token
id up again (and its role: a role change applies at the next page). Sessions last
`SESSION_MAX_AGE_S` from login.

CSRF: each form carries HMAC(secret, "csrf|" + nonce), derived from the session and
checked in constant time. The cookie is SameSite=Strict as well, so a cross-site form
post does not even carry it; the token covers browsers that ignore SameSite. The login
form (no session yet) is guarded the same way by a short-lived pre-session cookie.

The secret is 32 random bytes in `<data_dir>/ui-session.key`, mode 0600, created on first
use (written atomically); deleting it logs everyone out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tinyops.store.atomic import atomic_write_bytes

SESSION_COOKIE: Final = "tinyops_session"
LOGIN_COOKIE: Final = "tinyops_login"
SECRET_FILE: Final = "ui-session.key"
SECRET_BYTES: Final = 32
SESSION_MAX_AGE_S: Final = 8 * 3600
LOGIN_MAX_AGE_S: Final = 3600
# A cookie longer than this is not one of ours (browsers cap cookies near 4 KB anyway).
MAX_COOKIE_CHARS: Final = 512


@dataclass(frozen=True)
class Session:
    """What a valid session cookie says."""

    token_id: int
    issued_at: int
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session cookies and CSRF tokens with one server secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"the session secret must hold at least {SECRET_BYTES} bytes")
        self._secret = secret

    def _mac(self, message: str) -> str:
        return _b64(hmac.new(self._secret, message.encode(), hashlib.sha256).digest())

    # --- sessions -------------------------------------------------------------------------

    def issue(self, token_id: int, now: int) -> str:
        """A new session cookie value for the API token `token_id`."""
        payload = {"tid": token_id, "iat": now, "nonce": secrets.token_hex(16)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac('session|' + body)}"

    def read(self, cookie: str | None, now: int) -> Session | None:
        """The session of a cookie value, or None if it is absent, forged or expired."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS:
            return None
        body, sep, mac = cookie.partition(".")
        if not sep or not hmac.compare_digest(mac, self._mac("session|" + body)):
            return None
        try:
            payload = json.loads(_unb64(body))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(payload, dict):
            return None
        tid, iat, nonce = payload.get("tid"), payload.get("iat"), payload.get("nonce")
        if not (type(tid) is int and type(iat) is int and isinstance(nonce, str)):
            return None
        if not iat <= now < iat + SESSION_MAX_AGE_S:
            return None
        return Session(tid, iat, nonce)

    def csrf(self, session: Session) -> str:
        """The CSRF token of every form in this session."""
        return self._mac("csrf|" + session.nonce)

    def csrf_ok(self, session: Session, submitted: str | None) -> bool:
        return submitted is not None and hmac.compare_digest(submitted, self.csrf(session))

    # --- the login form's pre-session guard -----------------------------------------------

    def login_nonce(self, now: int) -> str:
        """A value for the pre-session cookie: '<issued at>.<random>.<mac>'."""
        body = f"{now}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac('login|' + body)}"

    def login_csrf(self, login_cookie: str) -> str:
        return self._mac("login-csrf|" + login_cookie)

    def login_ok(self, login_cookie: str | None, submitted: str | None, now: int) -> bool:
        """The login form came with its own page's cookie, fresh, and the matching token."""
        if not login_cookie or not submitted or len(login_cookie) > MAX_COOKIE_CHARS:
            return False
        body, _, mac = login_cookie.rpartition(".")
        if not body or not hmac.compare_digest(mac, self._mac("login|" + body)):
            return False
        issued, _, _ = body.partition(".")
        if not issued.isdigit() or not int(issued) <= now < int(issued) + LOGIN_MAX_AGE_S:
            return False
        return hmac.compare_digest(submitted, self.login_csrf(login_cookie))


_secret_lock = threading.Lock()


def load_or_create_secret(data_dir: Path) -> bytes:
    """The server's session secret, generated (0600) on first use."""
    path = data_dir / SECRET_FILE
    with _secret_lock:
        try:
            secret = path.read_bytes()
        except FileNotFoundError:
            secret = os.urandom(SECRET_BYTES)
            atomic_write_bytes(path, secret, mode=0o600)
    if len(secret) < SECRET_BYTES:
        raise ValueError(
            f"{path}: the session secret must hold at least {SECRET_BYTES} bytes; delete the "
            "file to have a new one made (everyone will have to log in again)"
        )
    return secret
