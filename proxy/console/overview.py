"""The overview page: the last hour of the history as charts, and the health of what mail
depends on (DNS lists, downstream, store) as the metrics and /readyz see it now."""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from typing import Any

from proxy.console.auth import Session
from proxy.console.charts import stacked_bars, top_bars
from proxy.console.html import esc, page, table

ACTIONS = ("accept", "tag", "tempfail", "reject")
TOP = 10


def network_of(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def summarise(rows: list[dict[str, Any]], now: float, minutes: int = 60) -> dict[str, Any]:
    """Per-minute counts by action, top symbols, top refused networks and sender domains."""
    start = (int(now) // 60 - minutes + 1) * 60
    per_min = {a: [0] * minutes for a in ACTIONS}
    symbols: Counter[str] = Counter()
    nets: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    for r in rows:
        slot = int((r["ts"] - start) // 60)
        if not 0 <= slot < minutes:
            continue
        action = r["action"] if r["action"] in per_min else "accept"
        per_min[action][slot] += 1
        symbols.update(s["name"] for s in r["symbols"])
        if r["action"] in ("reject", "tempfail"):
            nets[network_of(r["ip"])] += 1
            sender = r["sender"] or ""
            domains[sender.rpartition("@")[2].lower() if "@" in sender else "<>"] += 1
    labels = [time.strftime("%H:%M", time.gmtime(start + 60 * i)) for i in range(minutes)]
    return {
        "per_min": per_min,
        "labels": labels,
        "total": sum(sum(v) for v in per_min.values()),
        "symbols": symbols.most_common(TOP),
        "nets": nets.most_common(TOP),
        "domains": domains.most_common(TOP),
    }


def _card(title: str, body: str, ident: str) -> str:
    return f'<section class="card" id="{ident}"><h2>{esc(title)}</h2>{body}</section>'


def overview_page(
    summary: dict[str, Any],
    lists: list[tuple[str, float]],
    readiness: list[str],
    counters: list[tuple[str, float]],
    session: Session,
) -> bytes:
    health_rows = []
    for line in readiness:
        name, _, state = line.rpartition(" ")
        health_rows.append(
            [esc(name), f'<span class="badge {"accept" if state == "ok" else "reject"}">{esc(state)}</span>']
        )
    list_rows = [
        [
            esc(zone),
            f'<span class="badge {"accept" if v else "reject"}">{"healthy" if v else "disabled"}</span>',
        ]
        for zone, v in lists
    ]
    body = (
        "<h1>Overview</h1>"
        f'<p class="meta">the last hour from the history: {summary["total"]} transactions</p>'
        '<div class="cards">'
        + _card(
            "Transactions per minute, by action",
            stacked_bars(summary["per_min"], summary["labels"]),
            "rate",
        )
        + _card("Top symbols", top_bars(summary["symbols"]), "symbols")
        + _card("Top refused networks", top_bars(summary["nets"], colour="#c43c3c"), "networks")
        + _card("Top refused sender domains", top_bars(summary["domains"], colour="#c43c3c"), "domains")
        + _card(
            "Downstream and store",
            table(["dependency", "state"], health_rows) if health_rows else "<p>no dependency</p>",
            "health",
        )
        + _card(
            "DNS lists",
            table(["zone", "last probe"], list_rows)
            if list_rows
            else '<p class="meta">no list probed yet</p>',
            "lists",
        )
        + _card(
            "Errors since start (all workers)",
            table(["series", "count"], [[esc(n), esc(f"{v:g}")] for n, v in counters])
            if counters
            else '<p class="meta">none</p>',
            "errors",
        )
        + "</div>"
    )
    return page("overview", body, session, "overview")
