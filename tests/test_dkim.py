"""DKIM at DATA end to end: messages signed in the test (RSA and Ed25519), keys in the test DNS.

Every signature is verified (a message signed by two domains shows both); a key lookup that
times out is DKIM_TEMPERROR (not fail) and ends within the stage budget.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.clients import message
from tests.harness.dns_server import DnsTestServer
from tests.harness.dnsgate import start_gate, symbols
from tests.harness.mail_auth import DkimKey, assert_outcome, auth_zone, send_raw, send_within
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]


@pytest.fixture(scope="module")
def keys() -> dict[str, DkimKey]:
    return {
        "rsa": DkimKey("sender.test"),
        "ed": DkimKey("esp.test", selector="ed", algo="ed25519"),
        "nokey": DkimKey("nokey.test"),
        "slow": DkimKey("slow.test"),
    }


def gate(
    factory: Factory, sink: Sink, dns: DnsTestServer, keys: dict[str, DkimKey], **kw: object
) -> Spamgate:
    auth_zone(dns)
    keys["rsa"].publish(dns)
    keys["ed"].publish(dns)
    keys["slow"].publish(dns)
    dns.drop("_domainkey.slow.test")
    return start_gate(factory, sink, dns, **kw)  # type: ignore[arg-type]


def dkim_syms(sg: Spamgate) -> dict[str, str]:
    line = sg.wait_log("transaction")[-1]
    return {k: v[1] for k, v in symbols(line).items() if k.startswith("DKIM_")}


def test_dkim_pass_rsa_and_ed25519(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(spamgate_factory, sink, dns_server, keys)
    msg = keys["ed"].sign(keys["rsa"].sign(message(frm="alice@sender.test")))
    assert send_raw(sg.port, msg).get("ok")
    assert dkim_syms(sg) == {"DKIM_PASS": "esp.test,sender.test"}
    data = sink.messages[-1].data
    assert b"dkim=pass header.d=esp.test header.s=ed header.a=ed25519-sha256" in data
    assert b"dkim=pass header.d=sender.test header.s=sel header.a=rsa-sha256" in data


def test_dkim_fail_is_scored_not_rejected(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    """A body changed after signing: DKIM_FAIL (weight 1); the other signature still passes."""
    sg = gate(spamgate_factory, sink, dns_server, keys)
    msg = keys["rsa"].sign(keys["ed"].sign(message(frm="alice@sender.test")))
    msg = msg.replace(b"Hello.", b"Hello, changed.")
    # sender.test's DMARC is p=reject: SPF (sender.test, aligned) still passes DMARC here.
    assert send_raw(sg.port, msg).get("ok")
    got = dkim_syms(sg)
    assert got == {"DKIM_FAIL": "sender.test(body hash mismatch),esp.test(body hash mismatch)"}


def test_dkim_fail_rejected_under_enforcing_rule(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        site_rules='[symbols.DKIM_FAIL]\naction = "reject"\nreply = "550 5.7.20 DKIM signature invalid"\n',
    )
    msg = keys["rsa"].sign(message(frm="alice@sender.test")).replace(b"Subject: test", b"Subject: x")
    r = send_raw(sg.port, msg)
    assert r["error"] == 550
    assert "5.7.20" in r["reply"]
    assert not sink.messages


def test_dkim_permerror_and_none(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    sg = gate(spamgate_factory, sink, dns_server, keys)
    assert send_raw(sg.port, keys["nokey"].sign(message(frm="alice@sender.test"))).get("ok")
    got = dkim_syms(sg)
    assert list(got) == ["DKIM_PERMERROR"]
    assert got["DKIM_PERMERROR"].startswith("nokey.test(missing public key")
    assert send_raw(sg.port, message(frm="alice@sender.test")).get("ok")
    sg.wait_log("transaction", count=2)
    assert dkim_syms(sg) == {"DKIM_NONE": ""}


@pytest.mark.parametrize(("on_temperror", "code"), [("continue", None), ("tempfail", 451)])
def test_dkim_key_timeout(
    spamgate_factory: Factory,
    sink: Sink,
    dns_server: DnsTestServer,
    keys: dict[str, DkimKey],
    on_temperror: str,
    code: int | None,
) -> None:
    """The key lookup is dropped: DKIM_TEMPERROR within the stage budget, never DKIM_FAIL."""
    sg = gate(
        spamgate_factory,
        sink,
        dns_server,
        keys,
        config={"policy": {"stage_timeout": "3s"}, "checks": {"dkim": {"on_temperror": on_temperror}}},
    )
    r = send_within(sg.port, keys["slow"].sign(message(frm="alice@sender.test")), 3.5)
    assert dkim_syms(sg) == {"DKIM_TEMPERROR": "slow.test"}
    assert_outcome(r, code)


def test_dkim_large_message_verified_in_worker_process(
    spamgate_factory: Factory, sink: Sink, dns_server: DnsTestServer, keys: dict[str, DkimKey]
) -> None:
    """A 3 MB signed message is verified in the worker process (above process_pool_above)."""
    sg = gate(spamgate_factory, sink, dns_server, keys)
    body = "Lorem ipsum dolor sit amet,  consectetur \t adipiscing elit.  \r\n" * 48000
    msg = keys["rsa"].sign(message(frm="alice@sender.test", body=body))
    assert len(msg) > 3_000_000
    assert send_raw(sg.port, msg).get("ok")
    assert dkim_syms(sg) == {"DKIM_PASS": "sender.test"}
    assert sg.wait_log("dkim_verified", process=True)
    small = keys["rsa"].sign(message(frm="alice@sender.test"))
    assert send_raw(sg.port, small).get("ok")
    assert sg.wait_log("dkim_verified", process=False)
