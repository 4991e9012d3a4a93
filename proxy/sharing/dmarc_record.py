"""Recording DMARC evaluations for aggregate reports (RFC 7489 7.2), with ``sharing.dmarc_record``.

After each transaction (``services.on_transaction``) whose DMARC result is pass or fail, the
evaluation is counted in the store under one key per UTC day, policy domain and distinct row:
``dmarcagg|<day>|<policy domain>|<row JSON>`` (an ``incr`` counter, kept ``dmarc_keep``). The
row holds the source IP, header From and envelope From domains, the disposition applied (and
why it differs from the policy: ``forwarded``, ``local_policy``, ``sampled_out``), the aligned
DKIM and SPF verdicts, and the raw DKIM and SPF results. The policy record itself is kept
beside it (``dmarcpol|<day>|<domain>``). Domains without ``rua`` are not recorded.
"""

from __future__ import annotations

import json
import time
from typing import Any

from proxy.auth.dmarc import DmarcResult, aligned, discover
from proxy.dns.resolver import DnsResult
from proxy.state.base import Store
from proxy.state.util import Background

AGG = "dmarcagg|"
POL = "dmarcpol|"
DAY = 86400
SPF_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}
DKIM_RESULTS = {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}


def day_of(ts: float) -> int:
    return int(ts // DAY)


def rua_of(raw: str) -> list[str]:
    """The ``rua`` URIs of a DMARC record ('mailto:a@b!10m', ...)."""
    for part in raw.split(";"):
        k, _, v = part.partition("=")
        if k.strip().lower() == "rua":
            return [u.strip() for u in v.split(",") if u.strip()]
    return []


def row_of(conn: Any, txn: Any, res: DmarcResult, adkim: str, aspf: str) -> dict[str, Any]:
    frm = res.from_domain
    spf = txn.notes.get("spf")
    spf_result, spf_domain = (spf[0], spf[1]) if isinstance(spf, tuple) and len(spf) > 1 else ("none", "")
    spf_result = spf_result if spf_result in SPF_RESULTS else "none"
    sigs = txn.notes.get("dkim")
    sigs = sigs if isinstance(sigs, list) else []
    dkim = [[s.domain, s.selector, s.result if s.result in DKIM_RESULTS else "none"] for s in sigs]
    dkim_ok = any(s.result == "pass" and aligned(s.domain, frm, adkim) for s in sigs)
    spf_ok = spf_result == "pass" and aligned(spf_domain, frm, aspf)
    names = {h.name: h for h in txn.notes.get("hits", txn.hits)}
    disposition, reason = res.disposition, ""
    if res.result == "pass":
        disposition = "none"
    elif "DMARC_FORWARDED" in names:
        disposition, reason = "none", "forwarded"
    else:
        enforced = next((h for n, h in names.items() if n in ("DMARC_REJECT", "DMARC_QUARANTINE")), None)
        if enforced is not None and enforced.observe:
            disposition, reason = "none", "local_policy"
        elif res.policy in ("reject", "quarantine") and res.disposition == "none":
            reason = "sampled_out"
    return {
        "ip": conn.ip_str,
        "hf": frm,
        "ef": txn.mail_from.rpartition("@")[2].lower() if txn.mail_from else "",
        "disp": disposition,
        "reason": reason,
        "dkim": "pass" if dkim_ok else "fail",
        "spf": "pass" if spf_ok else "fail",
        "dkim_res": dkim,
        "spf_res": [spf_domain, spf_result],
    }


class DmarcRecorder:
    def __init__(self, store: Store, resolver: Any, keep: float) -> None:
        self.store = store
        self.resolver = resolver
        self.keep = keep
        self.bg = Background()

    def on_transaction(self, conn: Any, txn: Any, outcome: str) -> None:
        res = txn.notes.get("dmarc")
        if isinstance(res, DmarcResult) and res.result in ("pass", "fail") and self.resolver is not None:
            self.bg.spawn(self.record(conn, txn, res))

    async def record(self, conn: Any, txn: Any, res: DmarcResult) -> None:
        async def txt(name: str) -> DnsResult:
            return await self.resolver.lookup(name, "TXT")  # type: ignore[no-any-return]

        found = await discover(res.from_domain, txt)  # answered from the resolver's cache
        if found.status != "found" or found.record is None or not rua_of(found.record.raw):
            return
        rec = found.record
        row = row_of(conn, txn, res, rec.adkim, rec.aspf)
        day = day_of(time.time())
        key = f"{AGG}{day}|{found.at}|{json.dumps(row, sort_keys=True, separators=(',', ':'))}"
        await self.store.incr(key, self.keep)
        await self.store.set(f"{POL}{day}|{found.at}", rec.raw, self.keep)
