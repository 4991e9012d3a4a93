"""One SMTP command line: its verb and argument, or why it is not a command.

RFC 5321 2.4 and 4.1.1: a command is a verb, optionally a space and an argument, then CRLF.
Control characters have no place in a command: a CR, NUL or escape inside ``MAIL FROM:<...>``
would travel on to the downstream and into our own headers, so a line that holds one is
refused as a whole (501). A horizontal tab is tolerated as white space, as Postfix does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class CommandError(ValueError):
    """The line is not a well-formed command; ``reason`` is 'control' or 'verb'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Command:
    verb: str  # upper case ASCII
    arg: str  # stripped; non-UTF-8 bytes kept as surrogate escapes


def parse_command(line: bytes) -> Command:
    """Parse one line (with or without its CRLF). Raises :class:`CommandError`."""
    if line.endswith(b"\n"):
        line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
    if _CONTROL.search(line):
        raise CommandError("control")
    verb_bytes, _, arg_bytes = line.replace(b"\t", b" ").partition(b" ")
    if not verb_bytes.isascii() or not verb_bytes.isalpha():
        raise CommandError("verb")
    return Command(verb_bytes.decode("ascii").upper(), arg_bytes.decode("utf-8", "surrogateescape").strip())
