"""The canonical log lines: one per transaction, one per connection.

The transaction line says exactly why: client, envelope, every recipient's reply, stage,
action (and the would-be action in observe mode), score, symbols with evidence, our reply
and the downstream's. What a client controls is bounded: at most ``MAX_LOGGED_RCPTS``
recipients are listed (the count of the others is logged), so a RCPT flood cannot grow one
line without bound.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from proxy.model import Action, Connection, Hit, Reply, Transaction

log = structlog.get_logger("spamgate")

MAX_LOGGED_RCPTS = 50


def merge_rcpt_hits(per_rcpt: dict[str, list[Hit]], rcpts: list[str]) -> list[Hit]:
    """Union of the recipients' symbols, once each (a symbol is not scored per recipient)."""
    seen: dict[str, Hit] = {}
    for rcpt in rcpts:
        for h in per_rcpt.get(rcpt, ()):
            old = seen.get(h.name)
            if old is None or h.score > old.score:
                seen[h.name] = h
    return list(seen.values())


def outcome_of(reply: Reply | None) -> str:
    if reply is None:
        return "aborted"
    if reply.is_positive:
        return "delivered"
    if reply.is_temporary:
        return "deferred"
    return "rejected"


def log_transaction(
    conn: Connection, txn: Transaction, hits: list[Hit], reply: Reply | None, stage: str, *, observe: bool
) -> str:
    """Write the transaction's line; returns its outcome (delivered/deferred/rejected/aborted)."""
    outcome = outcome_of(reply)
    rcpts = txn.rcpts
    fields: dict[str, Any] = {
        "ref": txn.ref,
        "client_ip": conn.ip_str,
        "client_port": conn.port,
        "client_name": conn.reverse_name or None,
        "helo": conn.helo,
        "tls": conn.tls or None,
        "mail_from": txn.mail_from,
        "rcpts": [
            {"to": r.address, "reply": str(r.reply) if r.reply else None} for r in rcpts[:MAX_LOGGED_RCPTS]
        ],
        "outcome": outcome,
        "stage": stage,
        "action": txn.action or "accept",
        "score": round(sum(h.score for h in hits), 3),
        "symbols": [h.render() for h in hits],
        "reply": str(reply) if reply else None,
        "downstream_reply": str(txn.downstream_reply) if txn.downstream_reply else None,
        "size": txn.size,
        "elapsed_ms": round((time.monotonic() - txn.started) * 1000, 2),
        "timings_ms": {k: round(v, 2) for k, v in txn.stage_ms.items()},
    }
    if len(rcpts) > MAX_LOGGED_RCPTS:
        fields["rcpts_not_listed"] = len(rcpts) - MAX_LOGGED_RCPTS
    if txn.refused:
        fields["rcpts_over_limit"] = txn.refused
    if txn.would_be and txn.would_be != txn.action:
        fields["would_be"] = txn.would_be
    if observe:
        fields["mode"] = "observe"
    if txn.notes.get("policy", "global") != "global":
        fields["policy"] = txn.notes["policy"]
    downstream = txn.notes.get("downstream")
    if downstream:
        fields["route"], fields["downstream"] = downstream
    log.info("transaction", **fields)
    return outcome


def log_connection(conn: Connection, closed: str) -> None:
    fields: dict[str, Any] = {
        "ref": conn.conn_ref,
        "client_ip": conn.ip_str,
        "client_port": conn.port,
        "helo": conn.helo or None,
        "tls": conn.tls or None,
        "transactions": conn.txn_count,
        "errors": conn.errors,
        "closed": closed,
        "elapsed_ms": round((time.monotonic() - conn.started) * 1000, 2),
    }
    if conn.peer[0] != conn.ip_str:
        fields["proxy_peer"] = conn.peer[0]
    if conn.hits:
        fields["symbols"] = [h.render() for h in conn.hits]
    if conn.rejected is not None:
        fields["reply"] = str(conn.rejected)
    helo_verdict = conn.notes.get("helo_verdict")
    if helo_verdict is not None and helo_verdict.action >= Action.TEMPFAIL:
        fields["helo_action"] = helo_verdict.action.label
    log.info("connection", **fields)
