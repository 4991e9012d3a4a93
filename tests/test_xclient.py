"""XCLIENT: the downstream learns the true client (ADDR, NAME, HELO, PROTO), then is greeted again."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


def test_xclient_carries_the_true_client(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "pool_size": 0}})
    with smtp(sg.port, "127.0.11.5") as c:
        c.ehlo("client.example")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("xc1")) == {}
    with smtp(sg.port, "127.0.11.6") as c:
        c.helo("old.example")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("xc2")) == {}
    first, second = sink.messages
    assert first.xclient == {
        "ADDR": "127.0.11.5",
        "NAME": "[UNAVAILABLE]",
        "HELO": "client.example",
        "PROTO": "ESMTP",
    }
    assert second.xclient == {
        "ADDR": "127.0.11.6",
        "NAME": "[UNAVAILABLE]",
        "HELO": "old.example",
        "PROTO": "SMTP",
    }
    # XCLIENT resets the downstream session: it is followed by a new EHLO before MAIL.
    cmds = [c.split(" ")[0].upper() for c in sink.state.commands]
    i = cmds.index("XCLIENT")
    assert cmds[i + 1] == "EHLO"
    assert cmds[i + 2] == "MAIL"


def test_no_xclient_when_disabled_or_not_offered(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    off = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "xclient": False}})
    with smtp(off.port, "127.0.11.7") as c:
        c.ehlo("client.example")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("xc-off")) == {}
    sink.state.xclient = False
    plain = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    with smtp(plain.port, "127.0.11.8") as c:
        c.ehlo("client.example")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message("xc-none")) == {}
    assert [m.xclient for m in sink.messages] == [{}, {}]
    assert not any(c.upper().startswith("XCLIENT") for c in sink.state.commands)
