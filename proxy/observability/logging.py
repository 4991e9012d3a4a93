"""Structured logs: one JSON object per line (structlog + orjson), written without blocking.

Two canonical lines carry the story (see README "Reading the verdicts"):
- ``event="transaction"`` once per MAIL..end (delivered, rejected, deferred or aborted);
- ``event="connection"`` once per client connection, at close.
Plus operational events (start, reload, check errors, downstream failures).

``log.file`` is reopened at its path by :func:`reopen` (SIGUSR1, and SIGHUP with the reload):
after logrotate renamed the file, the next line goes to a new file at the configured path.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any

import orjson
import structlog

from proxy.config.schema import LogConfig

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_stream: IO[Any] | None = None
_path = ""


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def setup(cfg: LogConfig) -> None:
    global _stream, _path
    # The log file stays open for the life of the process; reopen() swaps what it points to.
    _path = cfg.file
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,  # log.exception(...) carries its traceback as a field
    ]
    if cfg.format == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=_orjson_dumps))
        _stream = open(cfg.file, "ab", buffering=0) if cfg.file else sys.stdout.buffer  # noqa: SIM115
        factory: Any = structlog.BytesLoggerFactory(_stream)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        _stream = open(cfg.file, "a", buffering=1) if cfg.file else sys.stdout  # noqa: SIM115
        factory = structlog.WriteLoggerFactory(_stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[cfg.level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiosmtpd logs every command at INFO (addresses: PII) and TLS failures as tracebacks.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def file_path() -> str:
    """The log file in use ('' for standard output). Set at start-up: a reload does not move it."""
    return _path


def reopen() -> bool:
    """Reopen ``log.file`` at its configured path, as logrotate expects after renaming it.

    The newly opened file takes over the descriptor of the old one (``dup2``), so every logger
    that holds the stream writes to the new file from the next line on, with nothing to
    rebuild. Returns False when logging goes to standard output (nothing to reopen) or the file
    cannot be opened; the old file then stays in use, and the failure is logged to it.
    """
    if not _path or _stream is None:
        return False
    try:
        fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        structlog.get_logger("spamgate").error("log_reopen_failed", file=_path, error=str(exc))
        return False
    try:
        _stream.flush()
        os.dup2(fd, _stream.fileno())
    finally:
        os.close(fd)
    return True
