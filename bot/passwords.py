"""Console passwords: scrypt (stdlib) with OWASP's parameters, checked in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# OWASP password storage cheat sheet: scrypt N=2^17, r=8, p=1 (128 MiB of memory per hash).
N, R, P = 2**17, 8, 1
DKLEN = 32


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=DKLEN
    )


def hash_password(password: str, *, n: int = N) -> str:
    """「scrypt$N$r$p$salt$hash」 with a fresh random salt."""
    if not password:
        raise ValueError("empty password")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, R, P)
    b64 = base64.b64encode
    return f"scrypt${n}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`; False for anything malformed."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """Whether `stored` was made with weaker parameters than today's."""
    parts = stored.split("$")
    return len(parts) != 6 or parts[0] != "scrypt" or int(parts[1]) < N
