"""LMTP downstream (RFC 2033) against a real Dovecot LMTP server (tests/harness/dovecot.py).

One recipient per LMTP transaction (the client gets one reply to DATA: the recipient's own
LMTP reply); a refusal after DATA (over quota) reaches the client verbatim and the session
goes on; an unknown user is refused at RCPT by Dovecot itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.harness.clients import message, smtp
from tests.harness.dovecot import Dovecot
from tests.harness.proc import Spamgate, free_port
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
DOMAINS = ["example.test", "example.net"]


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    d = Dovecot().start()
    yield d
    d.stop()


def _gate(factory: Factory, sink: Sink, dovecot: Dovecot, targets: list[str] | None = None) -> Spamgate:
    routes = [{"domains": ["example.net"], "downstreams": targets or [f"lmtp:127.0.0.1:{dovecot.port}"]}]
    relay = {"downstream": f"127.0.0.1:{sink.port}", "routes": routes, "local_domains": DOMAINS}
    return factory({"relay": relay})


def test_lmtp_delivery_and_refusal_after_data(
    spamgate_factory: Factory, sink: Sink, dovecot: Dovecot
) -> None:
    sg = _gate(spamgate_factory, sink, dovecot)
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("bob@example.net")[0] == 250
        code, text = c.rcpt("full@example.net")  # one recipient per LMTP transaction
        assert code == 452, text
        assert text.startswith(b"4.5.3 [ref ")
        code, text = c.data(message("to bob"))
        assert code == 250, text
        assert text.startswith(b"2.0.0 <bob@example.net> ")
        assert text.endswith(b" Saved")
        # The second recipient, sent again alone: over quota, refused after DATA by Dovecot.
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("full@example.net")[0] == 250
        code, text = c.data(message("too big", ("x" * 70 + "\r\n") * 60))
        assert (code, text) == (552, b"5.2.2 <full@example.net> Quota exceeded (mailbox for user is full)")
        # Unknown user: Dovecot's own 550 at RCPT; the session and the LMTP session go on.
        assert c.mail("alice@sender.test")[0] == 250
        code, text = c.rcpt("nobody@example.net")
        assert code == 550, text
        assert text.startswith(b"5.1.1 <nobody@example.net> User doesn't exist")
        assert c.rcpt("bob@example.net")[0] == 250
        assert c.data(message("again"))[0] == 250
    got = dovecot.delivered("bob@example.net")
    assert len(got) == 2
    assert b"Received: from client.sender.test" in got[0]
    assert b"with LMTP" in got[0]
    assert not dovecot.delivered("full@example.net")
    txs = sg.wait_log("transaction", count=3)
    assert [t["outcome"] for t in txs] == ["delivered", "rejected", "delivered"]
    assert txs[1]["downstream_reply"].startswith("552 5.2.2")
    assert {t["downstream"] for t in txs} == {f"lmtp:127.0.0.1:{dovecot.port}"}
    assert not sink.messages


def test_lmtp_default_route_and_failover(spamgate_factory: Factory, sink: Sink, dovecot: Dovecot) -> None:
    """LMTP as the only route: MAIL gets Dovecot's reply; a dead LMTP server is skipped."""
    dead = f"lmtp:127.0.0.1:{free_port()}"
    route = {"domains": ["*"], "downstreams": [dead, f"lmtp:127.0.0.1:{dovecot.port}"]}
    sg = spamgate_factory({"relay": {"routes": [route], "local_domains": DOMAINS}})
    for i in range(2):
        with smtp(sg.port) as c:
            c.ehlo("client.sender.test")
            assert c.mail("alice@sender.test") == (250, b"2.1.0 OK")
            assert c.rcpt("bob@example.net")[0] == 250
            assert c.data(message(f"m{i}"))[0] == 250
    assert len(dovecot.delivered("bob@example.net")) == 2
    assert len(sg.events("downstream_down")) == 1
    dovecot.stop()
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        code, text = c.mail("alice@sender.test")
        assert code == 451, text
        assert text.startswith(b"4.4.1 [ref ")


def test_lmtp_client_drop_mid_transaction(spamgate_factory: Factory, sink: Sink, dovecot: Dovecot) -> None:
    """A client that leaves after RCPT: the pooled LMTP session is reset, the next one works."""
    sg = _gate(spamgate_factory, sink, dovecot)
    c = smtp(sg.port)
    c.ehlo("client.sender.test")
    c.mail("alice@sender.test")
    assert c.rcpt("bob@example.net")[0] == 250
    c.close()
    with smtp(sg.port) as c2:
        c2.ehlo("client.sender.test")
        assert c2.mail("alice@sender.test")[0] == 250
        assert c2.rcpt("bob@example.net")[0] == 250
        assert c2.data(message("after a drop"))[0] == 250
    assert len(dovecot.delivered("bob@example.net")) == 1
