"""Bearer tokens: shown once, stored as a sha256 hash.

A token is a type prefix followed by 32 random bytes from the OS CSPRNG, base64url
encoded without padding (43 characters), e.g. `dev_3q2-...`:

    dev_   a device's credential, issued at enrollment
    tok_   an operator's or CI's management API token (it carries a role)
    etk_   a fleet enrollment token, which lets a device enroll itself

The server keeps only sha256(token) in hex. 32 random bytes (256 bits) make the token
unguessable, so a plain, unsalted hash is enough to make a leaked database useless for
authenticating (no password-style key stretching is needed for a random secret), and a
hash can be looked up directly, which the device check-in path relies on.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Final, Literal

TokenPrefix = Literal["dev_", "tok_", "etk_"]
TOKEN_PREFIXES: Final[tuple[TokenPrefix, ...]] = ("dev_", "tok_", "etk_")
# 32 bytes = 256 bits of entropy; base64url without padding turns them into 43 characters.
TOKEN_BYTES: Final = 32
TOKEN_BODY_CHARS: Final = 43
_TOKEN = re.compile(r"(dev_|tok_|etk_)[A-Za-z0-9_-]{43}")


def hash_token(token: str) -> str:
    """Lowercase hex sha256 of the token's UTF-8 bytes: what the server stores."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(prefix: TokenPrefix) -> tuple[str, str]:
    """A fresh token with `prefix` and its hash: (plaintext, sha256 hex).

    The plaintext is for the caller to show once; only the hash may be stored.
    """
    if prefix not in TOKEN_PREFIXES:
        raise ValueError(f"token prefix {prefix!r}: expected one of {', '.join(TOKEN_PREFIXES)}")
    body = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
    token = prefix + body
    return token, hash_token(token)


def is_token(text: str, prefix: TokenPrefix) -> bool:
    """Whether `text` has the shape of a `prefix` token (says nothing about validity)."""
    return text.startswith(prefix) and _TOKEN.fullmatch(text) is not None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, else None."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    credentials = credentials.strip()
    return credentials or None
