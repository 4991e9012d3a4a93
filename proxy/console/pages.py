"""The history page (latest transactions, filters, live updates) and one transaction's page."""

from __future__ import annotations

import urllib.parse
from typing import Any

from proxy.console.auth import Session
from proxy.console.backends import Filters
from proxy.console.html import action_badge, esc, page, symbols_cell, table, when
from proxy.explain import render_log_line
from proxy.policy.rules import Rules

ACTIONS = ("", "accept", "tag", "tempfail", "reject")
HEAD = [
    "time",
    "ref",
    "client",
    "HELO",
    "sender",
    "recipients",
    "stage",
    "action",
    "score",
    "symbols",
    "reply",
]


def filters_from(query: dict[str, str]) -> Filters:
    return Filters(
        **{k: query.get(k, "").strip()[:200] for k in ("ref", "ip", "sender", "rcpt", "action", "symbol")}
    )


def row_cells(r: dict[str, Any]) -> list[str]:
    client = esc(r["ip"]) + (f"<br><small>{esc(r['name'])}</small>" if r.get("name") else "")
    rcpts = "<br>".join(esc(x["to"]) for x in r["rcpts"])
    reply = esc(r.get("downstream_reply") or r.get("reply") or "")
    ref = esc(r["ref"])
    return [
        f'<span title="{esc(when(r["ts"]))} UTC">{esc(when(r["ts"])[11:])}</span>',
        f'<a href="/console/tx/{urllib.parse.quote(r["ref"])}">{ref}</a>',
        client,
        esc(r["helo"]),
        esc(r["sender"]),
        rcpts,
        esc(r["stage"]),
        action_badge(r["action"]),
        esc(f"{r['score']:g}"),
        symbols_cell(r["symbols"]),
        reply,
    ]


def _filter_form(f: Filters) -> str:
    def field(name: str, label: str, value: str) -> str:
        return f'<label>{label}<input name="{name}" value="{esc(value)}"></label>'

    opts = "".join(
        f'<option value="{a}"{" selected" if a == f.action else ""}>{a or "any"}</option>' for a in ACTIONS
    )
    return (
        '<form method="get" action="/console/" class="filters" id="filters">'
        + field("ref", "ref", f.ref)
        + field("ip", "client IP", f.ip)
        + field("sender", "sender", f.sender)
        + field("rcpt", "recipient", f.rcpt)
        + f'<label>action<select name="action">{opts}</select></label>'
        + field("symbol", "symbol", f.symbol)
        + '<button type="submit">filter</button> <a href="/console/">clear</a></form>'
    )


def history_page(rows: list[dict[str, Any]], f: Filters, session: Session, backend: str) -> bytes:
    last = max((r["id"] for r in rows), default=0)
    query = urllib.parse.urlencode({k: getattr(f, k) for k in Filters.__slots__ if getattr(f, k)})
    body = (
        "<h1>Live history</h1>"
        + _filter_form(f)
        + f'<p class="meta">the latest transactions, newest first, from the {esc(backend)} history; '
        + '<span id="live">live</span></p>'
        + table(
            HEAD,
            [row_cells(r) for r in rows],
            f'id="history" data-after="{last}" data-query="{esc(query)}"',
        )
    )
    return page("history", body, session, "history")


def as_log_line(r: dict[str, Any]) -> dict[str, Any]:
    """The history row in the shape of the canonical log line (for ``render_log_line``)."""
    return {
        "event": "transaction",
        "ref": r["ref"],
        "ts": when(r["ts"]) + "Z",
        "client_ip": r["ip"],
        "client_name": r.get("name") or None,
        "helo": r["helo"],
        "mail_from": r["sender"],
        "outcome": r["outcome"],
        "stage": r["stage"],
        "action": r["action"],
        "would_be": r["would_be"] if r["would_be"] != r["action"] else None,
        "score": r["score"],
        "reply": r.get("reply") or None,
        "downstream_reply": r.get("downstream_reply") or None,
        "size": r.get("size"),
        "elapsed_ms": r.get("elapsed_ms"),
        "rcpts": r["rcpts"],
        "symbols": [
            ("~" if s.get("observe") else "")
            + f"{s['name']}({s['score']:g})"
            + (f"{{{s['evidence']}}}" if s.get("evidence") else "")
            for s in r["symbols"]
        ],
    }


def tx_page(r: dict[str, Any], rules: Rules, session: Session) -> bytes:
    facts = [
        ("time", when(r["ts"]) + " UTC"),
        ("client", r["ip"] + (f" ({r['name']})" if r.get("name") else "")),
        ("HELO", r["helo"]),
        ("sender", r["sender"]),
        ("outcome", r["outcome"]),
        ("stage", r["stage"]),
        ("score", f"{r['score']:g}"),
        ("our reply", r.get("reply") or ""),
        ("downstream reply", r.get("downstream_reply") or ""),
        ("size", str(r.get("size") or 0)),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    dl += f"<dt>action</dt><dd>{action_badge(r['action'])}"
    if r["would_be"] != r["action"]:
        dl += f" (would be {esc(r['would_be'])})"
    dl += "</dd>"
    rcpts = table(["recipient", "reply"], [[esc(x["to"]), esc(x["reply"])] for x in r["rcpts"]])
    sym_rows = []
    for s in r["symbols"]:
        rule = rules.symbols.get(s["name"])
        sym_rows.append(
            [
                f'<a href="/console/?symbol={esc(s["name"])}">{esc(s["name"])}</a>'
                + (" <small>observe</small>" if s.get("observe") else ""),
                esc(f"{s['score']:g}"),
                f"<code>{esc(s['evidence'])}</code>",
                esc(rule.description if rule else ""),
                esc(rule.remedy if rule else ""),
            ]
        )
    symbols = table(["symbol", "score", "evidence", "meaning", "how the sender fixes it"], sym_rows)
    text = render_log_line(as_log_line(r), rules)
    body = (
        f"<h1>Transaction {esc(r['ref'])}</h1><dl class=facts>{dl}</dl>"
        f"<h2>Recipients</h2>{rcpts}<h2>Symbols</h2>{symbols}"
        f"<h2>As <code>spamgate explain --ref {esc(r['ref'])}</code> prints it</h2>"
        f'<pre class="explain">{esc(text)}</pre>'
        f'<p><a href="/console/?ip={esc(r["ip"])}">all from {esc(r["ip"])}</a> · '
        f'<a href="/console/state?ip={esc(r["ip"])}">state of {esc(r["ip"])}</a></p>'
    )
    return page(f"transaction {r['ref']}", body, session, "history")
