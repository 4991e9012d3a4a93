"""Password hashes for the console login: scrypt (default) or PBKDF2-SHA256, from hashlib.

Format: ``scrypt$n$r$p$salt$hash`` / ``pbkdf2_sha256$iterations$salt$hash`` (salt and hash in
URL-safe base64). Verification costs tens of milliseconds of CPU: callers run it in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def valid_format(stored: str) -> bool:
    parts = stored.split("$")
    return (parts[0] == "scrypt" and len(parts) == 6) or (parts[0] == "pbkdf2_sha256" and len(parts) == 4)


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for an empty or malformed hash."""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            if n > 2**20 or r > 32 or p > 16:
                return False
            want = _unb64(parts[5])
            got = hashlib.scrypt(
                password.encode(), salt=_unb64(parts[4]), n=n, r=r, p=p, dklen=len(want), maxmem=2**27
            )
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            want = _unb64(parts[3])
            got = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(parts[2]), int(parts[1]), len(want))
        else:
            return False
    except (ValueError, OverflowError):
        return False
    return hmac.compare_digest(got, want)
