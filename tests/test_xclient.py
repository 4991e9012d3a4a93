"""XCLIENT: the downstream learns the true client (ADDR, NAME, HELO, PROTO), then is greeted again."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.admin import sample, wait_sample
from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate, free_port
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


def test_xclient_per_client_on_pooled_session(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """One pooled downstream session serves two clients: each transaction carries its own client."""
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}})
    for ip in ("127.0.7.2", "127.0.7.3"):
        with smtp(sg.port, ip) as c:
            c.ehlo(f"h{ip[-1]}.sender.test")
            assert c.sendmail("alice@sender.test", ["bob@example.test"], message(f"p{ip}")) == {}
    assert sink.state.connections == 1
    assert [m.xclient["ADDR"] for m in sink.messages] == ["127.0.7.2", "127.0.7.3"]
    assert [m.xclient["HELO"] for m in sink.messages] == ["h2.sender.test", "h3.sender.test"]


# -- refusals: never silent; "required" never relays without it ---------------------------------

REFUSED = "550 5.7.0 Error: insufficient authorization"


def _try(port: int, ip: str, subject: str) -> tuple[int, bytes]:
    """MAIL, RCPT, DATA; the first reply that is not positive, else the final reply."""
    with smtp(port, ip) as c:
        c.ehlo("client.example")
        code, text = c.mail("alice@sender.test")
        if code != 250:
            return code, text
        assert c.rcpt("bob@example.test")[0] == 250
        return c.data(message(subject))


def test_refused_xclient_is_logged_and_counted(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """relay.xclient_mode = "optional" (default): the downstream refuses XCLIENT; the mail is
    relayed without it, and the refusal is logged (xclient_refused, with the downstream's reply)
    and counted in spamgate_xclient_refused_total{reason="refused"}."""
    port = free_port()
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "metrics": {"listen": f"127.0.0.1:{port}"}}
    )
    sg.wait_log("admin_listening")
    sink.state.fail_at = {"xclient": REFUSED}
    assert _try(sg.port, "127.0.11.20", "xc-refused")[0] == 250
    (event,) = sg.wait_log("xclient_refused")
    assert event["downstream_reply"] == REFUSED
    assert event["client_ip"] == "127.0.11.20"
    assert event["level"] == "warning"
    assert [m.xclient for m in sink.messages] == [{}]
    body = wait_sample(port, "spamgate_xclient_refused_total", 1, reason="refused")
    assert sample(body, "spamgate_xclient_refused_total", reason="refused") == 1


@pytest.mark.parametrize("case", ["refused", "not_offered", "disabled"])
def test_required_xclient_never_relays_without_it(
    sink: Sink, spamgate_factory: Callable[..., Spamgate], case: str
) -> None:
    """relay.xclient_mode = "required": when the downstream refuses XCLIENT, does not offer it,
    or relay.xclient is false, the downstream gets no MAIL and the client gets 451 4.7.0 (it
    retries); the cause is logged. Once XCLIENT works again, mail flows."""
    relay: dict[str, object] = {"downstream": f"127.0.0.1:{sink.port}", "xclient_mode": "required"}
    if case == "refused":
        sink.state.fail_at = {"xclient": REFUSED}
    elif case == "not_offered":
        sink.state.xclient = False
    else:
        relay["xclient"] = False
    sg = spamgate_factory({"relay": relay, "limits": {"max_errors": 100}})
    code, text = _try(sg.port, "127.0.11.21", "xc-required")
    assert code == 451
    assert text.startswith(b"4.7.0 ")
    assert not any(c.upper().startswith("MAIL") for c in sink.state.commands)
    assert sink.messages == []
    if case == "refused":
        assert sg.wait_log("xclient_refused")[0]["downstream_reply"] == REFUSED
    else:
        assert sg.wait_log("xclient_unavailable")[0]["reason"] == case
        return
    sink.state.fail_at = {}
    assert _try(sg.port, "127.0.11.22", "xc-required-ok")[0] == 250
    assert [m.xclient["ADDR"] for m in sink.messages] == ["127.0.11.22"]
