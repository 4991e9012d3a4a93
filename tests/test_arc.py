"""ARC at DATA end to end, and the trusted-sealer override of a DMARC failure.

The forwarder fwd.test receives alice@sender.test's DKIM-signed message, changes the body
(a list footer: the DKIM signature breaks, DMARC fails), seals it with ARC and relays it
from 127.0.0.9 with its own envelope sender (SPF unaligned).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxy.auth.arc import validate
from proxy.dns.resolver import DnsResult
from tests.harness.clients import message
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate, symbols
from tests.harness.mail_auth import DkimKey, LoopResolver, auth_zone, send_raw
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


@pytest.fixture(scope="module")
def keys() -> dict[str, DkimKey]:
    return {"sender": DkimKey("sender.test"), "fwd": DkimKey("fwd.test", selector="arc")}


def forwarded(keys: dict[str, DkimKey], tamper: bool = False) -> bytes:
    msg = keys["sender"].sign(message(frm="alice@sender.test"))
    msg = msg.replace(b"Hello.\r\n", b"Hello.\r\n-- \r\nlist footer\r\n")
    sealed = keys["fwd"].arc_seal(msg, "mx.fwd.test", "mx.fwd.test; dkim=pass header.d=sender.test")
    return sealed.replace(b"Subject: test", b"Subject: changed") if tamper else sealed


def gate(
    factory: Factory, sink: Sink, dns: DnsTestServer, keys: dict[str, DkimKey], **kw: object
) -> Spamgate:
    auth_zone(dns)
    keys["sender"].publish(dns)
    keys["fwd"].publish(dns)
    dns.add("fwd.test", "MX", "10 mail.sender.test.")
    dns.add("fwd.test", "TXT", "v=spf1 ip4:127.0.0.0/24 -all")
    return start_gate(factory, sink, dns, **kw)  # type: ignore[arg-type]


def syms(sg: Spamgate, prefix: str) -> dict[str, str]:
    line = sg.wait_log("transaction")[-1]
    return {k: v[1] for k, v in symbols(line).items() if k.startswith(prefix)}


def test_arc_validate_temperror(dns_server: DnsTestServer, keys: dict[str, DkimKey]) -> None:
    """A sealer key lookup that times out is temperror, not fail."""
    keys["sender"].publish(dns_server)
    dns_server.drop("fwd.test")
    with LoopResolver(dns_server.address, timeout=0.1) as lr:
        res = validate(forwarded(keys), lambda n: lr.lookup(n, "TXT"))
    assert res.result == "temperror"


def test_arc_pass_without_trust_does_not_override_dmarc(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(spamgate_factory, sink, dns_server, keys)
    r = send_raw(sg.port, forwarded(keys), mail_from="list@fwd.test")
    assert r["error"] == 550
    line = sg.wait_log("transaction")[-1]
    got = {k: v[1] for k, v in symbols(line).items()}
    assert got["ARC_PASS"] == "fwd.test:i=1"
    assert "DMARC_REJECT" in got
    assert got["DKIM_FAIL"].startswith("sender.test(")


def test_arc_trusted_sealer_overrides_dmarc(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"checks": {"dmarc": {"trusted_arc_sealers": ["fwd.test"]}}},
    )
    r = send_raw(sg.port, forwarded(keys), mail_from="list@fwd.test")
    assert r.get("ok"), r
    assert syms(sg, "DMARC_") == {"DMARC_FORWARDED": "sender.test:p=reject:arc:fwd.test"}
    assert b"arc=pass (i=1 sealer fwd.test)" in sink.messages[-1].data


def test_arc_broken_chain_is_not_trusted(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    """Changed after sealing: ARC_FAIL, and a trusted sealer's name does not save it."""
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"checks": {"dmarc": {"trusted_arc_sealers": ["fwd.test"]}}},
    )
    r = send_raw(sg.port, forwarded(keys, tamper=True), mail_from="list@fwd.test")
    assert r["error"] == 550
    assert list(syms(sg, "ARC_")) == ["ARC_FAIL"]


def test_arc_none_and_fail_under_enforcing_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"checks": {"dmarc": {"enabled": False}}},
        site_rules='[symbols.ARC_FAIL]\naction = "reject"\nreply = "550 5.7.29 ARC validation failure"\n',
    )
    assert send_raw(sg.port, keys["sender"].sign(message(frm="alice@sender.test"))).get("ok")
    assert syms(sg, "ARC_") == {"ARC_NONE": ""}
    r = send_raw(sg.port, forwarded(keys, tamper=True), mail_from="list@fwd.test")
    assert r["error"] == 550
    assert "5.7.29" in r["reply"]


def test_arc_two_hops_names_latest_sealer(dns_server: DnsTestServer, keys: dict[str, DkimKey]) -> None:
    """Two forwarders: the chain validates and the sealer is the latest one (i=2)."""
    second = DkimKey("relay2.test", selector="arc2").publish(dns_server)
    keys["sender"].publish(dns_server)
    keys["fwd"].publish(dns_server)
    twice = second.arc_seal(forwarded(keys), "mx.relay2.test", "mx.relay2.test; arc=pass")
    with LoopResolver(dns_server.address) as lr:
        res = validate(twice, lambda n: lr.lookup(n, "TXT"))
        broken = validate(twice.replace(b"list footer", b"list fOoter"), lambda n: lr.lookup(n, "TXT"))
    assert (res.result, res.sealer, res.instance) == ("pass", "relay2.test", 2)
    assert broken.result == "fail"


# --- bounded chains ---------------------------------------------------------------------------


def long_chain(keys: dict[str, DkimKey], hops: int) -> bytes:
    """The forwarded message sealed again by ``hops - 1`` more forwarders (same key)."""
    msg = forwarded(keys)
    for i in range(2, hops + 1):
        msg = keys["fwd"].arc_seal(msg, f"mx{i}.fwd.test", f"mx{i}.fwd.test; arc=pass")
    return msg


def test_count_sets_reads_the_header_only() -> None:
    """The chain length comes from the fields and their i= tags; a forged high instance counts."""
    from proxy.auth.arc import count_sets, too_long

    assert count_sets(message()) == 0
    forged = b"ARC-Seal: i=1000; a=rsa-sha256; cv=none; d=x.test; s=s; b=AAAA\r\n" + message()
    assert count_sets(forged) == 1000
    refused = too_long(forged, 10)
    assert refused is not None
    assert (refused.result, refused.too_long, refused.instance) == ("fail", True, 1000)
    assert too_long(forged, 1000) is None


def test_validate_refuses_a_long_chain_without_lookups(keys: dict[str, DkimKey]) -> None:
    """validate() of a chain longer than max_sets never asks for a key."""
    asked: list[str] = []

    def txt(name: str) -> DnsResult:
        asked.append(name)
        return DnsResult("error")

    res = validate(long_chain(keys, 4), txt, max_sets=3)
    assert (res.result, res.too_long, res.instance) == ("fail", True, 4)
    assert asked == []


def test_arc_chain_longer_than_max_sets_is_refused(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    """A 6-set chain with [checks.arc] max_sets = 5: ARC_TOO_LONG{6}, no ARC key is looked up,
    and the chain cannot vouch for the message (DMARC still rejects it, even from a trusted
    sealer); one set fewer is verified and passes."""
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"checks": {"arc": {"max_sets": 5}, "dmarc": {"trusted_arc_sealers": ["fwd.test"]}}},
    )
    r = send_raw(sg.port, long_chain(keys, 6), mail_from="list@fwd.test")
    assert r.get("error") == 550, r
    assert syms(sg, "ARC_") == {"ARC_TOO_LONG": "6"}
    assert dns_server.count(keys["fwd"].name) == 0
    r = send_raw(sg.port, long_chain(keys, 5), mail_from="list@fwd.test")
    assert r.get("ok"), r
    assert syms(sg, "ARC_") == {"ARC_PASS": "fwd.test:i=5"}
    assert dns_server.count(keys["fwd"].name) >= 1
