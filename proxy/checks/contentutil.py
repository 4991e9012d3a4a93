"""What the content checks share: one analysis of the message per transaction.

:func:`content` returns the :class:`proxy.content.analyse.Content` of the transaction's message,
computed by the first content check that asks and awaited by the others
(:func:`proxy.auth.memo.once`, kept in ``txn.notes["content_task"]``). The bounds come from
``[checks.mime]`` (parts, depth, decoded bytes, text scanned) and ``[checks.attachments]``
(archive depth, size, members), whether those checks are enabled or not.

A message of ``[checks.mime] thread_above`` bytes or more is analysed in the content family's
own bounded thread pool (:class:`proxy.auth.pools.FamilyPool`, ``threads`` threads), so a big
message never holds the event loop for the whole parse; when every thread stays busy for
``thread_wait``, the result is an empty analysis with ``skipped = "busy"`` (the ``mime`` check
reports it) rather than a queue.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

import structlog

from proxy.auth import pools
from proxy.auth.dmarc import org_domain
from proxy.auth.memo import once
from proxy.checks.base import CheckContext, Services
from proxy.content.analyse import Bounds, Content, analyse
from proxy.content.mime import Limits, Mime

log = structlog.get_logger("spamgate.content")
NOTE = "content_task"
FAMILY = "content"


def bounds(config: Any) -> Bounds:
    m = config.checks["mime"]
    a = config.checks["attachments"]
    return Bounds(
        Limits(m.max_parts, m.max_depth, m.max_decoded_size),
        max_text=m.max_text_size,
        max_links=m.max_links,
        archive_depth=a.archive_depth,
        archive_bytes=a.archive_max_size,
        archive_members=a.archive_max_members,
    )


def pool(services: Services) -> pools.FamilyPool:
    """The content family's pool of this generation (shut down with the auth pools)."""
    family: dict[str, pools.FamilyPool] = services.extras.setdefault(pools.EXTRAS_KEY, {})
    found = family.get(FAMILY)
    if found is None:
        opts = services.config.checks["mime"]
        found = family[FAMILY] = pools.FamilyPool(FAMILY, opts.threads, opts.thread_wait)
    return found


@functools.lru_cache(maxsize=8192)
def registrable(host: str) -> str:
    """The registrable domain of a host name (Public Suffix List), ``""`` for a public suffix,
    an IP address as is; cached: links repeat the same few hosts."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return org_domain(host) or ""


async def content(ctx: CheckContext, services: Services) -> Content:
    """The analysis of this transaction's message, computed once."""
    assert ctx.txn is not None
    message = ctx.message
    config = services.config

    async def compute() -> Content:
        b = bounds(config)
        if len(message) < config.checks["mime"].thread_above:
            return analyse(message, b)
        try:
            result = await pool(services).run(analyse, message, b)
        except pools.Saturated as exc:
            return Content(Mime(), skipped=str(exc))
        log.debug("content_analysed", size=len(message), parts=len(result.mime.parts))
        return result

    return await once(ctx.txn.notes, NOTE, compute)
