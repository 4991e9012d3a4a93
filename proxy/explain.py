"""``spamgate explain``: why would (or did) spamgate accept or refuse this mail?

Two modes:

- :func:`simulate` runs the real pipeline (:class:`proxy.session.pipeline.Pipeline`) and policy
  (:class:`proxy.policy.engine.Policy`) of a configuration stage by stage (connect, HELO, MAIL,
  each RCPT, DATA when a message is given) for a client address, HELO name, sender and
  recipients, against the configured DNS and store, without opening any SMTP connection and
  without sending mail. It stops where a session would stop (a connect or MAIL refusal) and
  returns an :class:`Explanation`: every symbol with score, evidence, description and remedy,
  the verdict of each stage, the total, the action and the reply a sender would get.
- :func:`find_ref` finds the log lines of a past transaction (``ref`` like ``7f3a09c1.2``) or
  connection (``7f3a09c1`` / ``7f3a09c1.0``) in a JSON log file; :func:`render_log_line` prints
  one readably.

Protocol-level limits the session enforces itself (sizes, line lengths, recipient count) are
not simulated; the output says so when it matters.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from proxy.checks.base import CheckContext, Stage
from proxy.config.schema import Config
from proxy.model import Connection, Transaction
from proxy.policy.engine import Action, Hit, Verdict
from proxy.policy.rules import Rules
from proxy.replies import Reply

EXPLAIN_REF = "explain"


@dataclass(slots=True)
class StageResult:
    stage: str
    hits: list[Hit]
    verdict: Verdict
    rcpt: str = ""
    reply: Reply | None = None  # what the client would be told when this stage refuses
    route: str = ""  # RCPT: the route and downstreams the recipient would take
    policy: str = ""  # RCPT: the recipient domain's policy


@dataclass(slots=True)
class Explanation:
    ip: str
    helo: str
    mail_from: str
    rcpts: list[str]
    stages: list[StageResult] = field(default_factory=list)
    score: float = 0.0
    action: str = "accept"
    would_be: str = "accept"
    reply: str = ""
    stopped_at: str = ""
    data_evaluated: bool = False
    mode: str = "enforce"
    notes: list[str] = field(default_factory=list)


def _normalize(message: bytes) -> bytes:
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def _merge(per_rcpt: list[list[Hit]]) -> list[Hit]:
    seen: dict[str, Hit] = {}
    for hits in per_rcpt:
        for h in hits:
            old = seen.get(h.name)
            if old is None or h.score > old.score:
                seen[h.name] = h
    return list(seen.values())


async def simulate(
    config: Config,
    *,
    ip: str,
    helo: str,
    mail_from: str,
    rcpts: list[str],
    message: bytes | None = None,
) -> Explanation:
    """Run the configured pipeline for one envelope; see the module docstring."""
    from proxy.app import build_generation, start_generation, stop_generation

    gen = build_generation(config)
    await start_generation(gen)
    try:
        return await _run(
            gen.pipeline,
            gen,
            config,
            ip=ip,
            helo=helo,
            mail_from=mail_from,
            rcpts=rcpts,
            message=message,
        )
    finally:
        await stop_generation(gen)


async def dry_run(
    gen: Any,
    config: Config,
    *,
    ip: str,
    helo: str,
    mail_from: str,
    rcpts: list[str],
    message: bytes | None = None,
) -> Explanation:
    """:func:`simulate` with a running generation (its pipeline, policy, routes and domain
    policies: the console's "try a message"): no generation is built or started."""
    return await _run(
        gen.pipeline, gen, config, ip=ip, helo=helo, mail_from=mail_from, rcpts=rcpts, message=message
    )


def describe_route(router: Any, rcpt: str) -> str:
    """The route a recipient takes and its downstreams, as `spamgate explain` shows it."""
    route = router.route_for(rcpt.rpartition("@")[2])
    if route.mx_port:
        return f"{route.name} -> mx:{route.mx_port} (the domain's MX hosts)"
    names = ", ".join(e.name for e in route.endpoints)
    extra = " (one recipient per transaction: LMTP)" if route.one_rcpt else ""
    return f"{route.name} -> {names} ({route.balance}){extra}"


async def _run(
    pipeline: Any,
    gen: Any,
    config: Config,
    *,
    ip: str,
    helo: str,
    mail_from: str,
    rcpts: list[str],
    message: bytes | None,
) -> Explanation:
    ex = Explanation(ip, helo, mail_from, rcpts, mode=config.server.mode)
    policy = gen.policy
    addr = ipaddress.ip_address(ip)
    conn = Connection(EXPLAIN_REF, addr, 0, (ip, 0))
    conn.notes["dry_run"] = True  # checks read the store but write no penalty (spamtrap, recipient cache)

    def ctx(stage: Stage, hits: list[Hit], txn: Transaction | None = None, **kw: Any) -> CheckContext:
        return CheckContext(
            stage,
            conn,
            txn,
            fired=frozenset(h.name for h in hits),
            score=sum(h.score for h in hits),
            **kw,
        )

    def refusal(v: Verdict) -> Reply | None:
        if v.action >= Action.TEMPFAIL and v.reply is not None:
            return v.reply.with_ref(EXPLAIN_REF)
        return None

    def finish(hits: list[Hit], verdict: Verdict, stopped: str = "") -> Explanation:
        ex.score = round(sum(h.score for h in hits), 3)
        ex.action = verdict.action.label
        ex.would_be = verdict.would_be.label
        r = refusal(verdict)
        ex.reply = r.render() if r else ""
        ex.stopped_at = stopped
        return ex

    # connect
    conn.connect_hits = await pipeline.run(Stage.CONNECT, CheckContext(Stage.CONNECT, conn))
    v = policy.decide(conn.connect_hits, Stage.CONNECT)
    ex.stages.append(StageResult("connect", conn.connect_hits, v, reply=refusal(v)))
    if refusal(v):
        return finish(conn.hits, v, "connect")
    # HELO
    conn.helo, conn.esmtp = helo, True
    conn.helo_hits = await pipeline.run(Stage.HELO, ctx(Stage.HELO, conn.connect_hits))
    v = policy.decide(conn.hits, Stage.HELO)
    ex.stages.append(StageResult("helo", conn.helo_hits, v, reply=refusal(v)))
    if refusal(v):
        return finish(conn.hits, v, "helo")
    # MAIL
    txn = Transaction(conn.next_ref(), mail_from, {})
    txn.hits = await pipeline.run(Stage.MAIL, ctx(Stage.MAIL, conn.hits, txn))
    v = policy.decide(conn.hits + txn.hits, Stage.MAIL)
    ex.stages.append(StageResult("mail", txn.hits, v, reply=refusal(v)))
    if refusal(v):
        return finish(conn.hits + txn.hits, v, "mail")
    # RCPT, each recipient on its own
    accepted: list[list[Hit]] = []
    last = v
    txn_policy: Any = None
    txn_route: Any = None
    for rcpt in rcpts:
        base = conn.hits + txn.hits
        dpol = gen.domain_policies.for_rcpt(rcpt)
        hits = await pipeline.run(Stage.RCPT, ctx(Stage.RCPT, base, txn, rcpt=rcpt))
        if not dpol.greylist:
            hits = [replace(h, observe=True) if h.name == "GREYLISTED" else h for h in hits]
        rv = dpol.policy.decide(base + hits, Stage.RCPT)
        route = describe_route(gen.router, rcpt)
        result = StageResult("rcpt", hits, rv, rcpt, refusal(rv), route, dpol.describe())
        ex.stages.append(result)
        if not refusal(rv):
            route_of = gen.router.route_for(rcpt.rpartition("@")[2])
            if accepted and (dpol is not txn_policy or route_of is not txn_route or route_of.one_rcpt):
                ex.notes.append(f"<{rcpt}> would get 452 4.5.3: another route, policy or LMTP transaction")
                continue
            accepted.append(hits)
            last = rv
            txn_policy, txn_route = dpol, route_of
    rcpt_hits = _merge(accepted)
    if not accepted:
        # Every recipient refused: the client is told so at RCPT; report the first refusal.
        first = next(s for s in ex.stages if s.stage == "rcpt")
        return finish(conn.hits + txn.hits + first.hits, first.verdict, "rcpt")
    hits = conn.hits + txn.hits + rcpt_hits
    if message is None:
        return finish(hits, last)
    # DATA
    ex.data_evaluated = True
    data_hits = await pipeline.run(Stage.DATA, ctx(Stage.DATA, hits, txn, message=_normalize(message)))
    hits = hits + data_hits
    v = (txn_policy or gen.domain_policies.default).policy.decide(hits, Stage.DATA)
    ex.stages.append(StageResult("data", data_hits, v, reply=refusal(v)))
    return finish(hits, v, "data" if refusal(v) else "")


# -- output -------------------------------------------------------------------------------------


def _hit_dict(h: Hit, rules: Rules) -> dict[str, Any]:
    rule = rules.symbols.get(h.name)
    return {
        "symbol": h.name,
        "score": h.score,
        "evidence": h.evidence,
        "check": h.check,
        "observe": h.observe,
        "description": rule.description if rule else "",
        "remedy": rule.remedy if rule else "",
    }


def to_dict(ex: Explanation, rules: Rules) -> dict[str, Any]:
    return {
        "client": {"ip": ex.ip, "helo": ex.helo},
        "mail_from": ex.mail_from,
        "rcpts": ex.rcpts,
        "mode": ex.mode,
        "stages": [
            {
                "stage": s.stage,
                **({"rcpt": s.rcpt} if s.rcpt else {}),
                "symbols": [_hit_dict(h, rules) for h in s.hits],
                "action": s.verdict.action.label,
                "cause": s.verdict.cause,
                "reply": s.reply.render() if s.reply else None,
                **({"route": s.route, "policy": s.policy} if s.rcpt else {}),
            }
            for s in ex.stages
        ],
        "score": ex.score,
        "action": ex.action,
        "would_be": ex.would_be,
        "reply": ex.reply or None,
        "stopped_at": ex.stopped_at or None,
        "data_evaluated": ex.data_evaluated,
        "notes": ex.notes,
    }


def render_text(ex: Explanation, rules: Rules) -> str:
    out = [
        f"client {ex.ip} helo {ex.helo!r} from <{ex.mail_from}> to "
        + ", ".join(f"<{r}>" for r in ex.rcpts)
        + (" (observe mode)" if ex.mode == "observe" else ""),
        "",
    ]
    for s in ex.stages:
        title = s.stage.upper() + (f" <{s.rcpt}>" if s.rcpt else "")
        verdict = s.verdict.action.label + (f" (cause: {s.verdict.cause})" if s.verdict.cause else "")
        out.append(f"{title}: {verdict}")
        if s.route:
            out.append(f"  route  {s.route}")
            out.append(f"  policy {s.policy}")
        if not s.hits:
            out.append("  (no symbols)")
        for h in s.hits:
            d = _hit_dict(h, rules)
            ev = f" {{{h.evidence}}}" if h.evidence else ""
            flag = " [observe]" if h.observe else ""
            out.append(f"  {h.name:<24} {h.score:>7g}{ev}{flag}")
            if d["description"]:
                out.append(f"      {d['description']}")
            if d["remedy"] and (h.score > 0 or s.verdict.cause == h.name):
                out.append(f"      fix: {d['remedy']}")
        if s.reply is not None:
            out.append(f"  -> {s.reply.render()}")
        out.append("")
    out.append(f"total score: {ex.score:g}")
    action = ex.action + (f" (would be {ex.would_be})" if ex.would_be != ex.action else "")
    out.append(f"action: {action}")
    if ex.stopped_at:
        out.append(f"the session stops at {ex.stopped_at.upper()}")
    out.append(f"reply: {ex.reply or '250 2.0.0 (the downstream reply: mail relayed)'}")
    if not ex.data_evaluated and not ex.stopped_at:
        out.append("note: DATA checks not evaluated (give --message FILE)")
    out += [f"note: {n}" for n in ex.notes]
    return "\n".join(out) + "\n"


# -- past transactions from the log -----------------------------------------------------------------


def find_ref(log_file: str | Path, ref: str) -> list[dict[str, Any]]:
    """Log lines whose ``ref`` is ``ref``; a connection id (``abcd1234`` or ``abcd1234.0``)
    matches the connection line and all its transactions."""
    conn_id = ref[:-2] if ref.endswith(".0") else ref if "." not in ref else ""
    found: list[dict[str, Any]] = []
    with open(log_file, "rb") as f:
        for raw in f:
            if ref.encode() not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            r = str(line.get("ref", ""))
            if r == ref or (conn_id and r.split(".", 1)[0] == conn_id):
                found.append(line)
    return found


def render_log_line(line: dict[str, Any], rules: Rules) -> str:
    event = line.get("event", "?")
    out = [f"{event} {line.get('ref', '')} at {line.get('ts', '?')}"]
    order = [
        "client_ip",
        "client_port",
        "client_name",
        "proxy_peer",
        "helo",
        "tls",
        "mail_from",
        "outcome",
        "stage",
        "action",
        "would_be",
        "mode",
        "score",
        "reply",
        "downstream_reply",
        "size",
        "transactions",
        "errors",
        "closed",
        "elapsed_ms",
    ]
    for key in order:
        if line.get(key) not in (None, "", []):
            out.append(f"  {key:<17} {line[key]}")
    for r in line.get("rcpts") or []:
        out.append(f"  rcpt              <{r.get('to')}> -> {r.get('reply')}")
    if line.get("timings_ms"):
        out.append("  timings_ms        " + ", ".join(f"{k}={v}" for k, v in line["timings_ms"].items()))
    symbols = line.get("symbols") or []
    if symbols:
        out.append("  symbols:")
    for text in symbols:
        name = text.lstrip("~").split("(", 1)[0]
        rule = rules.symbols.get(name)
        out.append(f"    {text}")
        if rule is not None and rule.description:
            out.append(f"        {rule.description}")
    return "\n".join(out) + "\n"
