"""Downstream sessions are pooled across client sessions, without ever losing the real client."""

from __future__ import annotations

from collections.abc import Callable

from tests.harness.clients import message, smtp
from tests.harness.proc import Spamgate
from tests.harness.sink import Sink


def _send(port: int, source_ip: str, subject: str) -> None:
    with smtp(port, source_ip) as c:
        c.ehlo(f"host-{source_ip}.sender.test")
        assert c.sendmail("alice@sender.test", ["bob@example.test"], message(subject)) == {}


def test_sequential_clients_reuse_one_downstream_session(relay: Spamgate, sink: Sink) -> None:
    """Three client sessions in a row cost the downstream one connection, and each message
    is announced with its own client's address by XCLIENT."""
    for i, ip in enumerate(["127.0.0.21", "127.0.0.22", "127.0.0.22"]):
        _send(relay.port, ip, f"pooled {i}")
    assert sink.state.connections == 1
    assert [m.xclient.get("ADDR") for m in sink.messages] == ["127.0.0.21", "127.0.0.22", "127.0.0.22"]
    assert [m.xclient.get("HELO") for m in sink.messages] == [
        "host-127.0.0.21.sender.test",
        "host-127.0.0.22.sender.test",
        "host-127.0.0.22.sender.test",
    ]
    # XCLIENT is sent only when the identity changes (two different clients here).
    assert sum(1 for c in sink.state.commands if c.startswith("XCLIENT")) == 2


def test_stale_pooled_session_is_replaced_transparently(relay: Spamgate, sink: Sink) -> None:
    """The downstream restarts between two clients: the pooled session is dead, the next
    client still gets its mail delivered (no spurious 4xx)."""
    _send(relay.port, "127.0.0.31", "before restart")
    sink.stop()
    sink.start()
    _send(relay.port, "127.0.0.32", "after restart")
    assert [m.xclient["ADDR"] for m in sink.messages] == ["127.0.0.31", "127.0.0.32"]
    assert sink.state.connections == 2


def test_pool_size_zero_closes_after_each_session(
    sink: Sink, spamgate_factory: Callable[..., Spamgate]
) -> None:
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}", "pool_size": 0}})
    _send(sg.port, "127.0.0.41", "one")
    _send(sg.port, "127.0.0.41", "two")
    assert sink.state.connections == 2
    assert len(sink.messages) == 2
