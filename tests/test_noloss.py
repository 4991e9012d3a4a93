"""The no-loss invariant under random downstream faults (seeded, so a failure replays).

~200 messages over several client sessions while the sink injects, at every stage, a 421,
a 4xx, a 5xx, a dropped connection or a reply slower than the relay timeout. Afterwards:
- every message the client got 250 for is at the sink exactly once (by Message-ID);
- no message the client got a 4xx/5xx for is logged as delivered, and none reached the sink
  unless its fault was a timeout after the sink had the data (a possible duplicate on retry,
  never a loss);
- the log's outcome agrees with what the client was told, message by message.
"""

from __future__ import annotations

import random
import re
import smtplib
from collections.abc import Callable

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink

SEED = 20261129
SESSIONS = 10
PER_SESSION = 20
REF = re.compile(r"\[ref ([0-9a-f]+\.\d+)\]")


def make_fault(rng: random.Random) -> Callable[[str], str | None]:
    faults = {
        "greeting": ["421 4.3.2 busy", "drop"],
        "ehlo": ["421 4.3.2 busy", "drop"],
        "mail": ["421 4.3.2 busy", "451 4.3.0 try later", "553 5.1.8 bad sender", "drop"],
        "rcpt": ["421 4.3.2 busy", "450 4.2.1 busy", "550 5.1.1 unknown", "drop"],
        "data": ["421 4.3.2 busy", "451 4.3.0 later", "554 5.5.1 no", "drop"],
        "dot": ["421 4.3.2 busy", "451 4.3.0 later", "554 5.7.1 spam", "drop", "sleep 0.7"],
        "rset": ["drop"],
    }

    def fault(stage: str) -> str | None:
        if rng.random() < 0.06:
            return rng.choice(faults.get(stage, ["drop"]))
        return None

    return fault


def one(c: smtplib.SMTP, mid: str) -> tuple[int, str]:
    code, text = c.mail("alice@sender.test")
    if code != 250:
        return code, text.decode()
    code, text = c.rcpt("bob@example.test")
    if code != 250:
        c.rset()
        return code, text.decode()
    code, text = c.docmd("DATA")
    if code != 354:
        return code, text.decode()
    c.send(message(mid) + b".\r\n")
    code, text = c.getreply()
    return code, text.decode()


def test_no_message_lost_under_random_faults(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    sg = spamgate_factory(
        {
            "relay": {
                "downstream": f"127.0.0.1:{sink.port}",
                "command_timeout": "500ms",
                "connect_timeout": "500ms",
                "data_timeout": "500ms",
            },
            "limits": {"max_errors": 1000},
        }
    )
    rng = random.Random(SEED)
    sink.state.fault = make_fault(rng)
    told: dict[str, tuple[int, str]] = {}
    n = 0
    for s in range(SESSIONS):
        c = smtp(sg.port, f"127.0.1.{s + 1}")
        c.ehlo("client.sender.test")
        for _ in range(PER_SESSION):
            n += 1
            mid = f"noloss-{n}"
            try:
                told[mid] = one(c, mid)
            except smtplib.SMTPServerDisconnected:
                told[mid] = (0, "client session closed")
                c = smtp(sg.port, f"127.0.1.{s + 1}")
                c.ehlo("client.sender.test")
        c.quit()
    sink.state.fault = None

    at_sink: dict[str, int] = {}
    for m in sink.messages:
        found = re.search(rb"Message-ID: <(noloss-\d+)@sender.test>", m.data)
        assert found, m.data[:300]
        key = found.group(1).decode()
        at_sink[key] = at_sink.get(key, 0) + 1

    accepted = {mid for mid, (code, _) in told.items() if code == 250}
    refused = {mid for mid, (code, _) in told.items() if code != 250}
    assert len(told) == SESSIONS * PER_SESSION
    assert 100 < len(accepted) < len(told), (len(accepted), "the faults must bite, not everything")
    for mid in accepted:
        assert at_sink.get(mid) == 1, (mid, at_sink.get(mid))
    for mid in refused:
        code, text = told[mid]
        assert code == 0 or 400 <= code < 600, (mid, code, text)
        if mid in at_sink:
            # Only a downstream slower than our data timeout can have it: we said 451.
            assert code == 451, (mid, code, text)
            assert text.startswith("4.4.2 "), (mid, code, text)
    assert all(v == 1 for v in at_sink.values())
    # Every 5xx is one the downstream gave (its fault texts), and spamgate never sent the
    # downstream a command out of order (a pooled session is idle when reused).
    own = {"5.1.8 bad sender", "5.1.1 unknown", "5.5.1 no", "5.7.1 spam"}
    for mid in refused:
        code, text = told[mid]
        if code >= 500:
            assert text in own, (mid, code, text)
    assert sink.state.sequence_errors == []

    # The log tells the same story as the replies.
    txs = sg.wait_log("transaction", count=1)
    delivered_refs = {t["ref"] for t in sg.transactions() if t["outcome"] == "delivered"}
    assert len(delivered_refs) == len(accepted)
    for mid in refused:
        m = REF.search(told[mid][1])
        if m:
            assert m.group(1) not in delivered_refs
    assert txs


# -- from the core branch ------------------------------------------------------------------


def test_no_loss_with_concurrent_clients(sink: Sink, spamgate_factory: Callable[..., Spamgate]) -> None:
    """30 clients at once, 4 messages each, seeded random faults: the invariant holds under
    concurrency and downstream session pooling."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(7)
    lock = threading.Lock()
    faults = ["421 4.3.2 bye", "451 4.3.0 later", "drop", None, None, None, None, None, None, None]

    def fault(stage: str) -> str | None:
        if stage not in ("mail", "rcpt", "dot"):
            return None
        with lock:
            f = rng.choice(faults)
            return f if rng.random() < 0.3 else None

    sink.state.fault = fault
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "pool_size": 8}})

    def client(n: int) -> dict[str, int]:
        out: dict[str, int] = {}
        try:
            with smtp(sg.port, f"127.0.20.{n + 1}") as c:
                c.ehlo("client.sender.test")
                for k in range(4):
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
        except smtplib.SMTPServerDisconnected:
            pass
        return out

    with ThreadPoolExecutor(30) as pool:
        results = list(pool.map(client, range(30)))
    outcome = {k: v for r in results for k, v in r.items()}
    delivered = sorted(n for n, code in outcome.items() if code == 250)
    at_sink = sorted(m.data.split(b"Message-ID: <", 1)[1].split(b"@", 1)[0].decode() for m in sink.messages)
    assert at_sink == delivered
    assert len(delivered) > 40
    assert len(delivered) < len(outcome)  # faults did happen
    assert sink.state.sequence_errors == []
