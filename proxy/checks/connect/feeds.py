"""Peer feeds of bad addresses, imported into memory (connect stage): no DNS query per client.

``[checks.feeds] sources`` lists items ``name=location*weight``: ``location`` is a file path
or an HTTP(S) URL serving plain text, spamgate's JSON feed or an rbldnsd zone file
(:mod:`proxy.sharing.formats`); ``weight`` (default 1) is the score of ``FEED_LISTED`` when
the client address is in that feed (evidence ``name:entry``). Feeds are loaded at start and
refreshed every ``refresh`` (ETag / If-Modified-Since; a file by size and mtime). An update
that cannot be fetched or parsed is logged (``feed_invalid`` with the reason) and the last good
copy stays in use. A lookup is a bisect in sorted intervals (:mod:`proxy.sharing.intervals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from proxy.checks.base import Check, CheckContext, Services, Stage, Symbol, SymbolDef
from proxy.checks.options import OffByDefault
from proxy.config.fields import ConfigError, opt
from proxy.observability import metrics
from proxy.sharing.fetch import Fetched, fetch
from proxy.sharing.formats import FeedError, parse_feed
from proxy.sharing.intervals import IntervalSet

log = structlog.get_logger("spamgate.feeds")

FEED_LISTED = SymbolDef(
    "FEED_LISTED",
    "The client address is in an imported peer feed (evidence feed:entry; score: the feed's weight).",
    score=1.0,
    remedy="Ask the site publishing the feed (its name in the evidence) why your address is listed.",
)


@dataclass(frozen=True, slots=True)
class FeedsOptions(OffByDefault):
    sources: list[str] = opt(
        [],
        "Feeds as 'name=location*weight': a file path or http(s):// URL (plain text, JSON or rbldnsd zone).",
    )
    refresh: float = opt("10m", "How often each feed is fetched again.", kind="duration", minimum=1)
    timeout: float = opt("20s", "Time limit of one fetch.", kind="duration", minimum=0.1)
    max_size: int = opt("16M", "Largest feed accepted.", kind="size")
    max_entries: int = opt(1000000, "Most entries accepted in one feed.", minimum=1)


@dataclass(slots=True)
class Feed:
    name: str
    location: str
    weight: float
    entries: IntervalSet | None = None
    etag: str = ""
    last_modified: str = ""
    loaded_at: float = 0.0
    error: str = ""
    count: int = field(default=0)


def parse_source(item: str) -> Feed:
    name, sep, rest = item.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ConfigError("checks.feeds.sources", f"{item!r}: expected 'name=location*weight'")
    location, star, weight = rest.rpartition("*")
    if not star or "/" in weight:
        location, weight = rest, "1"
    try:
        w = float(weight)
    except ValueError:
        raise ConfigError("checks.feeds.sources", f"{item!r}: bad weight {weight!r}") from None
    return Feed(name.strip(), location.strip(), w)


class Feeds(Check):
    name = "feeds"
    stage = Stage.CONNECT
    symbols = (FEED_LISTED,)
    Options = FeedsOptions
    description = "Imported peer feeds (files or HTTP(S), ETag, last good copy), looked up in memory."
    io = False

    def __init__(self, options: FeedsOptions, services: Services) -> None:
        super().__init__(options, services)
        self.feeds = [parse_source(s) for s in options.sources]
        self._task: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        await asyncio.gather(*(self.refresh(f) for f in self.feeds))
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.refresh)
            await asyncio.gather(*(self.refresh(f) for f in self.feeds))

    async def refresh(self, feed: Feed) -> None:
        o: FeedsOptions = self.options
        run = self.services.run_blocking or _to_thread
        try:
            got: Fetched = await asyncio.wait_for(
                run(fetch, feed.location, feed.etag, feed.last_modified, o.timeout, o.max_size),
                o.timeout + 1,
            )
            if not got.changed:
                log.debug("feed_unchanged", feed=feed.name)
                return
            spans = await run(parse_feed, got.text, o.max_entries)
        except (FeedError, TimeoutError) as exc:
            feed.error = str(exc) or type(exc).__name__
            metrics.sharing_event("feed_invalid")
            log.warning("feed_invalid", feed=feed.name, error=feed.error, kept_entries=feed.count)
            return
        feed.entries = IntervalSet(spans)
        feed.count, feed.error = len(spans), ""
        feed.etag, feed.last_modified, feed.loaded_at = got.etag, got.last_modified, time.time()
        log.info("feed_updated", feed=feed.name, entries=feed.count)

    async def check(self, ctx: CheckContext) -> list[Symbol]:
        out = []
        for feed in self.feeds:
            entries = feed.entries
            if entries is None:
                continue
            label = entries.lookup(ctx.conn.ip)
            if label is not None:
                metrics.sharing_event("feed_match")
                out.append(FEED_LISTED.hit(f"{feed.name}:{label}", score=feed.weight))
        return out


async def _to_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)
