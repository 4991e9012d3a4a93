"""Fetching one peer feed: a local file or an HTTP(S) URL, conditionally.

Runs in a worker thread (``services.run_blocking``): urllib and file reads block. An HTTP(S)
fetch sends ``If-None-Match`` / ``If-Modified-Since`` from the last good copy; ``304`` means
unchanged. A file is unchanged while its size and mtime are. Anything but 200/304, a body
over ``max_size`` or not UTF-8 raises :class:`~proxy.sharing.formats.FeedError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxy.sharing.formats import FeedError


@dataclass(frozen=True, slots=True)
class Fetched:
    changed: bool
    text: str = ""
    etag: str = ""
    last_modified: str = ""


def fetch(location: str, etag: str, last_modified: str, timeout: float, max_size: int) -> Fetched:
    if location.startswith(("http://", "https://")):
        return _http(location, etag, last_modified, timeout, max_size)
    path = location.removeprefix("file://")
    try:
        st = os.stat(path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        if stamp == etag:
            return Fetched(False, etag=etag)
        if st.st_size > max_size:
            raise FeedError(f"{st.st_size} bytes, over max_size {max_size}")
        with open(path, "rb") as f:
            body = f.read(max_size + 1)
    except OSError as exc:
        raise FeedError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
    return Fetched(True, _decode(body, max_size), stamp, "")


def _http(url: str, etag: str, last_modified: str, timeout: float, max_size: int) -> Fetched:
    import urllib.error  # only for HTTP(S) feeds (urllib.request is heavy to import)
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "spamgate-feed"})  # noqa: S310 - scheme checked
    if etag:
        req.add_header("If-None-Match", etag)
    if last_modified:
        req.add_header("If-Modified-Since", last_modified)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            if resp.status != 200:
                raise FeedError(f"HTTP {resp.status}")
            body = resp.read(max_size + 1)
            return Fetched(
                True,
                _decode(body, max_size),
                resp.headers.get("ETag", ""),
                resp.headers.get("Last-Modified", ""),
            )
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(False, etag=etag, last_modified=last_modified)
        raise FeedError(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FeedError(f"fetch failed: {reason}") from None


def _decode(body: bytes, max_size: int) -> str:
    if len(body) > max_size:
        raise FeedError(f"over max_size {max_size} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FeedError(f"not UTF-8 at byte {exc.start}") from None
