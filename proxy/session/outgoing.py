"""The message as it leaves: our headers on top, the client's copies of our own removed first.

The tag header and subject prefix are those of the transaction's recipient domain policy
(:mod:`proxy.policy.domains`); the other headers are global (``[policy]``).
"""

from __future__ import annotations

from proxy.model import Action, Connection, Hit, Transaction, Verdict
from proxy.policy.domains import DomainPolicy
from proxy.session.runtime import Generation
from proxy.session.trace import (
    add_subject_prefix,
    header,
    received_header,
    remove_instances,
    strip_fields,
    strip_own_auth_results,
)


def prepare_message(
    conn: Connection,
    txn: Transaction,
    gen: Generation,
    message: bytes,
    *,
    hits: list[Hit],
    verdict: Verdict,
    dpol: DomainPolicy,
) -> bytes:
    pol = gen.config.policy
    message, _ = strip_own_auth_results(message, gen.authserv_id)
    own = [n for n in (pol.header_symbols, pol.header_score, pol.tag_header, dpol.tag_header) if n]
    message = strip_fields(message, own, ("x-spamgate-",))
    message = remove_instances(message, txn.notes.get("remove_headers", ()))
    if verdict.action == Action.TAG and dpol.tag_subject_prefix:
        message = add_subject_prefix(message, dpol.tag_subject_prefix)
    extra = [received_header(conn, txn, gen.config.server.hostname)]
    for name, value in txn.notes.get("add_headers", ()):
        extra.append(header(name, value))
    if pol.header_symbols:
        symbols = " ".join(h.render() for h in hits) or "none"
        action = verdict.action.label
        if verdict.would_be != verdict.action:
            action += f" (would be {verdict.would_be.label})"
        extra.append(header(pol.header_symbols, f"{action}; score={verdict.score:g}; {symbols}"))
    if pol.header_score:
        extra.append(header(pol.header_score, f"{verdict.score:g}"))
    if verdict.action == Action.TAG and dpol.tag_header:
        extra.append(header(dpol.tag_header, "YES"))
    extra.append(message)
    return b"".join(extra)
