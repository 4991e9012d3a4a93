"""An authoritative test DNS server on 127.0.0.1 (UDP and TCP on the same port), in threads.

It serves records from a plain Python structure that tests change at any time:

- ``srv.add(name, rtype, value, ttl=60)``: A, AAAA, PTR, CNAME, NS (value: address or name),
  MX (value ``"10 mx.example."``), TXT (value: one string, or a list of strings = one record
  made of several character-strings). Adding the same name/type again adds another record.
- ``srv.remove(name, rtype=None)``: forget a name's records (of one type, or all).
- ``srv.load_zone_dict({"example.test": {"MX": ["10 mx.example.test."], "A": "192.0.2.1"}})``
- ``srv.drop(suffix)``: queries for names under ``suffix`` get no answer (client timeouts).
- ``srv.servfail(suffix)``: they get SERVFAIL. ``srv.clear_faults()`` undoes both.
- ``srv.queries``: every query received, as ``(name, rtype)`` with the name lower case and
  without the trailing dot; ``srv.count(name, rtype=None)`` counts them.

Answers: a known name without records of the asked type -> NOERROR with no answer (NODATA);
an unknown name -> NXDOMAIN. CNAMEs are followed inside the zone for other types. Names are
case-insensitive. UDP answers over 512 bytes (or the EDNS size) are truncated (TC) so clients
retry over TCP. The fixture ``dns_server`` (function scope) starts one per test.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord

_RDATA: dict[str, Any] = {"A": A, "AAAA": AAAA, "PTR": PTR, "CNAME": CNAME, "NS": NS}


def wire_name(qname: Any) -> str:
    """The query name as its raw labels (dnslib's str() escapes spaces as \\032)."""
    return ".".join(bytes(label).decode("latin-1") for label in qname.label).lower()


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


class DnsTestServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.records: dict[str, dict[str, list[tuple[Any, int]]]] = {}
        self.queries: list[tuple[str, str]] = []
        self._drop: set[str] = set()
        self._servfail: set[str] = set()
        self._lock = threading.Lock()
        self._udp: socketserver.ThreadingUDPServer | None = None
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._threads: list[threading.Thread] = []

    # --- zone -------------------------------------------------------------------------------
    def add(self, name: str, rtype: str, value: Any, ttl: int = 60) -> DnsTestServer:
        rtype = rtype.upper()
        if rtype == "MX":
            pref, host = str(value).split(None, 1)
            rdata: Any = MX(host, int(pref))
        elif rtype == "TXT":
            parts = [value] if isinstance(value, str | bytes) else list(value)
            rdata = TXT([p.encode() if isinstance(p, str) else p for p in parts])
        elif rtype in _RDATA:
            rdata = _RDATA[rtype](value)
        else:
            raise ValueError(f"unsupported record type {rtype}")
        with self._lock:
            self.records.setdefault(_norm(name), {}).setdefault(rtype, []).append((rdata, ttl))
        return self

    def remove(self, name: str, rtype: str | None = None) -> None:
        with self._lock:
            if rtype is None:
                self.records.pop(_norm(name), None)
            else:
                self.records.get(_norm(name), {}).pop(rtype.upper(), None)

    def load_zone_dict(self, zone: dict[str, dict[str, Any]], ttl: int = 60) -> DnsTestServer:
        """``{name: {rtype: value or [values]}}``; a TXT value that is a list is *one* record
        only when wrapped again: ``{"TXT": [["part1", "part2"]]}``."""
        for name, types in zone.items():
            for rtype, values in types.items():
                items = values if isinstance(values, list) else [values]
                for v in items:
                    self.add(name, rtype, v, ttl)
        return self

    def drop(self, suffix: str) -> None:
        with self._lock:
            self._drop.add(_norm(suffix))

    def servfail(self, suffix: str) -> None:
        with self._lock:
            self._servfail.add(_norm(suffix))

    def clear_faults(self) -> None:
        with self._lock:
            self._drop.clear()
            self._servfail.clear()

    def count(self, name: str, rtype: str | None = None) -> int:
        n = _norm(name)
        with self._lock:
            return sum(1 for q, t in self.queries if q == n and (rtype is None or t == rtype.upper()))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # --- answering ----------------------------------------------------------------------------
    @staticmethod
    def _under(name: str, suffixes: set[str]) -> bool:
        return any(name == s or name.endswith("." + s) for s in suffixes)

    def answer(self, data: bytes, limit: int | None) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        q = request.q
        qname = wire_name(q.qname)
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        with self._lock:
            self.queries.append((qname, qtype))
            if self._under(qname, self._drop):
                return None
            fail = self._under(qname, self._servfail)
            reply = request.reply()
            if fail:
                reply.header.rcode = RCODE.SERVFAIL
            elif qname not in self.records:
                reply.header.rcode = RCODE.NXDOMAIN
            else:
                name = qname
                for _ in range(8):  # follow CNAMEs inside the zone
                    types = self.records.get(name, {})
                    if qtype in types:
                        for rdata, ttl in types[qtype]:
                            reply.add_answer(RR(name + ".", q.qtype, rdata=rdata, ttl=ttl))
                        break
                    if "CNAME" in types and qtype != "CNAME":
                        rdata, ttl = types["CNAME"][0]
                        reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=rdata, ttl=ttl))
                        name = _norm(str(rdata.label))
                        continue
                    break
        packed: bytes = reply.pack()
        if limit is not None and len(packed) > limit:
            reply.rr = []
            reply.header.tc = 1
            packed = reply.pack()
        return packed

    # --- servers -----------------------------------------------------------------------------
    def start(self) -> DnsTestServer:
        owner = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                limit = 512
                with contextlib.suppress(Exception):
                    rec = DNSRecord.parse(data)
                    for rr in rec.ar:
                        if rr.rtype == QTYPE.OPT:
                            limit = max(512, rr.rclass)
                out = owner.answer(data, limit)
                if out is not None:
                    sock.sendto(out, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while True:
                        head = _recv_exact(conn, 2)
                        if head is None:
                            return
                        data = _recv_exact(conn, struct.unpack("!H", head)[0])
                        if data is None:
                            return
                        out = owner.answer(data, None)
                        if out is None:
                            continue
                        conn.sendall(struct.pack("!H", len(out)) + out)

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        for _ in range(20):
            tcp = socketserver.ThreadingTCPServer((self.host, 0), Tcp, bind_and_activate=True)
            port = tcp.server_address[1]
            try:
                udp = socketserver.ThreadingUDPServer((self.host, port), Udp)
            except OSError:
                tcp.server_close()
                continue
            break
        else:  # pragma: no cover - port exhaustion
            raise RuntimeError("no free port for the test DNS server")
        tcp.daemon_threads = True
        udp.daemon_threads = True
        self._tcp, self._udp, self.port = tcp, udp, port
        for srv in (udp, tcp):
            # poll_interval bounds how long close() waits for each loop to notice shutdown()
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for t in self._threads:
            t.join(timeout=2)
        self._threads.clear()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


@pytest.fixture
def dns_server() -> Iterator[DnsTestServer]:
    """A fresh authoritative DNS server per test; point spamgate at ``srv.address``."""
    srv = DnsTestServer().start()
    yield srv
    srv.close()
