"""``[console]``: the operator console served by the admin listener (``[metrics] listen``)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    enabled: bool = opt(
        True,
        "Serve the console at /console on the admin listener and record the transaction history. "
        "Nobody can log in until a password hash below is set.",
    )
    admin_password_hash: str = opt(
        "",
        "Hash of the admin password (may change state: penalty box, greylist, try a message); "
        "make one with 'spamgate console-password'. Formats: scrypt$n$r$p$salt$hash, "
        "pbkdf2_sha256$iterations$salt$hash. Empty: no admin login.",
    )
    viewer_password_hash: str = opt(
        "", "Hash of the read-only password (history, explanations, overview); empty: no viewer login."
    )
    session_ttl: float = opt("8h", "A login lasts this long.", kind="duration", minimum=60)
    secure_cookie: bool = opt(
        False,
        "Mark the session cookie Secure (set it when the console is reached through a TLS proxy).",
    )
    history_retention: float = opt(
        "24h", "Transactions older than this are dropped from the history.", kind="duration", minimum=60
    )
    history_max_rows: int = opt(20000, "Most transactions kept in the history.", minimum=100)
    history_queue: int = opt(
        2000,
        "Transactions waiting to be written to the history; past it new ones are dropped (and counted) "
        "rather than slowing mail.",
        minimum=10,
    )
    history_flush: float = opt(
        "500ms", "How often waiting transactions are written, in one batch.", kind="duration", minimum=0.01
    )
