"""DMARC: record parsing, alignment and pct (unit), and the policy end to end.

Zone (``auth_zone``): sender.test p=reject with SPF for the client; other.test SPF pass but
unaligned; quar.test p=quarantine; mon.test p=none; sub.sender.test inherits sender.test's
sp=; slow.test's _dmarc lookup is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from proxy.auth.dmarc import Discovery, aligned, discover, evaluate, from_domain, org_domain, parse_record
from proxy.dns.resolver import DnsResult
from tests.harness.clients import message
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate, symbols
from tests.harness.mail_auth import DkimKey, assert_outcome, auth_zone, send_raw, send_within
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]

# --- unit -------------------------------------------------------------------------------------


def test_parse_record() -> None:
    r = parse_record("v=DMARC1; p=reject; sp=none; adkim=s; aspf=r; pct=20; rua=mailto:x@y")
    assert r is not None
    assert (r.p, r.sp, r.adkim, r.aspf, r.pct) == ("reject", "none", "s", "r", 20)
    assert parse_record("p=reject; v=DMARC1") is None  # v= must come first
    assert parse_record("v=spf1 -all") is None
    bad = parse_record("v=DMARC1; p=bogus; rua=mailto:x@y")
    assert bad is not None
    assert (bad.p, bad.sp) == ("none", "none")
    assert parse_record("v=DMARC1; p=quarantine").sp == "quarantine"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("a", "f", "mode", "want"),
    [
        ("sender.test", "sender.test", "s", True),
        ("mail.example.com", "example.com", "r", True),
        ("mail.example.com", "example.com", "s", False),
        ("example.co.uk", "co.uk", "r", False),  # a public suffix never aligns
        ("a.example.co.uk", "b.example.co.uk", "r", True),
        ("evil.co.uk", "example.co.uk", "r", False),
        ("", "example.com", "r", False),
    ],
)
def test_alignment(a: str, f: str, mode: str, want: bool) -> None:
    assert aligned(a, f, mode) is want


def test_org_domain_uses_psl() -> None:
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert org_domain("co.uk") is None


def test_from_domain() -> None:
    assert from_domain(message(frm="Alice <alice@Sender.Test>")) == ("sender.test", "")
    folded = b"From: Alice\r\n <alice@sender.test>\r\nTo: b@c\r\n\r\nx"
    assert from_domain(folded) == ("sender.test", "")
    assert from_domain(b"To: b@c\r\n\r\nx") == ("", "no-from")
    assert from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\nx") == ("", "multiple-from")
    assert from_domain(b"From: a@x.test, b@y.test\r\n\r\nx") == ("", "multiple-from-domains")
    idn = "From: a@bücher.example\r\n\r\nx".encode()
    assert from_domain(idn) == ("xn--bcher-kva.example", "")


def test_evaluate_pct_and_sp() -> None:
    rec = parse_record("v=DMARC1; p=reject; sp=quarantine; pct=50")
    at_org = Discovery("found", rec, "example.com")
    sub = evaluate("sub.example.com", at_org, ("fail", "sub.example.com"), [], sample=lambda: 0.1)
    assert (sub.result, sub.policy, sub.disposition) == ("fail", "quarantine", "quarantine")
    out = evaluate("example.com", at_org, None, [], sample=lambda: 0.9)  # outside the 50% sample
    assert (out.policy, out.disposition) == ("reject", "quarantine")
    ok = evaluate("example.com", at_org, None, [("pass", "other.test"), ("pass", "mail.example.com")])
    assert (ok.result, ok.aligned_by) == ("pass", "dkim:mail.example.com")


REJECT = Discovery("found", parse_record("v=DMARC1; p=reject"), "example.com")


@pytest.mark.parametrize(
    ("spf", "dkim", "want"),
    [
        # an aligned pass wins whatever else is unknown
        (("temperror", "example.com"), [("pass", "example.com")], "pass"),
        (("pass", "example.com"), [("temperror", "example.com")], "pass"),
        (("missing", "example.com"), [("pass", "mail.example.com")], "pass"),
        # both aligned identities known and not passing: fail
        (("fail", "example.com"), [("fail", "example.com")], "fail"),
        (("none", "example.com"), [], "fail"),
        (("permerror", "example.com"), [("permerror", "example.com")], "fail"),
        # an aligned identity unknown: temperror, never fail
        (("temperror", "example.com"), [], "temperror"),
        (("temperror", "bounce.example.com"), [("fail", "example.com")], "temperror"),
        (("missing", "example.com"), [], "temperror"),
        (("fail", "example.com"), [("temperror", "example.com")], "temperror"),
        (("pass", "other.test"), [("temperror", "example.com")], "temperror"),
        # an unknown identity that is not aligned could not have passed: still a fail
        (("temperror", "other.test"), [], "fail"),
        (("missing", "other.test"), [("fail", "example.com")], "fail"),
        (("fail", "example.com"), [("temperror", "other.test")], "fail"),
        (None, [], "fail"),
    ],
)
def test_evaluate_unknown_identities(
    spf: tuple[str, str] | None, dkim: list[tuple[str, str]], want: str
) -> None:
    """DMARC fails only when every aligned identity has a definite result: an aligned SPF or
    DKIM temperror, or an SPF result that is missing (check off, timed out), is a temperror
    with the policy kept but no disposition; unknown unaligned identities do not matter."""
    res = evaluate("example.com", REJECT, spf, dkim)
    assert res.result == want, res
    if want == "temperror":
        assert (res.policy, res.disposition) == ("reject", "none")
        assert res.unknown
    if want == "fail":
        assert res.disposition == "reject"


def test_discover_walks_to_org_domain_and_ignores_other_txt() -> None:
    zone = {
        "_dmarc.example.com": DnsResult("ok", ("some other text", "v=DMARC1; p=reject")),
        "_dmarc.dup.com": DnsResult("ok", ("v=DMARC1; p=reject", "v=DMARC1; p=none")),
        "_dmarc.slow.com": DnsResult("timeout"),
    }

    async def txt(name: str) -> DnsResult:
        return zone.get(name, DnsResult("nxdomain"))

    found = asyncio.run(discover("a.b.example.com", txt))
    assert (found.status, found.at) == ("found", "example.com")
    assert asyncio.run(discover("dup.com", txt)).status == "none"  # two records: none
    assert asyncio.run(discover("x.slow.com", txt)).status == "temperror"


# --- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, DkimKey]:
    return {"sender": DkimKey("sender.test"), "esp": DkimKey("esp.test", algo="ed25519")}


def zone(dns: DnsTestServer, keys: dict[str, DkimKey]) -> None:
    auth_zone(dns)
    keys["sender"].publish(dns)
    keys["esp"].publish(dns)
    dns.add("_dmarc.quar.test", "TXT", "v=DMARC1; p=quarantine")
    dns.add("_dmarc.mon.test", "TXT", "v=DMARC1; p=none")
    for name in ("quar.test", "mon.test", "slow.test"):
        dns.add(name, "MX", "10 mail.sender.test.")
    dns.drop("_dmarc.slow.test")


def gate(
    factory: Factory, sink: Sink, dns: DnsTestServer, keys: dict[str, DkimKey], **kw: object
) -> Spamgate:
    zone(dns, keys)
    return start_gate(factory, sink, dns, **kw)  # type: ignore[arg-type]


def dmarc_syms(sg: Spamgate, count: int = 1) -> dict[str, str]:
    line = sg.wait_log("transaction", count=count)[-1]
    return {k: v[1] for k, v in symbols(line).items() if k.startswith("DMARC_")}


@pytest.mark.parametrize(
    ("frm", "mail_from", "sign", "want"),
    [
        # DKIM aligned (the SPF domain other.test is not)
        ("alice@sender.test", "x@other.test", "sender", {"DMARC_PASS": "sender.test:dkim:sender.test"}),
        # SPF relaxed-aligned through a subdomain, no DKIM
        (
            "alice@sender.test",
            "x@bounce.sender.test",
            "",
            {"DMARC_PASS": "sender.test:spf:bounce.sender.test"},
        ),
        # an unaligned ESP signature first, the aligned one second: every signature counts
        ("alice@sender.test", "x@other.test", "sender+esp", {"DMARC_PASS": "sender.test:dkim:sender.test"}),
        ("alice@mon.test", "x@other.test", "", {"DMARC_FAIL": "mon.test:p=none"}),
        ("alice@nopolicy.test", "x@other.test", "", {"DMARC_NONE": "nopolicy.test"}),
    ],
)
def test_dmarc_delivered(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    keys: dict[str, DkimKey],
    frm: str,
    mail_from: str,
    sign: str,
    want: dict[str, str],
) -> None:
    sg = gate(spamgate_factory, sink, dns_server, keys)
    msg = message(frm=frm)
    if "sender" in sign:
        msg = keys["sender"].sign(msg)
    if "esp" in sign:
        msg = keys["esp"].sign(msg)
    assert send_raw(sg.port, msg, mail_from=mail_from).get("ok")
    assert dmarc_syms(sg) == want


def test_dmarc_reject(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    """p=reject, nothing aligned (a valid but foreign DKIM signature): 550 5.7.1."""
    sg = gate(spamgate_factory, sink, dns_server, keys)
    r = send_raw(sg.port, keys["esp"].sign(message(frm="alice@sender.test")), mail_from="x@other.test")
    assert r["error"] == 550
    assert r["reply"].startswith("5.7.1")
    assert "DMARC" in r["reply"]
    assert dmarc_syms(sg) == {"DMARC_REJECT": "sender.test"}
    assert not sink.messages


def test_dmarc_subdomain_uses_org_policy(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    """news.sender.test has no _dmarc record: sender.test's sp= (quarantine) applies, not p=."""
    sg = gate(spamgate_factory, sink, dns_server, keys)
    dns_server.remove("_dmarc.sender.test")
    dns_server.add("_dmarc.sender.test", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    r = send_raw(sg.port, message(frm="alice@news.sender.test"), mail_from="x@other.test")
    assert r.get("ok"), r
    assert dmarc_syms(sg) == {"DMARC_QUARANTINE": "news.sender.test"}
    assert b"X-Spam-Flag: YES" in sink.messages[-1].data


def test_dmarc_quarantine_tags(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(spamgate_factory, sink, dns_server, keys)
    assert send_raw(sg.port, message(frm="alice@quar.test"), mail_from="x@other.test").get("ok")
    assert dmarc_syms(sg) == {"DMARC_QUARANTINE": "quar.test"}
    assert b"X-Spam-Flag: YES" in sink.messages[-1].data


def test_dmarc_quarantine_rejected_under_enforcing_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(
        spamgate_factory, sink, dns_server, keys, site_rules='[symbols.DMARC_QUARANTINE]\naction = "reject"\n'
    )
    r = send_raw(sg.port, message(frm="alice@quar.test"), mail_from="x@other.test")
    assert r["error"] == 550


def test_dmarc_trusted_forwarder_ip(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"checks": {"dmarc": {"trusted_forwarders": ["127.0.0.8/29"]}}},
    )
    assert send_raw(sg.port, message(frm="alice@sender.test"), mail_from="x@other.test").get("ok")
    assert dmarc_syms(sg) == {"DMARC_FORWARDED": "sender.test:p=reject:ip:127.0.0.9"}


@pytest.mark.parametrize(("on_temperror", "code"), [("continue", None), ("tempfail", 451)])
def test_dmarc_policy_timeout(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    keys: dict[str, DkimKey],
    on_temperror: str,
    code: int | None,
) -> None:
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"policy": {"stage_timeout": "3s"}, "checks": {"dmarc": {"on_temperror": on_temperror}}},
    )
    r = send_within(sg.port, message(frm="alice@slow.test"), 3.5, mail_from="x@other.test")
    assert dmarc_syms(sg) == {"DMARC_TEMPERROR": "slow.test"}
    assert_outcome(r, code)


# --- unknown identities end to end: a DNS failure is never a 550 ------------------------------


@pytest.mark.parametrize(("on_temperror", "code"), [("continue", None), ("tempfail", 451)])
def test_dmarc_spf_dns_timeout_is_not_a_reject(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    keys: dict[str, DkimKey],
    on_temperror: str,
    code: int | None,
) -> None:
    """p=reject, unsigned, MAIL FROM aligned (bounce.sender.test) but its SPF lookups time out:
    DMARC_TEMPERROR, delivered (or 451 under on_temperror = "tempfail"), never 550."""
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"policy": {"stage_timeout": "3s"}, "checks": {"dmarc": {"on_temperror": on_temperror}}},
    )
    dns_server.drop("bounce.sender.test")
    r = send_within(sg.port, message(frm="alice@sender.test"), 7, mail_from="x@bounce.sender.test")
    assert dmarc_syms(sg) == {"DMARC_TEMPERROR": "sender.test:spf:bounce.sender.test=temperror"}
    assert_outcome(r, code)


def test_dmarc_dkim_key_timeout_is_not_a_reject(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    """p=reject, SPF passes for an unaligned domain, the aligned DKIM signature's key lookup
    times out: DMARC_TEMPERROR and delivered, not 550."""
    sg = gate(spamgate_factory, sink, dns_server, keys, config={"policy": {"stage_timeout": "3s"}})
    slow = DkimKey("sender.test", selector="slow")  # never published: its lookup is dropped
    dns_server.drop("slow._domainkey.sender.test")
    r = send_within(sg.port, slow.sign(message(frm="alice@sender.test")), 5, mail_from="x@other.test")
    assert dmarc_syms(sg) == {"DMARC_TEMPERROR": "sender.test:dkim:sender.test=temperror"}
    assert_outcome(r, None)
    assert sink.messages


@pytest.mark.parametrize(
    ("mail_from", "want", "code"),
    [
        # the aligned SPF identity was never evaluated: unknown, not a fail
        ("alice@sender.test", {"DMARC_TEMPERROR": "sender.test:spf:sender.test=missing"}, None),
        # an unaligned MAIL FROM could not have passed DMARC: the missing SPF result is moot
        ("x@other.test", {"DMARC_REJECT": "sender.test"}, 550),
    ],
)
def test_dmarc_with_the_spf_check_off(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    keys: dict[str, DkimKey],
    mail_from: str,
    want: dict[str, str],
    code: int | None,
) -> None:
    """With [checks.spf] off there is no SPF result: an unsigned message from a p=reject domain
    with an aligned MAIL FROM is a DMARC temperror (delivered); with an unaligned one it is
    still rejected."""
    sg = gate(spamgate_factory, sink, dns_server, keys, config={"checks": {"spf": {"enabled": False}}})
    r = send_raw(sg.port, message(frm="alice@sender.test"), mail_from=mail_from)
    assert dmarc_syms(sg) == want
    assert_outcome(r, code)
