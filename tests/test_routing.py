"""Routing: several downstreams with failover and recovery, routes by recipient domain, MX routes.

All on real sockets: each downstream is a strict sink (tests/harness/sink.py); "down" is a
sink that stopped listening (connection refused), and "up again" is the same port listening.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.harness.admin import sample, wait_sample
from tests.harness.clients import message, smtp
from tests.harness.dns_server import DnsTestServer
from tests.harness.proc import Spamgate, free_port
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]
DOMAINS = ["example.test", "example.org", "mx.test"]


@pytest.fixture
def sinks() -> Iterator[list[Sink]]:
    made = [Sink().start() for _ in range(2)]
    yield made
    for s in made:
        s.close()


def _send(port: int, rcpts: list[str], subject: str = "routing") -> dict[str, tuple[int, bytes]]:
    """One transaction; returns {rcpt: reply} plus 'MAIL' and 'DATA' (when it got that far)."""
    out: dict[str, tuple[int, bytes]] = {}
    with smtp(port) as c:
        c.ehlo("client.sender.test")
        out["MAIL"] = c.mail("alice@sender.test")
        if out["MAIL"][0] != 250:
            return out
        for r in rcpts:
            out[r] = c.rcpt(r)
        if any(v[0] == 250 for k, v in out.items() if k != "MAIL"):
            out["DATA"] = c.data(message(subject))
    return out


def test_failover_then_recovery(spamgate_factory: Factory, sinks: list[Sink]) -> None:
    """The first downstream goes down mid-run: the client never notices; it comes back after down_time."""
    a, b = sinks
    route = {"domains": ["*"], "downstreams": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
    admin = free_port()
    sg = spamgate_factory(
        {
            "relay": {"routes": [route], "down_time": "1s", "local_domains": DOMAINS},
            "metrics": {"listen": f"127.0.0.1:{admin}"},
        }
    )
    assert _send(sg.port, ["bob@example.test"], "one")["DATA"][0] == 250
    assert (len(a.messages), len(b.messages)) == (1, 0)
    a.stop()
    for i in range(3):
        got = _send(sg.port, ["bob@example.test"], f"failover {i}")
        assert got["MAIL"][0] == 250, got
        assert got["DATA"][0] == 250, got
    assert (len(a.messages), len(b.messages)) == (1, 3)
    down = sg.wait_log("downstream_down")
    assert down[0]["downstream"] == f"127.0.0.1:{a.port}"
    assert len(sg.events("downstream_down")) == 1  # marked down once, then skipped
    body = wait_sample(admin, "spamgate_downstream_down_total", 1)
    assert sample(body, "spamgate_downstream_down_total", route="*", downstream=f"127.0.0.1:{a.port}") == 1
    a.start()
    time.sleep(1.1)
    assert _send(sg.port, ["bob@example.test"], "back")["DATA"][0] == 250
    assert (len(a.messages), len(b.messages)) == (2, 3)
    txs = sg.wait_log("transaction", count=5)
    assert [t["downstream"] for t in txs] == [
        f"127.0.0.1:{p}" for p in (a.port, b.port, b.port, b.port, a.port)
    ]
    assert {t["route"] for t in txs} == {"*"}
    assert not a.state.sequence_errors
    assert not b.state.sequence_errors


def test_all_down_is_451_4_4_1(spamgate_factory: Factory, sinks: list[Sink]) -> None:
    a, b = sinks
    route = {"domains": ["*"], "downstreams": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
    sg = spamgate_factory({"relay": {"routes": [route], "down_time": "30s"}})
    a.stop()
    b.stop()
    for _ in range(2):  # the first finds both down, the second skips both at once
        code, text = _send(sg.port, ["bob@example.test"])["MAIL"]
        assert code == 451, text
        assert text.startswith(b"4.4.1 [ref "), text


def test_routes_by_domain_and_452_for_a_second_route(spamgate_factory: Factory, sinks: list[Sink]) -> None:
    """One transaction, one route: the other route's recipients get 452 4.5.3 and come back alone."""
    a, b = sinks
    routes = [{"domains": ["example.org"], "downstreams": [f"127.0.0.1:{b.port}"]}]
    relay = {"downstream": f"127.0.0.1:{a.port}", "routes": routes, "local_domains": DOMAINS}
    sg = spamgate_factory({"relay": relay})
    got = _send(sg.port, ["bob@example.test", "carol@example.org", "dave@example.test"])
    assert got["MAIL"] == (250, b"2.1.0 Sender ok")
    assert got["bob@example.test"][0] == 250
    code, text = got["carol@example.org"]
    assert code == 452
    assert text.startswith(b"4.5.3 [ref ")
    assert b"new transaction" in text
    assert got["dave@example.test"][0] == 250
    assert got["DATA"][0] == 250
    assert [m.rcpts for m in a.messages] == [["bob@example.test", "dave@example.test"]]
    assert _send(sg.port, ["carol@example.org"])["DATA"][0] == 250
    assert [m.rcpts for m in b.messages] == [["carol@example.org"]]
    assert b.messages[0].mail_from == "alice@sender.test"
    # The route starts with the first recipient the policy accepted, whatever its order.
    got = _send(sg.port, ["carol@example.org", "bob@example.test"])
    assert got["bob@example.test"][0] == 452
    assert [m.rcpts for m in b.messages][-1] == ["carol@example.org"]
    txs = sg.wait_log("transaction", count=3)
    assert [t["route"] for t in txs] == ["default", "example.org", "example.org"]
    assert not a.state.sequence_errors
    assert not b.state.sequence_errors


def test_downstream_refusing_mail_answers_the_first_rcpt(
    spamgate_factory: Factory, sinks: list[Sink]
) -> None:
    """With routes by domain MAIL goes out at the first RCPT: its refusal is that RCPT's reply."""
    a, b = sinks
    routes = [{"domains": ["example.org"], "downstreams": [f"127.0.0.1:{b.port}"]}]
    sg = spamgate_factory(
        {"relay": {"downstream": f"127.0.0.1:{a.port}", "routes": routes, "local_domains": DOMAINS}}
    )
    b.state.fail_at["mail"] = "553 5.7.1 Sender refused"
    got = _send(sg.port, ["carol@example.org"])
    assert got["MAIL"][0] == 250
    assert got["carol@example.org"] == (553, b"5.7.1 Sender refused")
    assert "DATA" not in got
    assert not b.messages


def test_weighted_spreads_over_both(spamgate_factory: Factory, sinks: list[Sink]) -> None:
    a, b = sinks
    route = {
        "domains": ["*"],
        "downstreams": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"],
        "balance": "weighted",
        "weights": [1, 1],
    }
    sg = spamgate_factory({"relay": {"routes": [route], "pool_size": 0}})
    for i in range(16):
        assert _send(sg.port, ["bob@example.test"], f"w{i}")["DATA"][0] == 250
    assert len(a.messages) + len(b.messages) == 16
    assert a.messages  # 2 * 0.5**16: never all on one
    assert b.messages


def test_mx_route_uses_our_resolver(
    spamgate_factory: Factory, sinks: list[Sink], dns_server: DnsTestServer
) -> None:
    """'mx:PORT': the recipient domain's MX hosts, in preference order, looked up by spamgate."""
    a, b = sinks
    dns_server.add("sender.test", "MX", "10 mail.sender.test.")
    dns_server.add("mail.sender.test", "A", "127.0.0.1")
    dns_server.add("mx.test", "MX", "10 mx1.mx.test.")
    dns_server.add("mx.test", "MX", "20 mx2.mx.test.")
    dns_server.add("mx1.mx.test", "A", "127.0.0.1")
    dns_server.add("mx2.mx.test", "A", "127.0.0.2")
    c2 = Sink(host="127.0.0.2", port=a.port).start()  # the second MX on the same port
    try:
        routes = [{"domains": ["mx.test"], "downstreams": [f"mx:{a.port}"]}]
        cfg = {
            "relay": {"downstream": f"127.0.0.1:{b.port}", "routes": routes, "local_domains": DOMAINS},
            "dns": {"nameservers": [dns_server.address], "timeout": "300ms", "retries": 0},
        }
        sg = spamgate_factory(cfg)
        got = _send(sg.port, ["x@mx.test"])
        assert got.get("DATA", (0,))[0] == 250, (got, sg.stderr()[-1500:])
        assert [m.rcpts for m in a.messages] == [["x@mx.test"]]
        a.stop()  # the preferred MX is down: the next one takes it
        assert _send(sg.port, ["y@mx.test"])["DATA"][0] == 250
        assert [m.rcpts for m in c2.messages] == [["y@mx.test"]]
        assert not b.messages
    finally:
        c2.close()


@pytest.mark.parametrize(
    ("routes", "path"),
    [
        ([{"domains": ["a.test"], "downstreams": []}], "relay.routes[0].downstreams"),
        ([{"domains": [], "downstreams": ["127.0.0.1:25"]}], "relay.routes[0].domains"),
        ([{"domains": ["a.test"], "downstreams": ["127.0.0.1:x"]}], "relay.routes[0].downstreams[0]"),
        (
            [{"domains": ["a.test"], "downstreams": ["127.0.0.1:25"], "weights": [1, 2]}],
            "relay.routes[0].weights",
        ),
        ([{"domains": ["a.test"], "downstreams": ["mx:", "127.0.0.1:25"]}], "relay.routes[0].downstreams"),
        (
            [
                {"domains": ["a.test"], "downstreams": ["127.0.0.1:25"]},
                {"domains": ["A.test"], "downstreams": ["lmtp:h:24"]},
            ],
            "relay.routes[1].domains",
        ),
    ],
)
def test_bad_routes_are_config_errors(routes: list[dict[str, object]], path: str) -> None:
    """A bad route is refused when the configuration is loaded (check-config, reload), naming the key."""
    from proxy.app import build_generation
    from proxy.config.fields import ConfigError
    from proxy.config.loader import from_dict

    with pytest.raises(ConfigError) as err:
        build_generation(from_dict({"relay": {"routes": routes}}))
    assert err.value.path == path


def test_route_lookup_is_one_dict_lookup() -> None:
    from proxy.config.loader import from_dict
    from proxy.relay.router import Router

    routes = [{"domains": ["Example.ORG.", "*"], "downstreams": ["127.0.0.1:25", "lmtp:127.0.0.1:24"]}]
    router = Router(from_dict({"relay": {"routes": routes}}).relay, "mx.test")
    assert router.route_for("example.org") is router.route_for("other.test") is router.default
    assert router.default.one_rcpt
    assert [e.kind for e in router.default.endpoints] == ["smtp", "lmtp"]


def test_failover_on_timeouts(spamgate_factory: Factory, sinks: list[Sink]) -> None:
    """A downstream slower than connect_timeout (greeting) or command_timeout (MAIL) is skipped."""
    a, b = sinks
    route = {"domains": ["*"], "downstreams": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
    relay = {"routes": [route], "down_time": "300ms", "connect_timeout": "500ms", "command_timeout": "500ms"}
    sg = spamgate_factory({"relay": {**relay, "pool_size": 0}})
    for stage in ("greeting", "mail"):
        a.state.delays = {stage: 2.0}
        got = _send(sg.port, ["bob@example.test"], f"slow {stage}")
        assert got["MAIL"][0] == 250, got
        assert got["DATA"][0] == 250, got
        time.sleep(0.4)  # past down_time: the slow one is tried again next time
    assert not a.messages
    assert len(b.messages) == 2
    assert len(sg.events("downstream_down")) == 2


def test_failover_inside_one_client_session(spamgate_factory: Factory, sinks: list[Sink]) -> None:
    """The downstream dies between two transactions of one client session: the second fails over."""
    a, b = sinks
    route = {"domains": ["*"], "downstreams": [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]}
    sg = spamgate_factory({"relay": {"routes": [route], "down_time": "30s"}})
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        for i in range(3):
            assert c.mail("alice@sender.test")[0] == 250
            assert c.rcpt("bob@example.test")[0] == 250
            assert c.data(message(f"in session {i}"))[0] == 250
            if i == 0:
                a.stop()  # drops the downstream session spamgate holds for this client
    assert (len(a.messages), len(b.messages)) == (1, 2)
    assert not b.state.sequence_errors
