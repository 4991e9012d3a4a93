"""The metrics hooks the rest of the code calls. Cheap no-ops until :func:`enable` installs
Prometheus collectors (see ``[metrics]``); callers never import prometheus_client themselves.

Contract:
- ``dns_query``, ``list_health``, ``store_error`` may be called from anywhere, any time; before
  :func:`enable` (or with ``[metrics] listen = ""``) they return at once.
- :func:`on_transaction` and :func:`on_close` are the ``Services.on_transaction`` /
  ``Services.on_close`` callbacks (registered by :func:`proxy.app.build_services` when enabled);
  they feed every session-level series from the Transaction/Connection, so the session code
  carries no metrics calls. Label children are bound once and cached: a transaction costs a
  few dictionary lookups and counter increments.
- With several worker processes, the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before
  forking (:func:`multiprocess_dir`); every worker writes its own files there and the worker
  serving the admin listener exposes the aggregate (:func:`registry`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.model import Connection, Transaction

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SIZE_BUCKETS = (1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# Enhanced codes of the replies spamgate itself gives when the downstream fails.
_DOWNSTREAM_FAULTS = {"4.4.1": "unavailable", "4.4.2": "lost", "4.7.5": "tls"}


class _Metrics:
    """All collectors of one process, with cached label children for the hot path."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        multi = bool(os.environ.get(MULTIPROC_ENV))
        self.multi = multi
        # In multiprocess mode the values live in files; this registry only anchors them.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        if not multi:  # process_* series (CPU, RSS, open fds); not available per worker file
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=reg)
        self.connections = Counter(
            "spamgate_connections", "Client connections, by close reason.", ["closed"], registry=reg
        )
        self.transactions = Counter(
            "spamgate_transactions",
            "Mail transactions (MAIL..end), by outcome and action.",
            ["outcome", "action"],
            registry=reg,
        )
        self.actions = Counter(
            "spamgate_actions",
            "Verdicts by the SMTP stage that ended the transaction or connection, and action.",
            ["stage", "action"],
            registry=reg,
        )
        self.symbols = Counter("spamgate_symbol_hits", "Fired symbols, by name.", ["symbol"], registry=reg)
        self.dns = Counter(
            "spamgate_dns_queries",
            "DNS queries by type and outcome (ok, nxdomain, timeout, error, cache_hit).",
            ["qtype", "outcome"],
            registry=reg,
        )
        self.dns_seconds = Histogram(
            "spamgate_dns_query_seconds",
            "DNS query latency (answers from the cache excluded), by type.",
            ["qtype"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.list_health = Gauge(
            "spamgate_list_healthy",
            "1 when a DNS list answered its last probe correctly, 0 when it is disabled.",
            ["zone"],
            registry=reg,
            multiprocess_mode="mostrecent" if multi else "all",
        )
        self.downstream_seconds = Histogram(
            "spamgate_downstream_seconds",
            "Time the downstream took to answer, by phase (mail: MAIL..reply, data: DATA..final reply).",
            ["phase"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.downstream_errors = Counter(
            "spamgate_downstream_errors",
            "Downstream failures answered 451 to the client (unavailable, lost, tls).",
            ["kind"],
            registry=reg,
        )
        self.xclient_refused = Counter(
            "spamgate_xclient_refused",
            "XCLIENT the downstream refused (refused); with relay.xclient_mode = required also the mail"
            " tempfailed because XCLIENT was not offered (not_offered) or relay.xclient is false (disabled).",
            ["reason"],
            registry=reg,
        )
        self.downstream_down = Counter(
            "spamgate_downstream_down",
            "A downstream of a route with several marked down for relay.down_time (failover to the next).",
            ["route", "downstream"],
            registry=reg,
        )
        self.table_entries = Gauge(
            "spamgate_table_entries",
            "Entries in a routing table (domains, recipients, access) after its last load.",
            ["table"],
            registry=reg,
            multiprocess_mode="mostrecent" if multi else "all",
        )
        self.table_loads = Counter(
            "spamgate_table_loads",
            "Loads of a routing table, at start and on change (outcome ok or failed: the old contents stay).",
            ["table", "outcome"],
            registry=reg,
        )
        self.store_errors = Counter(
            "spamgate_store_errors",
            "Store calls that failed or timed out, by backend and operation.",
            ["backend", "operation"],
            registry=reg,
        )
        self.message_size = Histogram(
            "spamgate_message_size_bytes",
            "Size of received messages (DATA).",
            buckets=_SIZE_BUCKETS,
            registry=reg,
        )
        self.loop_lag = Histogram(
            "spamgate_event_loop_lag_seconds",
            "How late the event loop woke a periodic timer (sleep overshoot).",
            buckets=_LAG_BUCKETS,
            registry=reg,
        )
        self.history_dropped = Counter(
            "spamgate_history_dropped",
            "Transactions not written to the console's history because its queue was full.",
            registry=reg,
        )
        self.open_connections = Gauge(
            "spamgate_open_connections",
            "Client connections open now.",
            registry=reg,
            multiprocess_mode="livesum" if multi else "all",
        )
        self._conn: dict[str, Any] = {}
        self._txn: dict[tuple[str, str], Any] = {}
        self._act: dict[tuple[str, str], Any] = {}
        self._sym: dict[str, Any] = {}
        self._dns: dict[tuple[str, str], Any] = {}
        self._dns_s: dict[str, Any] = {}
        self._ds_mail = self.downstream_seconds.labels("mail")
        self._ds_data = self.downstream_seconds.labels("data")
        self.sharing = Counter(
            "spamgate_sharing_events",
            "Learn-and-share events: trap_hit, penalty_added, penalty_refused, rcpt_cached, "
            "rcpt_cache_hit, dictionary_attack, feed_match, report_sent.",
            ["event"],
            registry=reg,
        )

    def child(self, cache: dict[Any, Any], metric: Any, key: Any) -> Any:
        c = cache.get(key)
        if c is None:
            c = cache[key] = metric.labels(*key) if isinstance(key, tuple) else metric.labels(key)
        return c


_m: _Metrics | None = None


def enabled() -> bool:
    return _m is not None


def enable() -> None:
    """Create the collectors of this process (idempotent)."""
    global _m
    if _m is not None:
        return
    if os.environ.get(MULTIPROC_ENV):
        # ValueClass is chosen when prometheus_client is imported; make sure it saw the env.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _m = _Metrics()


def registry() -> Any:
    """The registry the admin listener exposes: this process, or the aggregate of all workers."""
    assert _m is not None
    if _m.multi:
        from prometheus_client import CollectorRegistry, multiprocess

        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
        return reg
    return _m.registry


def read_samples(names: tuple[str, ...]) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of the series whose sample name starts with one of ``names``,
    aggregated like /metrics. Reads files in multiprocess mode: call it in a thread."""
    if _m is None:
        return []
    out = []
    for family in registry().collect():
        for s in family.samples:
            if s.name.startswith(names):
                out.append((s.name, dict(s.labels), float(s.value)))
    return out


def mark_process_dead(pid: int) -> None:
    """Called by the supervisor when a worker exits (multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# -- hooks called by other subsystems ------------------------------------------------------


def dns_query(qtype: str, outcome: str, seconds: float) -> None:
    """One DNS query: outcome is 'ok', 'nxdomain', 'timeout', 'error' or 'cache_hit'."""
    m = _m
    if m is None:
        return
    m.child(m._dns, m.dns, (qtype, outcome)).inc()
    if outcome != "cache_hit":
        m.child(m._dns_s, m.dns_seconds, qtype).observe(seconds)


def list_health(zone: str, healthy: bool) -> None:
    """A DNS list's health after a probe (False: disabled, not trusted)."""
    if _m is not None:
        _m.list_health.labels(zone).set(1 if healthy else 0)


def xclient_refused(reason: str) -> None:
    """XCLIENT refused ('refused'), or required and not offered ('not_offered') or off ('disabled')."""
    if _m is not None:
        _m.xclient_refused.labels(reason).inc()


def history_dropped() -> None:
    """A transaction the console's history had no room for (its write queue was full)."""
    if _m is not None:
        _m.history_dropped.inc()


def downstream_down(route: str, downstream: str) -> None:
    """A downstream marked down: the route fails over to its next one."""
    if _m is not None:
        _m.downstream_down.labels(route, downstream).inc()


def table_loaded(table: str, entries: int | None) -> None:
    """A routing table (re)loaded with ``entries`` entries, or failed to load (None)."""
    if _m is None:
        return
    if entries is None:
        _m.table_loads.labels(table, "failed").inc()
        return
    _m.table_loads.labels(table, "ok").inc()
    _m.table_entries.labels(table).set(entries)


def store_error(backend: str, operation: str) -> None:
    """A store call that failed or timed out."""
    if _m is not None:
        _m.store_errors.labels(backend, operation).inc()


def sharing_event(event: str) -> None:
    """A spamtrap hit, penalty, recipient-cache or feed event (see the counter's help)."""
    if _m is not None:
        _m.sharing.labels(event).inc()


# -- session callbacks (Services.on_transaction / on_close) -------------------------------


def on_transaction(conn: Connection, txn: Transaction, outcome: str) -> None:
    m = _m
    if m is None:
        return
    action = txn.action or "accept"
    m.child(m._txn, m.transactions, (outcome, action)).inc()
    # Actions by stage: the verdicts spamgate's policy applied (not the downstream's refusals).
    if "receive" in txn.stage_ms:
        m.child(m._act, m.actions, ("data", action)).inc()
    elif action in ("tempfail", "reject") and not txn.rcpts:
        m.child(m._act, m.actions, ("mail", action)).inc()
    for r in txn.rcpts:
        if r.refused_by:
            m.child(m._act, m.actions, ("rcpt", r.refused_by)).inc()
    for h in txn.notes.get("hits", txn.hits):
        m.child(m._sym, m.symbols, h.name).inc()
    if txn.size:
        m.message_size.observe(txn.size)
    st = txn.stage_ms
    t = st.get("downstream_mail")
    if t is not None:
        m._ds_mail.observe(t / 1000)
    t = st.get("downstream_data")
    if t is not None:
        m._ds_data.observe(t / 1000)
    reply = txn.final_reply
    if reply is not None and reply.code == 451:
        kind = _DOWNSTREAM_FAULTS.get(reply.enhanced)
        if kind is not None and "[ref " in reply.text:
            m.downstream_errors.labels(kind).inc()


def on_close(conn: Connection) -> None:
    m = _m
    if m is None:
        return
    m.child(m._conn, m.connections, conn.notes.get("closed", "closed")).inc()
    if conn.txn_count == 0:  # otherwise already counted with each transaction
        for h in conn.hits:
            m.child(m._sym, m.symbols, h.name).inc()
    for stage in ("connect", "helo"):
        verdict = conn.notes.get(f"{stage}_verdict")
        if verdict is not None and verdict.action.value >= 2:  # tempfail or reject
            m.child(m._act, m.actions, (stage, verdict.action.label)).inc()


# -- event-loop lag ----------------------------------------------------------------------------


async def watch_loop(open_sessions: Callable[[], int], interval: float = 0.5) -> None:
    """Forever (cancel to stop): measure how late the loop wakes a sleeping task and sample the
    number of open client connections."""
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(interval)
        lag = time.monotonic() - t0 - interval
        if _m is not None:
            _m.loop_lag.observe(max(lag, 0.0))
            _m.open_connections.set(open_sessions())
