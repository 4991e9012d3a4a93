"""State: what the store holds about a client IP or a sender, and the admin's way to undo it.

For an IP: the penalty box (and the recent rejects that feed it), its reputation and its
netblock's, the greylist auto-allowlist of its netblock and the greylist triplets from it. For a
sender (address or domain): the domain's auto-allowlist and the triplets it sent. Releasing or
clearing asks for a confirmation first, needs the admin role and writes a ``console_audit``
line. The key names are those of :mod:`proxy.checks.connect.reputation` and
:mod:`proxy.checks.rcpt.greylist` (``box|ip``, ``pen|ip``, ``rep|ip|...``, ``glwl|net|...``,
``glpass|...``, ``gl|net|from|rcpt``).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any

from proxy.console.auth import Session
from proxy.console.html import csrf_field, esc, page, table
from proxy.state.base import Store
from proxy.state.util import netblock

MAX_LISTED = 200
MAX_SCANNED = 5000

OPERATIONS = {
    "release": "release {ip} from the penalty box (and forget its recent rejects)",
    "clear_allow_net": "remove the greylist allowlisting of {net}",
    "clear_grey_net": "delete the greylist entries of {net}",
    "clear_allow_dom": "remove the greylist allowlisting of {domain}",
    "clear_grey_sender": "delete the greylist entries of sender {sender}",
}


def _opt(config: Any, check: str, name: str, default: Any) -> Any:
    return getattr(config.checks.get(check), name, default)


class Target:
    """What the page is about, from the query or the form: an IP, a sender, or nothing valid."""

    def __init__(self, config: Any, form: dict[str, str]) -> None:
        self.ip = self.net = self.rep_net = self.sender = self.domain = ""
        self.error = ""
        raw_ip = form.get("ip", "").strip()
        if raw_ip:
            try:
                addr = ipaddress.ip_address(raw_ip)
            except ValueError:
                self.error = "not an IP address"
            else:
                self.ip = str(addr)
                v4, v6 = (
                    _opt(config, "greylist", "netblock_v4", 24),
                    _opt(config, "greylist", "netblock_v6", 64),
                )
                self.net = netblock(addr, v4, v6)
                r4, r6 = (
                    _opt(config, "reputation", "netblock_v4", 24),
                    _opt(config, "reputation", "netblock_v6", 64),
                )
                self.rep_net = netblock(addr, r4, r6)
        sender = form.get("sender", "").strip().strip("<>").lower()
        if sender:
            self.sender = sender
            self.domain = sender.rpartition("@")[2]

    def query(self) -> str:
        return urllib.parse.urlencode({k: v for k, v in (("ip", self.ip), ("sender", self.sender)) if v})

    def describe(self, op: str) -> str:
        return OPERATIONS[op].format(ip=self.ip, net=self.net, domain=self.domain, sender=self.sender)


async def _triplets_of_sender(store: Store, sender: str) -> list[str]:
    needle = f"|{sender}|" if "@" in sender else f"@{sender}|"
    return [k for k in await store.scan_names("gl|", MAX_SCANNED) if needle in k][:MAX_LISTED]


async def lookup(store: Store, config: Any, t: Target) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if t.ip:
        window = _opt(config, "reputation", "penalty_window", 600.0)
        half_life = _opt(config, "reputation", "half_life", 7 * 86400.0)
        ttl = _opt(config, "reputation", "history_ttl", 30 * 86400.0)
        out["boxed"] = await store.get(f"box|{t.ip}") is not None
        out["recent_rejects"] = await store.window_hit(f"pen|{t.ip}", window, 0)
        out["rep_ip"] = await store.decay(f"rep|ip|{t.ip}", 0, 0, half_life, ttl)
        out["rep_net"] = await store.decay(f"rep|net|{t.rep_net}", 0, 0, half_life, ttl)
        out["allow_net"] = await store.get(f"glwl|net|{t.net}") is not None
        out["passes_net"] = await store.get(f"glpass|net|{t.net}")
        out["grey_net"] = await store.scan_names(f"gl|{t.net}|", MAX_LISTED)
    if t.sender:
        out["allow_dom"] = await store.get(f"glwl|dom|{t.domain}") is not None
        out["grey_sender"] = await _triplets_of_sender(store, t.sender)
    return out


async def apply(store: Store, config: Any, t: Target, op: str) -> int:
    """Carry out ``op``; returns how many keys it removed."""
    if op == "release":
        await store.delete(f"box|{t.ip}")
        await store.window_clear(f"pen|{t.ip}", _opt(config, "reputation", "penalty_window", 600.0))
        return 1
    if op == "clear_allow_net":
        keys = [f"glwl|net|{t.net}", f"glpass|net|{t.net}"]
    elif op == "clear_allow_dom":
        keys = [f"glwl|dom|{t.domain}", f"glpass|dom|{t.domain}"]
    elif op == "clear_grey_net":
        keys = await store.scan_names(f"gl|{t.net}|", MAX_SCANNED)
    else:  # clear_grey_sender
        keys = await _triplets_of_sender(store, t.sender)
    for k in keys:
        await store.delete(k)
    return len(keys)


def _button(session: Session, t: Target, op: str, label: str) -> str:
    if not session.admin:
        return ""
    return (
        f'<form method="post" action="/console/state" class="inline">{csrf_field(session)}'
        f'<input type="hidden" name="ip" value="{esc(t.ip)}"><input type="hidden" name="sender" '
        f'value="{esc(t.sender)}"><input type="hidden" name="op" value="{op}">'
        f'<button type="submit" class="danger" id="op-{op}">{esc(label)}</button></form>'
    )


def _yes(flag: bool) -> str:
    return f'<span class="badge {"reject" if flag else "accept"}">{"yes" if flag else "no"}</span>'


def state_page(session: Session, t: Target, found: dict[str, Any], message: str = "") -> bytes:
    form = (
        '<form method="get" action="/console/state" class="filters">'
        f'<label>client IP<input name="ip" id="state-ip" value="{esc(t.ip)}"></label>'
        f'<label>sender or domain<input name="sender" id="state-sender" value="{esc(t.sender)}"></label>'
        '<button type="submit">look up</button></form>'
    )
    body = "<h1>State</h1>" + form
    if message:
        body += f'<p class="ok" id="state-message">{esc(message)}</p>'
    if t.error:
        body += f'<p class="error">{esc(t.error)}</p>'
    if t.ip:
        acc, rej = found["rep_ip"]
        nacc, nrej = found["rep_net"]
        rows = [
            ["in the penalty box", _yes(found["boxed"]), _button(session, t, "release", "release")],
            ["recent rejects (penalty window)", esc(f"{found['recent_rejects']:.1f}"), ""],
            ["reputation of the IP", esc(f"accepted {acc:.1f}, rejected {rej:.1f}"), ""],
            [f"reputation of {esc(t.rep_net)}", esc(f"accepted {nacc:.1f}, rejected {nrej:.1f}"), ""],
            [
                f"greylist allowlist of {esc(t.net)}",
                _yes(found["allow_net"]) + f" <small>passes: {esc(found['passes_net'] or 0)}</small>",
                _button(session, t, "clear_allow_net", "clear allowlist") if found["allow_net"] else "",
            ],
            [
                f"greylist entries from {esc(t.net)}",
                esc(len(found["grey_net"])),
                _button(session, t, "clear_grey_net", "clear entries") if found["grey_net"] else "",
            ],
        ]
        body += f"<h2>Client {esc(t.ip)}</h2>" + table(["what", "now", ""], rows, 'id="state-ip-table"')
        body += _keys(found["grey_net"])
    if t.sender:
        rows = [
            [
                f"greylist allowlist of {esc(t.domain)}",
                _yes(found["allow_dom"]),
                _button(session, t, "clear_allow_dom", "clear allowlist") if found["allow_dom"] else "",
            ],
            [
                f"greylist entries of {esc(t.sender)}",
                esc(len(found["grey_sender"])),
                _button(session, t, "clear_grey_sender", "clear entries") if found["grey_sender"] else "",
            ],
        ]
        body += f"<h2>Sender {esc(t.sender)}</h2>" + table(
            ["what", "now", ""], rows, 'id="state-sender-table"'
        )
        body += _keys(found["grey_sender"])
    if not session.admin and (t.ip or t.sender):
        body += '<p class="meta">Read only: changes need the admin login.</p>'
    return page("state", body, session, "state")


def _keys(keys: list[str]) -> str:
    if not keys:
        return ""
    items = "".join(f"<li><code>{esc(k)}</code></li>" for k in keys)
    return f'<details><summary>{len(keys)} entries</summary><ul class="keys">{items}</ul></details>'


def confirm_page(session: Session, t: Target, op: str) -> bytes:
    body = (
        '<h1>State</h1><div class="confirm" id="confirm">'
        f"<p>Really {esc(t.describe(op))}?</p>"
        f'<form method="post" action="/console/state" class="inline">{csrf_field(session)}'
        f'<input type="hidden" name="ip" value="{esc(t.ip)}"><input type="hidden" name="sender" '
        f'value="{esc(t.sender)}"><input type="hidden" name="op" value="{esc(op)}">'
        '<input type="hidden" name="confirm" value="yes">'
        '<button type="submit" class="danger" id="confirm-yes">yes, do it</button></form> '
        f'<a href="/console/state?{esc(t.query())}">cancel</a></div>'
    )
    return page("confirm", body, session, "state")
