"""The bench tools tell the truth: bench/loadgen.py against bench/faultsink.py with every fault
on (what one acknowledged, the other stored, from which address), and the soak's verdict
(bench/soak.py) on synthetic samples."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.harness.proc import free_port, terminate, wait_port

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))  # after everything else: bench's plain module names shadow nothing

import faultsink  # noqa: E402
import loadgen  # noqa: E402
import soak  # noqa: E402

FAULTS = {"tempfail_rcpt": 0.05, "tempfail_dot": 0.05, "drop_dot": 0.03, "drop_stored": 0.03, "slow": 0.05}
COUNT, SOURCES = 400, 50


def sink_cmd(port: int, delivered: Path) -> list[str]:
    cmd = [sys.executable, str(BENCH / "faultsink.py"), "--port", str(port), "--delivered", str(delivered)]
    for k, p in FAULTS.items():
        cmd += [f"--{k.replace('_', '-')}", str(p)]
    return [*cmd, "--slow-s", "0.2", "--seed", "7"]


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Any]:
    """400 messages from 50 client addresses, 2 per session, 2 processes, into the faulty sink."""
    port = free_port()
    sink = subprocess.Popen(sink_cmd(port, tmp_path / "delivered"), stdout=subprocess.PIPE)
    try:
        wait_port("127.0.0.1", port)
        flags = ["--sessions", "20", "--per-session", "2", "--sources", str(SOURCES), "--procs", "2"]
        flags += ["--session-timeout", "10", "--acked", str(tmp_path / "acked"), "--tag", "t"]
        res = loadgen.loadgen(port, COUNT, *flags)
        sink.send_signal(signal.SIGTERM)
        stats = json.loads(sink.communicate(timeout=10)[0])
    finally:
        terminate(sink)
    delivered, dup = faultsink.read_delivered([tmp_path / "delivered"])
    acked = loadgen.read_acked(sorted(tmp_path.glob("acked.*")))
    return {"res": res, "stats": stats, "acked": acked, "delivered": delivered, "dup": dup}


def problems(
    res: Mapping[str, int],
    stats: Mapping[str, int],
    acked: Mapping[str, str],
    delivered: Mapping[str, faultsink.Delivery],
) -> list[str]:
    """Everything that would make the load generator's or the sink's account untrue."""
    out = []
    if stats.get("sequence_errors"):
        out.append(f"{stats['sequence_errors']} commands out of sequence at the sink")
    rec = faultsink.reconcile(acked, delivered)
    if rec["lost"]:
        out.append(f"acknowledged but not at the sink: {rec['lost'][:5]}")
    if rec["replied_not_acked"]:
        out.append(f"the sink answered 250, loadgen did not record it: {rec['replied_not_acked'][:5]}")
    # the only delivered-not-acked messages: stored, then the connection dropped with no reply
    if set(acked) != delivered.keys() - set(rec["stored_noreply"]):
        out.append("acknowledged != stored minus stored-without-reply")
    if len(rec["stored_noreply"]) != stats.get("drop_stored", 0):
        n, dropped = len(rec["stored_noreply"]), stats.get("drop_stored")
        out.append(f"{n} stored without reply, the sink dropped {dropped}")
    if len(acked) != res["ok"]:
        out.append(f"{len(acked)} ids in --acked, {res['ok']} ok")
    if res["ok"] + res["tempfail"] + res["reject"] + res["errors"] != res["count"]:
        out.append(f"outcomes do not add up to the messages sent: {res}")
    if res["tempfail"] != stats.get("tempfail_rcpt", 0) + stats.get("tempfail_dot", 0):
        out.append(f"{res['tempfail']} tempfails seen, the sink sent {stats}")
    if res["errors"] != stats.get("drop_dot", 0) + stats.get("drop_stored", 0):
        out.append(f"{res['errors']} errors seen, the sink dropped {stats}")
    wrong_peer = [k for k, src in acked.items() if k in delivered and delivered[k].peer != src]
    if wrong_peer:
        out.append(f"the sink saw another client address than loadgen bound: {wrong_peer[:5]}")
    return out


def test_loadgen_and_faultsink_agree(run: dict[str, Any]) -> None:
    res, stats, acked, delivered = run["res"], run["stats"], run["acked"], run["delivered"]
    assert problems(res, stats, acked, delivered) == []
    assert res["count"] == COUNT
    assert res["reject"] == res["hung"] == res["late_errors"] == 0, res
    assert run["dup"] == 0
    # every fault fired, so each path above was taken
    assert all(stats.get(f, 0) > 0 for f in FAULTS), stats
    assert len(acked) > COUNT * 0.7
    # the client addresses: 50 distinct 127.x.y.z really bound, seen by the sink
    assert set(acked.values()) == set(loadgen.sources(SOURCES))
    assert stats["peers"] == SOURCES + 1  # and 127.0.0.1: wait_port's probe
    assert {d.peer for d in delivered.values()} <= set(loadgen.sources(SOURCES))

    # and the check can fail: each tampering is caught
    some = next(iter(acked))
    noreply = next(k for k, d in delivered.items() if not d.replied)
    tampered: list[tuple[Any, ...]] = [
        (res, stats, acked, {k: v for k, v in delivered.items() if k != some}),  # an acked id lost
        (res, stats, {k: v for k, v in acked.items() if k != some}, delivered),  # a 250 not recorded
        (res, stats, acked, {**delivered, noreply: replace(delivered[noreply], replied=True)}),
        (res, stats, {**acked, some: "127.0.0.1"}, delivered),  # another source address
        ({**res, "errors": res["errors"] - 1}, stats, acked, delivered),  # a message uncounted
        ({**res, "tempfail": res["tempfail"] + 1, "count": COUNT + 1}, stats, acked, delivered),
        (res, {**stats, "sequence_errors": 1}, acked, delivered),  # a client out of step
    ]
    for case in tampered:
        assert problems(*case), case[0]


# --- the soak's verdict on synthetic samples -------------------------------------------------

MIB = 2**20
WARMUP_S = 300.0


def samples(
    minutes: float = 30,
    rss: Callable[[float], float] = lambda t: 160_000 + 800 * math.sin(t / 47),
    fds: Callable[[float], float] = lambda t: 80 + 6 * math.sin(t / 13),
    store: Callable[[float], float] = lambda t: 34 * MIB + (t % 170) / 170 * 4 * MIB,  # WAL sawtooth
) -> list[dict[str, Any]]:
    ts = [10.0 * i for i in range(1, int(minutes * 6) + 1)]
    return [
        {"t": t, "rss_kb": round(rss(t)), "fds": round(fds(t)), "store_bytes": round(store(t))} for t in ts
    ]


def fill_then_flat(t: float) -> float:
    """14 MiB -> 38 MiB in the first 8 minutes (past the warm-up), then flat (the 30-minute soak)."""
    return 14 * MIB + min(t, 480) / 480 * 24 * MIB


def spike_at_end(t: float) -> float:
    return 38 * MIB + (12 * MIB if t >= 1800 else 0)


@pytest.mark.parametrize(
    ("kw", "lost", "hung"),
    [
        ({}, 0, 0),
        ({"store": fill_then_flat}, 0, 0),
        ({"store": spike_at_end}, 0, 0),  # one checkpoint held back at the last sample
        ({"store": lambda t: 38 * MIB if (t // 60) % 5 else 42 * MIB}, 0, 0),  # WAL truncated, regrown
    ],
    ids=["flat", "store-fills-then-flat", "store-one-spike", "store-truncating-wal"],
)
def test_verdict_passes(kw: dict[str, Any], lost: int, hung: int) -> None:
    v = soak.verdict(samples(**kw), WARMUP_S, lost, hung)
    assert v["failures"] == [], v
    assert v["store_judged"] is True
    assert any(c.startswith("store") for c in v["criteria"])


@pytest.mark.parametrize(
    ("kw", "lost", "hung", "failure"),
    [
        ({"rss": lambda t: 160_000 * (1 + 0.10 * t / 1800)}, 0, 0, "RSS grew"),
        ({"fds": lambda t: 80 + t / 60}, 0, 0, "descriptors grew"),
        ({"store": lambda t: 38 * MIB + t / 60 * MIB}, 0, 0, "store kept growing"),  # 1 MiB a minute
        ({"store": lambda t: 38 * MIB + max(0, t - 1000) / 30 * MIB}, 0, 0, "store kept"),
        ({}, 1, 0, "1 acknowledged messages missing"),
        ({}, 0, 1, "1 sessions hung"),
    ],
    ids=["rss", "fds", "store-linear", "store-late-growth", "lost", "hung"],
)
def test_verdict_fails(kw: dict[str, Any], lost: int, hung: int, failure: str) -> None:
    v = soak.verdict(samples(**kw), WARMUP_S, lost, hung)
    assert len(v["failures"]) == 1, v["failures"]
    assert v["failures"][0].startswith(failure), v["failures"]


def test_verdict_fails_on_commands_out_of_sequence() -> None:
    v = soak.verdict(samples(), WARMUP_S, 0, 0, sequence_errors=2)
    assert v["failures"] == ["2 commands out of sequence at the sink (503)"]


def test_faultsink_is_as_strict_as_postfix(tmp_path: Path) -> None:
    """A nested MAIL, RCPT or DATA outside a transaction gets Postfix's 503 and is counted; a
    transaction ends at its end of data (whatever the reply) and at RSET, not before."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "faultsink.py"), "--port", str(port)]
    sink = subprocess.Popen([*argv, "--delivered", str(tmp_path / "d")], stdout=subprocess.PIPE)

    try:
        wait_port("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s, s.makefile("rwb") as f:

            def cmd(line: bytes) -> bytes:
                f.write(line + b"\r\n")
                f.flush()
                while (reply := f.readline())[3:4] == b"-":
                    pass
                return reply[:3]

            f.readline()
            assert cmd(b"EHLO client.test") == b"250"
            assert cmd(b"RCPT TO:<b@x.test>") == b"503"  # no MAIL yet
            assert cmd(b"DATA") == b"503"
            assert cmd(b"MAIL FROM:<a@x.test>") == b"250"
            assert cmd(b"MAIL FROM:<a@x.test>") == b"503"  # nested
            assert cmd(b"RCPT TO:<b@x.test>") == b"250"
            assert cmd(b"DATA") == b"354"
            assert cmd(b"X-Bench-Id: one\r\n\r\nbody\r\n.") == b"250"
            assert cmd(b"RCPT TO:<b@x.test>") == b"503"  # the transaction ended with the message
            assert cmd(b"MAIL FROM:<a@x.test>") == b"250"
            assert cmd(b"RSET") == b"250"
            assert cmd(b"MAIL FROM:<a@x.test>") == b"250"  # RSET ended it
            assert cmd(b"DATA") == b"554"  # in a transaction, no recipient: PIPELINING's 554
            assert cmd(b"QUIT") == b"221"
        sink.send_signal(signal.SIGTERM)
        stats = json.loads(sink.communicate(timeout=10)[0])
    finally:
        terminate(sink)
    assert stats["sequence_errors"] == 4
    assert stats["stored"] == 1


def test_verdict_short_run_does_not_judge_the_store() -> None:
    """3 minutes with 1 of warm-up: 1 minute per half, shorter than one purge interval (5 min)."""
    growing = samples(minutes=3, store=lambda t: 38 * MIB + t * MIB)
    v = soak.verdict(growing, 60.0, 0, 0)
    assert v["failures"] == []
    assert v["store_judged"] is False
    assert "not judged" in v["store_note"]
    # the same samples, judged against a 30 s purge interval: the growth is caught
    assert soak.verdict(growing, 60.0, 0, 0, purge_interval_s=30)["failures"][0].startswith("store kept")


def test_verdict_needs_samples_after_the_warmup() -> None:
    v = soak.verdict(samples(minutes=5.5), WARMUP_S, 0, 0)
    assert v["failures"] == ["only 4 samples after the warm-up (need 6)"]
