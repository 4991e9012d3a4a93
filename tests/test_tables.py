"""Domain, recipient and access tables from files: 550 5.1.1 at RCPT without asking the
downstream, access rules by recipient / sender / client, reload on change and on SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from proxy.state.tables import FingerprintSet, load_recipients, parse_access
from tests.harness.admin import sample, wait_sample
from tests.harness.clients import message, smtp
from tests.harness.proc import ROOT, Spamgate, free_port
from tests.harness.redis_server import RedisServer
from tests.harness.sink import Sink

Factory = Callable[..., Spamgate]

ACCESS = """\
# kind:key  action  text
from:@spammer.test   REJECT Go away
rcpt:vip@example.test OK
client:127.0.0.9     DEFER
from:meh@sender.test 7.5
client:127.0.8.0/24  REJECT Network blocked
"""


def _files(tmp: Path) -> dict[str, list[str]]:
    (tmp / "domains").write_text("catchall.test\nbig.test\n")
    (tmp / "recipients").write_text("bob@example.test\nvip@example.test\n@catchall.test\n")
    (tmp / "access").write_text(ACCESS)
    return {
        "local_domains_files": [str(tmp / "domains")],
        "recipient_files": [str(tmp / "recipients")],
        "access_files": [str(tmp / "access")],
    }


def _rcpt(
    port: int, rcpt: str, sender: str = "alice@sender.test", ip: str = "127.0.0.1"
) -> tuple[int, bytes]:
    with smtp(port, ip) as c:
        c.ehlo("client.sender.test")
        assert c.mail(sender)[0] == 250
        return c.rcpt(rcpt)


def test_tables_at_rcpt_and_reload_on_change(spamgate_factory: Factory, sink: Sink, tmp_path: Path) -> None:
    tables = {**_files(tmp_path), "reload_interval": "200ms"}
    admin = free_port()
    sg = spamgate_factory(
        {
            "relay": {"downstream": f"127.0.0.1:{sink.port}"},
            "tables": tables,
            "metrics": {"listen": f"127.0.0.1:{admin}"},
        }
    )
    assert _rcpt(sg.port, "bob@example.test")[0] == 250
    code, text = _rcpt(sg.port, "nobody@example.test")
    assert (code, text[:5]) == (550, b"5.1.1")
    assert b"User unknown in local recipient table" in text
    assert not [c for c in sink.state.commands if "nobody@" in c]  # never asked downstream
    assert _rcpt(sg.port, "anyone@catchall.test")[0] == 250  # local by file, '@domain' catch-all
    assert _rcpt(sg.port, "x@big.test")[0] == 250  # no recipient listed for it: the downstream decides
    assert _rcpt(sg.port, "x@other.test")[0] == 554  # not local: relay control
    code, text = _rcpt(sg.port, "bob@example.test", sender="x@spammer.test")
    assert code == 554
    assert text.startswith(b"5.7.1 [ref ")
    assert text.endswith(b"] Go away (from:@spammer.test)")
    assert _rcpt(sg.port, "bob@example.test", ip="127.0.0.9")[0] == 450
    assert _rcpt(sg.port, "bob@example.test", ip="127.0.8.7")[0] == 554
    # The most specific rule wins: the recipient's OK over the client's DEFER. OK lowers the
    # score (like the IP allowlist) but never skips relay control.
    assert _rcpt(sg.port, "vip@example.test", ip="127.0.0.9")[0] == 250
    with smtp(sg.port) as c:
        c.ehlo("client.sender.test")
        c.mail("meh@sender.test")
        c.rcpt("bob@example.test")
        assert c.data(message("scored"))[0] == 250
    assert b"X-Spam-Flag: YES" in sink.messages[-1].data
    assert "ACCESS_SCORE(7.5)" in sink.messages[-1].data.decode()
    # The file changes: re-read within reload_interval, no signal needed.
    with (tmp_path / "recipients").open("a") as f:
        f.write("nobody@example.test\n")
    sg.wait_log("table_reloaded", table="recipients")
    assert _rcpt(sg.port, "nobody@example.test")[0] == 250
    body = wait_sample(admin, "spamgate_table_loads_total", 2, table="recipients", outcome="ok")
    assert sample(body, "spamgate_table_entries", table="recipients") == 4  # bob, vip, @catchall, nobody
    # A broken file keeps the previous table (logged).
    (tmp_path / "access").write_text("nonsense\n")
    sg.wait_log("table_reload_failed", table="access")
    body = wait_sample(admin, "spamgate_table_loads_total", 1, table="access", outcome="failed")
    assert sample(body, "spamgate_table_loads_total", table="access", outcome="failed") >= 1
    assert _rcpt(sg.port, "bob@example.test", sender="x@spammer.test")[0] == 554


def test_tables_reload_on_sighup(spamgate_factory: Factory, sink: Sink, tmp_path: Path) -> None:
    tables = {**_files(tmp_path), "reload_interval": "1h"}
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "tables": tables})
    assert _rcpt(sg.port, "x@new.test")[0] == 554
    (tmp_path / "domains").write_text("catchall.test\nbig.test\nnew.test\n")
    sg.signal(signal.SIGHUP)
    sg.wait_log("reloaded")
    time.sleep(0.2)
    assert _rcpt(sg.port, "x@new.test")[0] == 250


def test_fingerprint_set_and_parsers(tmp_path: Path) -> None:
    s = FingerprintSet(f"user{i}@d{i % 7}.test" for i in range(5000))  # grows from 8 slots
    assert len(s) == 5000
    assert all(f"user{i}@d{i % 7}.test" in s for i in range(5000))
    assert not any(f"user{i}@d{i % 7}.test" in s for i in range(5000, 10000))
    assert s.nbytes <= 5000 * 32
    (tmp_path / "r").write_text("Bob@Example.TEST  # comment\n\n@all.test\n")
    rec = load_recipients([str(tmp_path / "r")])
    assert rec.known("BOB@example.test") is True
    assert rec.known("eve@example.test") is False
    assert rec.known("any@all.test") is True
    assert rec.known("x@unlisted.test") is None
    for bad in ("x REJECT", "to:a@b OK", "from:a@b MAYBE", "client:300.1.1.1 OK"):
        (tmp_path / "a").write_text(bad + "\n")
        with pytest.raises(ValueError, match=":1: "):
            parse_access(str(tmp_path / "a"))


def test_tables_from_sqlite(spamgate_factory: Factory, sink: Sink, tmp_path: Path) -> None:
    """The same tables from an SQLite database (domains, recipients, access), re-read on change."""
    db_path = tmp_path / "tables.db"
    db = sqlite3.connect(db_path)
    db.executescript(
        """
        CREATE TABLE domains (key TEXT PRIMARY KEY);
        CREATE TABLE recipients (key TEXT PRIMARY KEY);
        CREATE TABLE access (key TEXT PRIMARY KEY, action TEXT, text TEXT);
        INSERT INTO domains VALUES ('sql.test');
        INSERT INTO recipients VALUES ('bob@sql.test');
        INSERT INTO access VALUES ('from:@spammer.test', 'REJECT', 'Not from you');
        """
    )
    db.commit()
    src = f"sqlite:{db_path}"
    tables = {
        "local_domains_files": [src],
        "recipient_files": [src],
        "access_files": [src],
        "reload_interval": "200ms",
    }
    sg = spamgate_factory({"relay": {"downstream": f"127.0.0.1:{sink.port}"}, "tables": tables})
    assert _rcpt(sg.port, "bob@sql.test")[0] == 250
    assert _rcpt(sg.port, "eve@sql.test")[0] == 550
    code, text = _rcpt(sg.port, "bob@sql.test", sender="x@spammer.test")
    assert code == 554
    assert text.endswith(b"] Not from you (from:@spammer.test)")
    time.sleep(1.1)  # a new mtime second for the database file
    db.execute("INSERT INTO recipients VALUES ('eve@sql.test')")
    db.commit()
    db.close()
    sg.wait_log("table_reloaded", table="recipients")
    assert _rcpt(sg.port, "eve@sql.test")[0] == 250


def test_tables_from_redis_for_a_fleet(
    spamgate_factory: Factory, sink: Sink, redis_server: RedisServer
) -> None:
    """'redis:' sources: the store's Redis holds the tables; INCR tables:version re-reads them."""
    r = redis.Redis.from_url(redis_server.url)
    r.sadd("sg:tables:domains", "red.test")
    r.sadd("sg:tables:recipients", "bob@red.test")
    r.hset("sg:tables:access", "from:@spammer.test", "REJECT Nope")
    tables = {
        "local_domains_files": ["redis:"],
        "recipient_files": ["redis:"],
        "access_files": ["redis:"],
        "reload_interval": "200ms",
    }
    cfg = {
        "relay": {"downstream": f"127.0.0.1:{sink.port}"},
        "store": {"url": redis_server.url},
        "tables": tables,
    }
    sg = spamgate_factory(cfg)
    assert _rcpt(sg.port, "bob@red.test")[0] == 250
    assert _rcpt(sg.port, "eve@red.test")[0] == 550
    assert _rcpt(sg.port, "bob@red.test", sender="x@spammer.test")[0] == 554
    r.sadd("sg:tables:recipients", "eve@red.test")
    assert _rcpt(sg.port, "eve@red.test")[0] == 550  # not before the version moves
    r.incr("sg:tables:version")
    sg.wait_log("table_reloaded", table="recipients")
    assert _rcpt(sg.port, "eve@red.test")[0] == 250
    r.close()


def test_check_config_reads_the_tables(tmp_path: Path) -> None:
    """check-config reads every table as start would: a bad line is named with its file and
    line, a missing file is refused, good tables pass."""
    good, bad = tmp_path / "access", tmp_path / "bad-access"
    good.write_text("client:192.0.2.0/24 REJECT Network blocked\nfrom:<> DEFER\n")
    bad.write_text("from:<> DEFER\nclient:notanip REJECT x\n")
    (tmp_path / "recipients").write_text("bob@example.org\n")

    def check(**tables: list[str]) -> subprocess.CompletedProcess[str]:
        cfg = tmp_path / "c.toml"
        lines = [f"{k} = {json.dumps(v)}" for k, v in tables.items()]
        cfg.write_text('[relay]\ndownstream = "127.0.0.1:25"\n[tables]\n' + "\n".join(lines) + "\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "proxy", "check-config", "--config", str(cfg)]
        return subprocess.run(
            argv, check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
        )

    ok = check(access_files=[str(good)], recipient_files=[str(tmp_path / "recipients")])
    assert ok.returncode == 0, ok.stderr
    failed = check(access_files=[str(bad)])
    assert failed.returncode == 1
    assert f"{bad}:2:" in failed.stderr
    assert "notanip" in failed.stderr
    missing = check(recipient_files=[str(tmp_path / "nope")])
    assert missing.returncode == 1
    assert "nope" in missing.stderr
