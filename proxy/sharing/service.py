"""The export side at run time: the zone file schedule and ``/feed`` on the admin listener.

``[sharing] zone_file``: every ``zone_interval`` the entries of :mod:`.collect` are written as
an rbldnsd ``ip4set`` zone to a temporary file beside it and renamed over it (atomic: rbldnsd
never reads half a file; it reloads a changed file by itself). With several workers each
writes the same content; the rename keeps that safe.

``[sharing] feed_token``: ``GET /feed`` (plain text), ``/feed?format=json`` or
``?format=zone`` answers the same entries to a peer presenting the token
(``Authorization: Bearer <token>`` or ``?token=``); a wrong or missing token gets 403, and
without a configured token the path does not exist (404).

``[sharing] dmarc_record``: DMARC evaluations are recorded (:mod:`.dmarc_record`); with
``dmarc_relay`` and ``dmarc_send_interval`` the finished days' aggregate reports are sent
(:mod:`.dmarc_report`), else ``spamgate dmarc report`` sends or writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog

from proxy.sharing.collect import collect
from proxy.sharing.dmarc_record import DmarcRecorder, day_of
from proxy.sharing.formats import render_json, render_text, render_zone

log = structlog.get_logger("spamgate.sharing")

Response = tuple[int, str, bytes]


def write_atomic(path: str, text: str) -> None:
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


async def export_zone(store: Any, config: Any) -> int:
    """Write the zone file once; returns the number of entries."""
    sharing = config.sharing
    entries = await collect(store, config, sharing.max_entries)
    text = render_zone(entries, time.time(), sharing.zone_ttl)
    await asyncio.to_thread(write_atomic, sharing.zone_file, text)
    return len(entries)


def render(entries: list[Any], fmt: str) -> Response:
    now = time.time()
    if fmt == "json":
        return 200, "application/json", render_json(entries, now).encode()
    if fmt == "zone":
        return 200, "text/plain; charset=utf-8", render_zone(entries, now, 300).encode()
    return 200, "text/plain; charset=utf-8", render_text(entries, now).encode()


class SharingService:
    def __init__(self, services: Any) -> None:
        self.services = services
        self.config = services.config
        self._task: asyncio.Task[Any] | None = None
        self._dmarc: asyncio.Task[Any] | None = None
        sh = self.config.sharing
        if sh.feed_token:
            services.http_routes["/feed"] = self.feed
        self.recorder: DmarcRecorder | None = None
        if sh.dmarc_record:
            self.recorder = DmarcRecorder(services.store, services.resolver, sh.dmarc_keep)
            services.on_transaction.append(self.recorder.on_transaction)

    async def start(self) -> None:
        sh = self.config.sharing
        if sh.zone_file:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        if sh.dmarc_record and sh.dmarc_relay and sh.dmarc_send_interval > 0:
            self._dmarc = asyncio.get_running_loop().create_task(self._dmarc_loop())

    async def stop(self) -> None:
        for task in (self._task, self._dmarc):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.recorder is not None:
            await self.recorder.bg.drain()

    async def _dmarc_loop(self) -> None:
        """Yesterday's (UTC) reports, once the day is over; one worker of the fleet sends each."""
        while True:
            await asyncio.sleep(self.config.sharing.dmarc_send_interval)
            try:
                day = day_of(time.time()) - 1
                from proxy.sharing.dmarc_report import send_reports  # once a day: not at start

                await send_reports(self.services.store, self.services.resolver, self.config, day)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dmarc_reports_failed", error=f"{type(exc).__name__}: {exc}")

    async def _loop(self) -> None:
        while True:
            try:
                n = await export_zone(self.services.store, self.config)
                log.info("zone_exported", path=self.config.sharing.zone_file, entries=n)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store or the disk: try again next time
                log.warning("zone_export_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.config.sharing.zone_interval)

    async def feed(self, query: str, headers: dict[str, str]) -> Response:
        q = parse_qs(query)
        token = self.config.sharing.feed_token
        given = headers.get("authorization", "")
        given = given[7:].strip() if given[:7].lower() == "bearer " else (q.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), token.encode()):
            return 403, "text/plain; charset=utf-8", b"forbidden\n"
        entries = await collect(self.services.store, self.config, self.config.sharing.max_entries)
        return render(entries, (q.get("format") or ["text"])[0])
