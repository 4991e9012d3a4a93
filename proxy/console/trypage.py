"""Try a message: an envelope (and optionally a message) through the running pipeline and
policy, stage by stage, as ``spamgate explain`` does it; nothing is sent or relayed.

The dry run uses the live DNS and store, so it may record state a real session would (a
greylist triplet, a rate-limit hit): it is for the admin role only.
"""

from __future__ import annotations

import asyncio
import ipaddress
from email.parser import BytesHeaderParser
from typing import Any

from proxy.console.auth import Session
from proxy.console.html import action_badge, csrf_field, esc, page, table
from proxy.explain import dry_run
from proxy.policy.rules import Rules

MAX_RCPTS = 50
TIMEOUT = 30.0


def _form(session: Session, f: dict[str, str]) -> str:
    def field(name: str, label: str, default: str = "") -> str:
        return (
            f'<label>{label}<input name="{name}" id="try-{name}" value="{esc(f.get(name, default))}"></label>'
        )

    return (
        '<form method="post" action="/console/try" class="stack" id="try">'
        + csrf_field(session)
        + field("ip", "client IP", "192.0.2.10")
        + field("helo", "HELO name", "mail.example.net")
        + field("mail_from", "sender", "someone@example.net")
        + field("rcpts", "recipients (comma separated)", "postmaster@example.test")
        + '<label class="wide">message (optional: headers and body; without it the DATA checks do not run)'
        + '<textarea name="message" id="try-message" rows="10">'
        + f"{esc(f.get('message', ''))}</textarea></label>"
        + '<label class="wide">or load a file <input type="file" accept=".eml,message/rfc822,text/plain" '
        + 'data-target="try-message"></label>'
        + '<div class="wide"><button type="submit">what would spamgate do?</button></div></form>'
    )


def try_page(session: Session, form: dict[str, str] | None = None, result: str = "") -> bytes:
    body = "<h1>Try a message</h1>"
    if not session.admin:
        body += '<p class="error">The dry run records state like a real session: admin role only.</p>'
        return page("try", body, session, "try")
    body += _form(session, form or {}) + result
    return page("try", body, session, "try")


def _subject(message: bytes) -> str:
    try:
        return str(BytesHeaderParser().parsebytes(message).get("Subject", ""))
    except Exception:
        return ""


async def run_try(gen: Any, form: dict[str, str]) -> str:
    """The result block (HTML) for a submitted form."""
    try:
        ip = str(ipaddress.ip_address(form.get("ip", "").strip()))
    except ValueError:
        return '<p class="error">The client IP is not an IP address.</p>'
    rcpts = [r.strip() for r in form.get("rcpts", "").replace("\n", ",").split(",") if r.strip()]
    if not rcpts or len(rcpts) > MAX_RCPTS:
        return f'<p class="error">Give 1 to {MAX_RCPTS} recipients.</p>'
    text = form.get("message", "")
    message = text.encode("utf-8", "surrogateescape") if text.strip() else None
    try:
        ex = await asyncio.wait_for(
            dry_run(
                gen,
                gen.config,
                ip=ip,
                helo=form.get("helo", "").strip(),
                mail_from=form.get("mail_from", "").strip().strip("<>"),
                rcpts=rcpts,
                message=message,
            ),
            TIMEOUT,
        )
    except TimeoutError:
        return '<p class="error">The dry run took too long.</p>'
    return _result(ex, gen.policy.rules, _subject(message) if message else "")


def _result(ex: Any, rules: Rules, subject: str) -> str:
    rows = []
    for s in ex.stages:
        syms = []
        for h in s.hits:
            rule = rules.symbols.get(h.name)
            ev = f" {{{h.evidence}}}" if h.evidence else ""
            desc = f"<br><small>{esc(rule.description)}</small>" if rule and rule.description else ""
            syms.append(f'<span class="sym">{esc(h.name)}({esc(format(h.score, "g"))}){esc(ev)}</span>{desc}')
        verdict = action_badge(s.verdict.action.label)
        if s.verdict.cause:
            verdict += f" <small>cause: {esc(s.verdict.cause)}</small>"
        rows.append(
            [
                esc(s.stage.upper()) + (f"<br><small>{esc(s.rcpt)}</small>" if s.rcpt else ""),
                "<br>".join(syms) or '<span class="meta">no symbols</span>',
                verdict,
                esc(s.reply.render() if s.reply else ""),
            ]
        )
    final = action_badge(ex.action) + (f" (would be {esc(ex.would_be)})" if ex.would_be != ex.action else "")
    notes = []
    if ex.stopped_at:
        notes.append(f"the session stops at {esc(ex.stopped_at.upper())}")
    if not ex.data_evaluated and not ex.stopped_at:
        notes.append("DATA checks not evaluated (no message given)")
    head = f"<p>Subject: <code id=try-subject>{esc(subject)}</code></p>" if subject else ""
    return (
        '<section id="try-result"><h2>Result</h2>'
        + head
        + table(["stage", "symbols", "verdict", "reply"], rows)
        + f"<p>total score <strong>{esc(format(ex.score, 'g'))}</strong> · action {final} · reply "
        + f"<code>{esc(ex.reply or '250 2.0.0 (the downstream reply: mail relayed)')}</code></p>"
        + "".join(f'<p class="meta">{n}</p>' for n in notes)
        + "</section>"
    )
