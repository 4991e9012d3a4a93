#!/usr/bin/env python3
"""Per-message cost of the metrics callbacks (the hot path added by ``[metrics]``).

Calls ``metrics.on_transaction`` and ``metrics.on_close`` the way a session does for one
delivered 4 KB message with three symbols, N times, and prints microseconds per message.

    .venv/bin/python bench/metrics_cost.py [N]
"""

from __future__ import annotations

import ipaddress
import sys
import time

from proxy.model import Connection, RcptResult, Transaction
from proxy.observability import metrics
from proxy.policy.engine import Hit
from proxy.replies import Reply


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    metrics.enable()
    conn = Connection("abcd1234", ipaddress.ip_address("192.0.2.1"), 1234, ("192.0.2.1", 1234))
    conn.notes["closed"] = "quit"
    txn = Transaction("abcd1234.1", "a@sender.test", {})
    txn.rcpts.append(RcptResult("b@example.test", {}, Reply(250, "2.1.5", "Ok"), True))
    txn.size = 4300
    txn.stage_ms.update(downstream_mail=0.4, receive=0.2, downstream_data=0.3)
    txn.final_reply = Reply(250, "2.0.0", "Ok: queued")
    txn.notes["hits"] = [Hit(f"SYM_{i}", "", 1.0, "x") for i in range(3)]
    t0 = time.perf_counter()
    for _ in range(n):
        metrics.on_transaction(conn, txn, "delivered")
        metrics.on_close(conn)
    per = (time.perf_counter() - t0) / n * 1e6
    print(f"metrics callbacks: {per:.2f} us per message (transaction + connection), n={n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
