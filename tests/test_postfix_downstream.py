"""spamgate in front of a real Postfix: XCLIENT hands Postfix the original client address."""

from __future__ import annotations

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
