"""Operator commands on what the fleet learnt: ``spamgate state list|clear``, ``spamgate feed export``.

spamgate state list [--kind penalty|recipients|all] [--json]
    the penalty box (spamtrap hits, dictionary attacks, reputation penalties) and the cached
    unknown recipients, each with its reason and expiry (UTC), from the configured store
spamgate state clear penalty IP     release an address from the penalty boxes
spamgate state clear recipient ADDR forget a cached unknown recipient
spamgate feed export [--format zone|text|json] [--output FILE]
    what the fleet knows, as an rbldnsd ip4set zone (default), plain text or JSON; with
    --output (or [sharing] zone_file for the zone) the file is replaced atomically
spamgate dmarc report [--day yesterday|today|YYYY-MM-DD] [--output DIR] [--force]
    the DMARC aggregate reports of one UTC day: sent through [sharing] dmarc_relay to each
    domain's rua (once per day and domain unless --force), or written as .xml.gz files
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import sys
import time
from typing import Any

from proxy.config.fields import ConfigError
from proxy.config.loader import load
from proxy.sharing.collect import collect
from proxy.sharing.formats import render_json, render_text, render_zone, utc
from proxy.sharing.service import write_atomic
from proxy.state import build_store
from proxy.state.base import StoreError
from proxy.state.penalty import PREFIX as PBOX
from proxy.state.penalty import Penalty

RCPT_PREFIX = "rcptbad|"  # proxy.checks.rcpt.recipient_cache
REP_BOX = "box|"  # proxy.checks.connect.reputation's own penalty box


async def _entries(store: Any, kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if kind in ("penalty", "all"):
        for prefix, box in ((PBOX, "penalty_box"), (REP_BOX, "reputation")):
            for name, value in await store.scan(prefix):
                p = Penalty.parse(name[len(prefix) :], value)
                reason = p.reason if p.until else "REPUTATION_PENALTY"
                out.append({"kind": box, "key": p.ip, "reason": reason, "until": p.until})
    if kind in ("recipients", "all"):
        for name, value in await store.scan(RCPT_PREFIX):
            try:
                d = json.loads(value)
                until = float(d.get("until", 0))
            except (ValueError, TypeError, AttributeError):
                until = 0.0
            addr = name[len(RCPT_PREFIX) :]
            out.append({"kind": "unknown_recipient", "key": addr, "reason": "550 5.1.1", "until": until})
    return out


def cmd_state(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        store = build_store(config.store)
        try:
            if args.action == "list":
                rows = await _entries(store, args.kind)
                if args.json:
                    sys.stdout.write(json.dumps(rows, indent=1) + "\n")
                else:
                    for r in rows:
                        until = utc(r["until"]) if r["until"] else "-"
                        print(f"{r['kind']:<18} {r['key']:<40} {r['reason']}  until {until}")
                    print(f"{len(rows)} entries", file=sys.stderr)
                return 0
            what, key = args.what, args.key.lower()
            names = [PBOX + key, REP_BOX + key] if what == "penalty" else [RCPT_PREFIX + key]
            found = [n for n in names if await store.get(n) is not None]
            for n in names:
                await store.delete(n)
            print(f"{'cleared' if found else 'not found'}: {what} {args.key}")
            return 0 if found else 1
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_feed(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def run() -> list[Any]:
        store = build_store(config.store)
        try:
            return await collect(store, config, config.sharing.max_entries)
        finally:
            await store.close()

    try:
        entries = asyncio.run(run())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    if args.format == "json":
        text = render_json(entries, now)
    elif args.format == "text":
        text = render_text(entries, now)
    else:
        text = render_zone(entries, now, config.sharing.zone_ttl)
    output = args.output or (config.sharing.zone_file if args.format == "zone" else "")
    if output:
        write_atomic(output, text)
        print(f"{len(entries)} entries written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def add_parsers(sub: Any) -> None:
    st = sub.add_parser("state", help="list or clear penalty-box and recipient-cache entries")
    acts = st.add_subparsers(dest="action", required=True)
    ls = acts.add_parser("list", help="entries with reason and expiry")
    ls.add_argument("--config")
    ls.add_argument("--kind", choices=("penalty", "recipients", "all"), default="all")
    ls.add_argument("--json", action="store_true")
    cl = acts.add_parser("clear", help="remove one entry")
    cl.add_argument("--config")
    cl.add_argument("what", choices=("penalty", "recipient"))
    cl.add_argument("key", help="the IP address (penalty) or the recipient address")
    st.set_defaults(func=cmd_state)
    fd = sub.add_parser("feed", help="export what the fleet knows (rbldnsd zone, text, JSON)")
    fd.add_argument("--config")
    fd.add_argument("action", choices=("export",))
    fd.add_argument("--format", choices=("zone", "text", "json"), default="zone")
    fd.add_argument(
        "--output", help="file to replace atomically (default: stdout; zone: [sharing] zone_file)"
    )
    fd.set_defaults(func=cmd_feed)
    add_dmarc_parser(sub)


def _day(text: str) -> int:
    now = int(time.time() // 86400)
    if text == "today":
        return now
    if text == "yesterday":
        return now - 1
    return int(calendar.timegm(time.strptime(text, "%Y-%m-%d")) // 86400)


def cmd_dmarc(args: argparse.Namespace) -> int:
    from proxy.dns import build_resolver
    from proxy.sharing.dmarc_report import build, load_reports, send_reports

    try:
        config = load(args.config)
        day = _day(args.day)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.output and not config.sharing.dmarc_relay:
        print("error: set [sharing] dmarc_relay to send, or give --output DIR", file=sys.stderr)
        return 2

    async def run() -> list[str]:
        store = build_store(config.store)
        resolver = build_resolver(config)
        resolver.bind(asyncio.get_running_loop())
        try:
            if not args.output:
                return await send_reports(store, resolver, config, day, force=args.force)
            out = []
            receiver = config.server.hostname
            org = config.sharing.dmarc_org_name or receiver
            contact = config.sharing.dmarc_contact or f"postmaster@{receiver}"
            for rep in await load_reports(store, day):
                build(rep, org, contact, receiver)
                write_bytes(f"{args.output}/{rep.filename}", rep.gz)
                out.append(f"{rep.domain}: {args.output}/{rep.filename} ({len(rep.rows)} records)")
            return out
        finally:
            await resolver.close()
            await store.close()

    try:
        lines = asyncio.run(run())
    except (StoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines) if lines else "no DMARC evaluations recorded for that day")
    return 1 if any(": failed:" in line for line in lines) else 0


def write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def add_dmarc_parser(sub: Any) -> None:
    dm = sub.add_parser("dmarc", help="DMARC aggregate reports (RFC 7489 7.2)")
    dm.add_argument("--config")
    dm.add_argument("action", choices=("report",))
    dm.add_argument("--day", default="yesterday", help="yesterday (default), today or YYYY-MM-DD (UTC)")
    dm.add_argument("--output", help="write the .xml.gz reports to this directory instead of sending")
    dm.add_argument("--force", action="store_true", help="send even if the fleet sent it already")
    dm.set_defaults(func=cmd_dmarc)
