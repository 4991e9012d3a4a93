"""Console logins: password hashes from ``[console]``, two roles, sessions and CSRF tokens.

- Roles: ``admin`` (may change state) and ``viewer`` (reads only). A password is checked against
  the admin hash first, then the viewer hash, in a thread (scrypt costs CPU), one at a time; a
  failed login waits a moment before its answer.
- Sessions live in the memory of the process serving the admin listener (there is one per
  host), at most ``MAX_SESSIONS``, each for ``console.session_ttl``. The cookie is HttpOnly,
  SameSite=Strict, limited to /console, and Secure with ``console.secure_cookie``.
- CSRF: every session has a random token that every state-changing form must carry; the login
  form itself uses a double-submit token (a cookie and the same value in the form).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass

from proxy.console.config import ConsoleConfig
from proxy.console.passwords import verify_password

COOKIE = "sg_session"
PRE_COOKIE = "sg_login"
MAX_SESSIONS = 1000


@dataclass(slots=True)
class Session:
    role: str
    csrf: str
    expires: float

    @property
    def admin(self) -> bool:
        return self.role == "admin"


class Sessions:
    def __init__(self) -> None:
        self.by_id: dict[str, Session] = {}
        self._verify = asyncio.Semaphore(1)

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self.by_id.get(sid)
        if s is None or s.expires < time.time():
            self.by_id.pop(sid, None)
            return None
        return s

    def create(self, role: str, ttl: float) -> tuple[str, Session]:
        now = time.time()
        if len(self.by_id) >= MAX_SESSIONS:
            for sid in [k for k, v in self.by_id.items() if v.expires < now] or list(self.by_id)[:1]:
                del self.by_id[sid]
        sid = secrets.token_urlsafe(32)
        s = self.by_id[sid] = Session(role, secrets.token_urlsafe(24), now + ttl)
        return sid, s

    def drop(self, sid: str | None) -> None:
        if sid:
            self.by_id.pop(sid, None)

    async def login(self, cfg: ConsoleConfig, password: str) -> str:
        """The role the password opens ('admin', 'viewer'), or '' (after a short wait)."""
        async with self._verify:
            for role, stored in (("admin", cfg.admin_password_hash), ("viewer", cfg.viewer_password_hash)):
                if not (stored and password):
                    continue
                ok: bool = await asyncio.to_thread(verify_password, password, stored)
                if ok:
                    return role
        await asyncio.sleep(0.5)
        return ""


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(expected) and given is not None and hmac.compare_digest(expected, given)


def cookie(name: str, value: str, cfg: ConsoleConfig, max_age: float | None = None) -> str:
    out = f"{name}={value}; Path=/console; HttpOnly; SameSite=Strict"
    if max_age is not None:
        out += f"; Max-Age={int(max_age)}"
    if cfg.secure_cookie:
        out += "; Secure"
    return out


def new_token() -> str:
    return secrets.token_urlsafe(24)
