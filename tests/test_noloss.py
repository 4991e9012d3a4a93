"""The no-loss invariant under random downstream faults (seeded, so a failure replays).

Every message the client saw 250 for is at the sink exactly once (matched by Message-ID);
a message that got 4xx/5xx is never claimed delivered (it may not be at the sink: the
downstream gave its final reply before we relayed it, so a 4xx/5xx there means not taken).
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

N_MESSAGES = 200
PER_SESSION = 10


def _msgid(data: bytes) -> str:
    m = re.search(rb"Message-ID: <([^>]+)>", data)
    assert m, data[:200]
    return m.group(1).decode()


def test_no_message_lost_or_duplicated(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sink.state.random_faults = 0.3
    sink.state.seed = 20261129
    sg = spamgate_factory(
        {
            "relay": {
                "downstream": f"127.0.0.1:{sink.port}",
                "command_timeout": "2s",
                "data_timeout": "2s",
            },
            "limits": {"max_errors": 1000},
        }
    )
    outcome: dict[str, int] = {}
    i = 0
    while i < N_MESSAGES:
        c = smtp(sg.port, f"127.0.{i % 7}.{1 + i % 200}")
        try:
            c.ehlo("client.sender.test")
            for _ in range(PER_SESSION):
                if i >= N_MESSAGES:
                    break
                name = f"m{i}"
                i += 1
                code, _ = c.mail("alice@sender.test")
                if code != 250:
                    outcome[name] = code
                    c.rset()
                    continue
                code, _ = c.rcpt("bob@example.test")
                if code != 250:
                    outcome[name] = code
                    c.rset()
                    continue
                try:
                    code, _ = c.data(message(name))
                except smtplib.SMTPDataError as e:
                    code = e.smtp_code
                outcome[name] = code
                if code == 421:
                    break
        except smtplib.SMTPServerDisconnected:
            pass  # after a relayed 421: reconnect and go on
        finally:
            c.close()
    assert len(outcome) == N_MESSAGES
    delivered = {n for n, code in outcome.items() if code == 250}
    failed = {n for n, code in outcome.items() if code != 250}
    assert all(400 <= outcome[n] < 600 for n in failed)
    at_sink = [_msgid(m.data).split("@")[0] for m in sink.messages]
    # Exactly once for every 250, never for a refused one.
    assert sorted(at_sink) == sorted(delivered)
    assert len(set(at_sink)) == len(at_sink)
    # The faults did happen, and most mail still went through.
    assert len(failed) > 20
    assert len(delivered) > 100
    txs = sg.wait_log("transaction", count=len(delivered))
    logged_delivered = [t for t in txs if t["outcome"] == "delivered"]
    assert len(logged_delivered) == len(delivered)


def _client(port: int, n: int, per: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with smtp(port, f"127.0.20.{n + 1}") as c:
            c.ehlo("client.sender.test")
            for k in range(per):
                name = f"c{n}x{k}"
                code, _ = c.mail("alice@sender.test")
                if code == 250:
                    code, _ = c.rcpt("bob@example.test")
                if code == 250:
                    try:
                        code, _ = c.data(message(name))
                    except smtplib.SMTPDataError as e:
                        code = e.smtp_code
                else:
                    c.rset()
                out[name] = code
                if code == 421:
                    break
    except smtplib.SMTPServerDisconnected:
        pass
    return out


def test_no_loss_with_concurrent_clients(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """30 clients at once, 4 messages each, random faults: the invariant holds under concurrency."""
    from concurrent.futures import ThreadPoolExecutor

    sink.state.random_faults = 0.2
    sink.state.seed = 7
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "pool_size": 8}})
    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(lambda n: _client(sg.port, n, 4), range(30)))
    outcome = {k: v for r in results for k, v in r.items()}
    delivered = sorted(n for n, code in outcome.items() if code == 250)
    at_sink = sorted(_msgid(m.data).split("@")[0] for m in sink.messages)
    assert at_sink == delivered
    assert len(delivered) > 40
