"""Clients of the external content scanners: clamd, rspamd, SpamAssassin's spamd.

Each client speaks its scanner's protocol over asyncio streams and knows nothing of symbols or
policy: it returns a small answer dataclass or raises :class:`~proxy.scan.base.ScanError`
whose ``kind`` says what went wrong (``unavailable``, ``timeout``, ``busy``, ``protocol``,
``refused``, ``too_big``). The checks in ``proxy/checks/data/`` turn answers and errors into
symbols.

Every client is a :class:`~proxy.scan.base.Scanner`: one address (``host:port`` or a Unix
socket path), one timeout for the whole exchange (waiting for a connection slot included), at
most ``max_connections`` connections at once (a semaphore: a burst of messages waits for a
slot, it never opens a connection per message without bound), and a health state updated by
every exchange and by the readiness probe.
"""
