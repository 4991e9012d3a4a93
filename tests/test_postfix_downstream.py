"""spamgate in front of a real Postfix: XCLIENT hands Postfix the original client address."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.harness.clients import smtp
from tests.harness.postfix import PostfixServer
from tests.harness.proc import Spamgate


@pytest.fixture
def postfix() -> Iterator[PostfixServer]:
    pf = PostfixServer().start()
    yield pf
    pf.stop()


def test_postfix_logs_the_original_client(
    postfix: PostfixServer, spamgate_factory: Callable[..., Spamgate]
) -> None:
    """A client on 127.0.0.77 sends through spamgate; Postfix's smtpd logs 127.0.0.77 (from
    XCLIENT), not spamgate's own 127.0.0.1, and the HELO name the client gave."""
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{postfix.port}"}})
    with smtp(sg.port, source_ip="127.0.0.77") as c:
        c.ehlo("client77.sender.test")
        c.sendmail("alice@sender.test", ["bob@example.test"], "Subject: pf\r\n\r\nhello postfix\r\n")
    (txn,) = sg.wait_log("transaction")
    assert txn["outcome"] == "delivered"
    assert "queued as" in txn["downstream_reply"]
    queue_id = txn["downstream_reply"].rsplit(" ", 1)[1]
    m = postfix.wait_log(rf"smtpd\[\d+\]: {queue_id}: client=([^\s,]+)")
    assert m.group(1) == "unknown[127.0.0.77]"
    postfix.wait_log(rf"{queue_id}: .*helo=<client77.sender.test>|{queue_id}: from=<alice@sender.test>")
    assert "client=unknown[127.0.0.1]" not in postfix.log()


def test_required_xclient_against_postfix(spamgate_factory: Callable[..., Spamgate]) -> None:
    """relay.xclient_mode = "required" in front of a Postfix that does not trust spamgate for
    XCLIENT (so does not offer it): the client gets 451 4.7.0 and Postfix never sees a MAIL.
    In front of one that does, the mail is delivered under the client's own address."""
    refusing = PostfixServer(xclient=False).start()
    trusting = PostfixServer().start()
    try:
        for pf in (refusing, trusting):
            relay = {"downstream": f"127.0.0.1:{pf.port}", "xclient_mode": "required"}
            sg = spamgate_factory({"relay": relay})
            with smtp(sg.port, source_ip="127.0.0.78") as c:
                c.ehlo("client78.sender.test")
                code, text = c.mail("alice@sender.test")
                if pf is refusing:
                    assert code == 451
                    assert text.startswith(b"4.7.0 ")
                else:
                    assert code == 250
                    assert c.rcpt("bob@example.test")[0] == 250
                    assert c.data(b"Subject: pf\r\n\r\nhello postfix\r\n")[0] == 250
            sg.stop()  # the pooled downstream session says QUIT: Postfix logs its command counts
        refusing.wait_log(r"disconnect from \S+ ehlo=1 quit=1 commands=2")
        sessions = re.findall(r"disconnect from \S+ (.*commands=.*)", refusing.log())
        assert not any("mail=" in s or "xclient=" in s for s in sessions), sessions
        trusting.wait_log(r"client=unknown\[127\.0\.0\.78\]")
    finally:
        refusing.stop()
        trusting.stop()
