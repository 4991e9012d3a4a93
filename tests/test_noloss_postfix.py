"""The no-loss invariant against a real Postfix downstream (tests/harness/postfix.py, delivering
to a Maildir, so every accepted message is counted by its Message-ID).

Postfix is stricter than any test double: after a half-done or refused transaction it answers
the next MAIL with ``503 5.5.1 Error: nested MAIL command``. Clients drop while spamgate waits
for each of Postfix's replies (made slow by the harness's ``slow-<stage>@`` senders), then a new
client takes the same pooled downstream session. Invariants:

- every message a client got 250 for is in the Maildir exactly once; none is there twice;
- a message the client did not get 250 for is not there (except one whose whole content
  reached Postfix before the client hung up: at most once, never seen as delivered);
- every 4xx/5xx a client saw is one Postfix itself gave for that message (no 503, no
  spamgate 451 caused by a confused downstream session).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness.clients import Raw, message
from tests.harness.postfix import SLOW, PostfixServer
from tests.harness.proc import Spamgate

MID = re.compile(rb"Message-ID: <(pf-[^@>]+)@sender.test>")
UNKNOWN = "550 5.1.1 <nouser@example.test>: Recipient address rejected: User unknown in virtual mailbox table"
TEMPFAIL = "451 4.3.0 <{sender}>: Sender address rejected: Error: try again later"


@pytest.fixture(scope="module")
def postfix_mx() -> Iterator[PostfixServer]:
    pf = PostfixServer(deliver=True).start()
    yield pf
    pf.stop()


def _spamgate(factory: Callable[..., Spamgate], pf: PostfixServer, **relay: object) -> Spamgate:
    return factory(
        {
            "relay": {
                "downstream": f"127.0.0.1:{pf.port}",
                "command_timeout": "5s",
                "data_timeout": "5s",
                **relay,
            },
            "limits": {"max_errors": 1000},
        }
    )


def _delivered(pf: PostfixServer, prefix: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for data in pf.delivered():
        m = MID.search(data)
        if m and m.group(1).decode().startswith(prefix):
            key = m.group(1).decode()
            counts[key] = counts.get(key, 0) + 1
    return counts


def _open(port: int, ip: str) -> Raw:
    raw = Raw(port, ip)
    assert raw.reply().startswith("220 ")
    assert raw.cmd("EHLO client.sender.test").startswith("250")
    return raw


def _transaction(raw: Raw, sender: str, rcpts: list[str], mid: str, drop_at: str = "") -> list[str]:
    """One transaction; returns every reply the client got. With ``drop_at`` the client hangs
    up right after sending that stage's command (for "data"/"dot": the whole message)."""
    replies: list[str] = []
    steps = [("mail", f"MAIL FROM:<{sender}>")] + [("rcpt", f"RCPT TO:<{r}>") for r in rcpts]
    for stage, line in steps:
        if drop_at == stage and (stage == "mail" or line.endswith(f"<{rcpts[-1]}>")):
            raw.send(line.encode() + b"\r\n")
            time.sleep(0.05)
            raw.close()
            return replies
        replies.append(raw.cmd(line))
        if stage == "mail" and not replies[-1].startswith("250"):
            return replies
    if not any(r.startswith("250") for r in replies[1:]):
        replies.append(raw.cmd("RSET"))
        return replies
    replies.append(raw.cmd("DATA"))
    if not replies[-1].startswith("354"):
        return replies
    raw.send(message(mid) + b".\r\n")
    if drop_at in ("data", "dot"):
        time.sleep(0.05)
        raw.close()
        return replies
    replies.append(raw.reply())
    return replies


@pytest.mark.parametrize("stage", ["mail", "rcpt", "data", "dot"])
def test_client_drop_then_next_client_on_the_pooled_session(
    postfix_mx: PostfixServer, spamgate_factory: Callable[..., Spamgate], stage: str
) -> None:
    """A client hangs up while spamgate waits for Postfix's reply to MAIL, RCPT, DATA (the 354)
    or the end of data; Postfix answers a second later. The next client, from the same address
    (so no XCLIENT in between), gets its message accepted and delivered: never a 503."""
    sg = _spamgate(spamgate_factory, postfix_mx)
    ip = "127.0.6.1"
    prefix = f"pf-drop-{stage}-"
    raw = _open(sg.port, ip)
    assert _transaction(raw, "alice@sender.test", ["bob@example.test"], prefix + "warm")[-1].startswith("250")
    raw.cmd("QUIT")
    raw = _open(sg.port, ip)
    _transaction(raw, f"slow-{stage}@sender.test", ["bob@example.test"], prefix + "dropped", drop_at=stage)
    sg.wait_log("connection", count=2)
    time.sleep(SLOW + 0.3)  # Postfix's late reply has come and gone
    raw = _open(sg.port, ip)
    replies = _transaction(raw, "alice@sender.test", ["bob@example.test"], prefix + "after")
    raw.cmd("QUIT")
    assert replies[0].startswith("250 2.1.0"), replies
    assert replies[-1].startswith("250 2.0.0 Ok: queued as"), replies
    got = _delivered(postfix_mx, prefix)
    assert got.pop(prefix + "warm") == 1
    assert got.pop(prefix + "after") == 1
    # The dropped message can be there only if Postfix had all of it, and then only once.
    allowed = {prefix + "dropped"} if stage == "dot" else set()
    assert set(got) <= allowed, got
    assert all(v == 1 for v in got.values()), got


KINDS = [
    "ok",
    "ok",
    "ok",
    "nouser",
    "tempfail-mail",
    "tempfail-dot",
    "slow-mail",
    "slow-dot",
    "drop-mail",
    "drop-rcpt",
    "drop-data",
    "drop-dot",
]


def test_no_loss_against_postfix_concurrent_clients(
    postfix_mx: PostfixServer, spamgate_factory: Callable[..., Spamgate]
) -> None:
    """12 clients at once, 5 messages each (seeded): plain messages, an unknown recipient next
    to a good one, Postfix tempfails at MAIL and at the end of data, slow replies and client
    drops at every stage, over a pool of 3 downstream sessions. Every 250 is delivered exactly
    once, nothing is delivered twice, and every refusal a client saw is Postfix's own."""
    sg = _spamgate(spamgate_factory, postfix_mx, pool_size=3)
    lock = threading.Lock()
    told: dict[str, tuple[str, list[str]]] = {}  # mid -> (kind, replies)

    def client(n: int) -> None:
        rng = random.Random(1000 + n)
        ip = f"127.0.7.{n + 1}"
        raw = _open(sg.port, ip)
        for k in range(5):
            kind = rng.choice(KINDS)
            mid = f"pf-c{n}m{k}"
            rcpts = ["nouser@example.test", "bob@example.test"] if kind == "nouser" else ["bob@example.test"]
            sender = "alice@sender.test"
            if kind.startswith(("tempfail-", "slow-")):
                sender = f"{kind}@sender.test"
            drop = ""
            if kind.startswith("drop-"):
                drop = kind[5:]
                sender = f"slow-{drop}@sender.test"
            replies = _transaction(raw, sender, rcpts, mid, drop_at=drop)
            with lock:
                told[mid] = (kind, replies)
            if drop:
                raw = _open(sg.port, ip)
        raw.cmd("QUIT")

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(client, range(12)))
    assert len(told) == 60
    got = _delivered(postfix_mx, "pf-c")
    assert all(v == 1 for v in got.values()), {k: v for k, v in got.items() if v != 1}
    accepted = 0
    for mid, (kind, replies) in sorted(told.items()):
        final = replies[-1] if replies else ""
        refusals = [r for r in replies if r[:1] in ("4", "5")]
        if kind in ("ok", "nouser", "slow-mail", "slow-dot"):
            assert final.startswith("250 2.0.0 Ok: queued as"), (mid, kind, replies)
            assert refusals == ([UNKNOWN] if kind == "nouser" else []), (mid, kind, replies)
        elif kind.startswith("tempfail-"):
            assert refusals == [TEMPFAIL.format(sender=f"{kind}@sender.test")], (mid, kind, replies)
        else:  # dropped: nothing was refused before the drop
            assert refusals == [], (mid, kind, replies)
        if final.startswith("250 2.0.0"):
            accepted += 1
            assert got.get(mid) == 1, (mid, kind, replies)
        elif kind != "drop-dot":
            assert mid not in got, (mid, kind, replies)
    assert accepted >= 20
    assert not any(r.startswith("503") for _, replies in told.values() for r in replies)
