"""Structured logs: one JSON object per line (structlog + orjson), written without blocking.

Two canonical lines carry the story (see README "Reading the verdicts"):
- ``event="transaction"`` once per MAIL..end (delivered, rejected, deferred or aborted);
- ``event="connection"`` once per client connection, at close.
Plus operational events (start, reload, check errors, downstream failures).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO

import orjson
import structlog

from proxy.config.schema import LogConfig

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_stream: BinaryIO | None = None


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str)


def setup(cfg: LogConfig) -> None:
    global _stream
    # The log file lives as long as the process.
    _stream = open(cfg.file, "ab", buffering=0) if cfg.file else sys.stdout.buffer  # noqa: SIM115
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,  # log.exception(...) carries its traceback as a field
    ]
    if cfg.format == "json":
        processors.append(structlog.processors.JSONRenderer(serializer=_orjson_dumps))
        factory: Any = structlog.BytesLoggerFactory(_stream)
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory = structlog.WriteLoggerFactory(sys.stdout if not cfg.file else open(cfg.file, "a"))  # noqa: SIM115
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[cfg.level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiosmtpd logs every command at INFO (addresses: PII) and TLS failures as tracebacks.
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
