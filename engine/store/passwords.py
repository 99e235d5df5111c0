"""Pure: password hashing with scrypt, and session tokens stored only as hashes.

A hash is stored with its parameters, ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost
can be raised later without invalidating old hashes. scrypt takes tens of milliseconds by
design: callers on the reactor thread run these functions in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

_SCHEME = "scrypt"


@dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost parameters (the defaults use 16 MiB and ~50 ms)."""

    n: int = 2**14
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        """The memory bound hashlib must allow for these parameters, with headroom."""
        return 128 * self.n * self.r * self.p + 4 * 1024 * 1024


def hash_password(password: str, params: ScryptParams | None = None) -> str:
    """A salted scrypt hash of ``password``, with its parameters, as one string."""
    params = params or ScryptParams()
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, params)
    return "$".join(
        (_SCHEME, str(params.n), str(params.r), str(params.p), _b64(salt), _b64(digest))
    )


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (compared in constant time).

    :returns: False as well for a malformed or unknown-scheme hash.
    """
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != _SCHEME:
            return False
        params = ScryptParams(int(n), int(r), int(p))
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), params)
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def new_token() -> str:
    """A fresh session token for the client (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a session token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def _scrypt(password: str, salt: bytes, params: ScryptParams) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=params.n, r=params.r, p=params.p,
        maxmem=params.maxmem, dklen=32,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
