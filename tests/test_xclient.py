"""XCLIENT: a downstream that advertises it learns the true client of every transaction."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


def _send(port: int, source: str, helo: str, esmtp: bool = True) -> None:
    with smtp(port, source) as c:
        if esmtp:
            c.ehlo(helo)
        else:
            c.helo(helo)
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message(f"x{source}")) == {}


def test_xclient_attributes(relay: Spamgate, sink: Sink) -> None:
    _send(relay.port, "127.0.7.1", "one.sender.test")
    assert sink.messages[0].xclient == {
        "ADDR": "127.0.7.1",
        "NAME": "[UNAVAILABLE]",  # no PTR (the tests' DNS answers nothing)
        "HELO": "one.sender.test",
        "PROTO": "ESMTP",
    }
    assert sink.messages[0].helo == "mx.spamgate.test"  # re-EHLO after XCLIENT, as our name


def test_xclient_per_client_on_pooled_session(relay: Spamgate, sink: Sink) -> None:
    """One pooled downstream session serves two clients: each transaction carries its own client."""
    _send(relay.port, "127.0.7.2", "two.sender.test")
    _send(relay.port, "127.0.7.3", "three.sender.test", esmtp=False)
    assert sink.state.connections == 1
    assert [m.xclient["ADDR"] for m in sink.messages] == ["127.0.7.2", "127.0.7.3"]
    assert sink.messages[1].xclient["HELO"] == "three.sender.test"
    assert sink.messages[1].xclient["PROTO"] == "SMTP"


def test_no_xclient_when_not_advertised_or_disabled(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    sink.state.xclient = False
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    _send(sg.port, "127.0.7.4", "four.sender.test")
    sink.state.xclient = True
    off = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "xclient": False}})
    _send(off.port, "127.0.7.5", "five.sender.test")
    assert [m.xclient for m in sink.messages] == [{}, {}]
    assert not any(c.startswith("XCLIENT") for c in sink.state.commands)
