"""DMARC aggregate reports (RFC 7489 7.2 and Appendix C): build, compress, address, send.

For one UTC day, the rows recorded by :mod:`.dmarc_record` are grouped by policy domain; each
domain gets one ``feedback`` XML document (report_metadata, policy_published, one ``record``
per distinct row with its count), gzip-compressed and named
``receiver!policy-domain!begin!end.xml.gz`` (7.2.1.1). It is sent to the record's ``rua``
mailto addresses, except:

- an address outside the policy domain's organisational domain that did not authorise it
  (7.1: TXT ``<policy-domain>._report._dmarc.<rua-domain>`` starting ``v=DMARC1``);
- an address whose size limit (``mailto:a@b!10m``) the compressed report exceeds.

One sender per (day, domain) in the fleet: a store counter elects it (``dmarcsent|...``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib
import structlog

from proxy.auth.dmarc import org_domain, parse_record
from proxy.config.fields import parse_hostport
from proxy.observability import metrics
from proxy.sharing.dmarc_record import AGG, DAY, POL, rua_of
from proxy.state.base import Store

log = structlog.get_logger("spamgate.dmarc_report")
SENT = "dmarcsent|"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(slots=True)
class Report:
    domain: str
    day: int
    policy: str  # the raw DMARC record
    rows: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    report_id: str = ""
    xml: bytes = b""
    gz: bytes = b""
    filename: str = ""


def _count(value: str) -> int:
    v = value.strip()
    if v.startswith("["):  # memory / SQLite counters: [count, expiry]
        return int(json.loads(v)[0])
    return int(float(v or 0))


async def load_reports(store: Store, day: int) -> list[Report]:
    by_domain: dict[str, Report] = {}
    for name, value in await store.scan(f"{AGG}{day}|"):
        _, _, domain, row = name.split("|", 3)
        rep = by_domain.get(domain)
        if rep is None:
            rep = by_domain[domain] = Report(domain, day, await store.get(f"{POL}{day}|{domain}") or "")
        rep.rows.append((json.loads(row), _count(value)))
    return [by_domain[d] for d in sorted(by_domain)]


def _sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    e = ET.SubElement(parent, tag)
    if text is not None:
        e.text = str(text)
    return e


def build(rep: Report, org_name: str, contact: str, receiver: str) -> Report:
    begin, end = rep.day * DAY, (rep.day + 1) * DAY - 1
    digest = hashlib.sha256(f"{receiver}|{rep.domain}|{rep.day}".encode()).hexdigest()[:16]
    rep.report_id = f"{rep.day}.{digest}@{receiver}"
    root = ET.Element("feedback")
    _sub(root, "version", "1.0")
    meta = _sub(root, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", contact)
    _sub(meta, "report_id", rep.report_id)
    dr = _sub(meta, "date_range")
    _sub(dr, "begin", begin)
    _sub(dr, "end", end)
    rec = parse_record(rep.policy)
    pub = _sub(root, "policy_published")
    _sub(pub, "domain", rep.domain)
    _sub(pub, "adkim", rec.adkim if rec else "r")
    _sub(pub, "aspf", rec.aspf if rec else "r")
    _sub(pub, "p", rec.p if rec else "none")
    _sub(pub, "sp", rec.sp if rec else "none")
    _sub(pub, "pct", rec.pct if rec else 100)
    for row, count in sorted(rep.rows, key=lambda rc: (rc[0]["ip"], -rc[1])):
        r = _sub(root, "record")
        rw = _sub(r, "row")
        _sub(rw, "source_ip", row["ip"])
        _sub(rw, "count", count)
        pe = _sub(rw, "policy_evaluated")
        _sub(pe, "disposition", row["disp"])
        _sub(pe, "dkim", row["dkim"])
        _sub(pe, "spf", row["spf"])
        if row.get("reason"):
            _sub(_sub(pe, "reason"), "type", row["reason"])
        ids = _sub(r, "identifiers")
        _sub(ids, "header_from", row["hf"])
        ar = _sub(r, "auth_results")
        for d, selector, result in row["dkim_res"]:
            dk = _sub(ar, "dkim")
            _sub(dk, "domain", d)
            if selector:
                _sub(dk, "selector", selector)
            _sub(dk, "result", result)
        spf_domain, spf_result = row["spf_res"]
        sp = _sub(ar, "spf")
        _sub(sp, "domain", spf_domain or row["ef"] or row["hf"])
        _sub(sp, "scope", "mfrom")
        _sub(sp, "result", spf_result)
    rep.xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")
    rep.gz = gzip.compress(rep.xml, mtime=0)
    rep.filename = f"{receiver}!{rep.domain}!{begin}!{end}.xml.gz"
    return rep


def size_limit(uri: str) -> tuple[str, int | None]:
    """('a@b', limit in bytes or None) of 'mailto:a@b!10m'; ('', None) when not a mailto."""
    if not uri.lower().startswith("mailto:"):
        return "", None
    addr, _, limit = uri[7:].partition("!")
    if not limit:
        return addr, None
    unit = limit[-1].lower() if limit[-1].isalpha() else ""
    digits = limit[:-1] if unit else limit
    if not digits.isdigit() or unit not in _UNITS:
        return addr, None
    return addr, int(digits) * _UNITS[unit]


async def destinations(rep: Report, resolver: Any) -> tuple[list[str], list[str]]:
    """(addresses to send to, 'address: why not' for the others)."""
    ok: list[str] = []
    skipped: list[str] = []
    own = org_domain(rep.domain)
    for uri in rua_of(rep.policy):
        addr, limit = size_limit(uri)
        if not addr or "@" not in addr:
            skipped.append(f"{uri}: not a mailto address")
            continue
        rua_domain = addr.rpartition("@")[2].lower()
        if org_domain(rua_domain) != own:
            ans = await resolver.lookup(f"{rep.domain}._report._dmarc.{rua_domain}", "TXT")
            if not any(str(t).strip().lower().startswith("v=dmarc1") for t in ans.records or ()):
                skipped.append(f"{addr}: {rua_domain} did not authorise reports for {rep.domain}")
                continue
        if limit is not None and len(rep.gz) > limit:
            skipped.append(f"{addr}: report of {len(rep.gz)} bytes over its limit {limit}")
            continue
        ok.append(addr)
    return ok, skipped


def message(rep: Report, org_name: str, contact: str, to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = contact
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"Report Domain: {rep.domain} Submitter: {org_name} Report-ID: <{rep.report_id}>"
    msg["Date"] = formatdate(time.time(), usegmt=True)
    msg["Message-ID"] = make_msgid(domain=contact.rpartition("@")[2] or None)
    day = time.strftime("%Y-%m-%d", time.gmtime(rep.day * DAY))
    msg.set_content(f"DMARC aggregate report for {rep.domain}, {day} UTC.")
    msg.add_attachment(rep.gz, maintype="application", subtype="gzip", filename=rep.filename)
    return msg


async def send_reports(
    store: Store, resolver: Any, config: Any, day: int, *, force: bool = False
) -> list[str]:
    """Build and send the reports of ``day``; returns one line per report for the operator."""
    sh = config.sharing
    receiver = config.server.hostname
    org_name = sh.dmarc_org_name or receiver
    contact = sh.dmarc_contact or f"postmaster@{receiver}"
    host, port = parse_hostport(sh.dmarc_relay, "sharing.dmarc_relay")
    out = []
    for rep in await load_reports(store, day):
        build(rep, org_name, contact, receiver)
        to, skipped = await destinations(rep, resolver)
        for why in skipped:
            log.warning("dmarc_report_destination_skipped", domain=rep.domain, why=why)
        if not to:
            out.append(f"{rep.domain}: no destination ({'; '.join(skipped)})")
            continue
        lock = f"{SENT}{day}|{rep.domain}"
        if not force and await store.incr(lock, sh.dmarc_keep) > 1:
            out.append(f"{rep.domain}: already sent")
            continue
        try:
            await aiosmtplib.send(
                message(rep, org_name, contact, to), hostname=host, port=port, timeout=60, start_tls=False
            )
        except Exception as exc:
            await store.delete(lock)  # not sent: the next run tries again
            log.warning("dmarc_report_failed", domain=rep.domain, error=f"{type(exc).__name__}: {exc}")
            out.append(f"{rep.domain}: failed: {exc}")
            continue
        metrics.sharing_event("report_sent")
        log.info("dmarc_report_sent", domain=rep.domain, to=to, records=len(rep.rows), bytes=len(rep.gz))
        out.append(f"{rep.domain}: sent to {', '.join(to)} ({len(rep.rows)} records, {len(rep.gz)} bytes)")
    return out
