"""HTML building: every value from mail is escaped here (``esc``), the page frame, small widgets.

Pages are server-rendered strings; nothing from a message, an envelope or a symbol's evidence
reaches the page without :func:`esc`. No inline script and no inline style (the CSP forbids
both): behaviour comes from /console/static/console.js, looks from console.css.
"""

from __future__ import annotations

import html
import time
from typing import Any

from proxy.console.auth import Session

NAV = (
    ("history", "/console/"),
    ("overview", "/console/overview"),
    ("try", "/console/try"),
    ("state", "/console/state"),
)


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def page(title: str, body: str, session: Session | None, active: str = "") -> bytes:
    nav = ""
    if session is not None:
        links = "".join(
            f'<a href="{href}"{" class=active" if name == active else ""}>{name}</a>' for name, href in NAV
        )
        nav = (
            f'<nav>{links}<span class="role">{esc(session.role)}</span>'
            f'<form method="post" action="/console/logout" class="inline">{csrf_field(session)}'
            '<button type="submit">log out</button></form></nav>'
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>spamgate · {esc(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script>'
        f"</head><body><header><strong>spamgate</strong>{nav}</header><main>{body}</main></body></html>"
    ).encode()


def csrf_field(session: Session) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(session.csrf)}">'


def action_badge(action: str) -> str:
    return f'<span class="badge {esc(action)}">{esc(action)}</span>'


def symbols_cell(symbols: list[dict[str, Any]]) -> str:
    out = []
    for s in symbols:
        ev = f"{{{s['evidence']}}}" if s.get("evidence") else ""
        flag = "~" if s.get("observe") else ""
        score = format(s["score"], "g")
        out.append(f'<span class="sym">{esc(flag + s["name"])}({esc(score)}){esc(ev)}</span>')
    return " ".join(out)


def table(head: list[str], rows: list[list[str]], attrs: str = "") -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table {attrs}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
