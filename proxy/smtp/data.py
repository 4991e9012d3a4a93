"""The DATA stream: find its end, bound it, undo dot-stuffing, and say what is wrong with it.

``DataReader`` is fed the bytes that follow the 354 reply, in whatever pieces the network
delivers, and stops at the first CRLF.CRLF (RFC 5321 4.1.1.4): nothing else ends the data,
not LF.LF, not CR.CR, not a dot between NULs. Past ``limit`` bytes it stops holding data (it
keeps looking for the end, so the session can answer in step) and reports an overflow.

``unstuff`` removes the leading dot of every CRLF-delimited wire line (RFC 5321 4.5.2).
``inspect`` finds, without splitting the message into lines, what the session refuses:
bare CR or LF, NUL bytes, a line longer than the limit, a header block larger than its limit.
``normalize`` turns bare CR/LF into CRLF and drops NULs, for ``limits.bare_newline =
"normalize"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

END = b"\r\n.\r\n"


class DataReader:
    """Accumulates one message's wire bytes up to and excluding the final ``.CRLF``.

    ``feed`` returns True once the end of data was seen; ``message`` then holds the wire form
    (still dot-stuffed) ending with CRLF, and ``leftover`` what the client pipelined after it.
    """

    __slots__ = ("_buf", "_start", "discarded", "leftover", "limit", "message", "over_budget")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # A virtual CRLF in front, so a "." line at the very start of DATA ends it too.
        self._buf = bytearray(b"\r\n")
        self._start = 0
        self.discarded = 0  # bytes dropped once past the limit (or the budget)
        self.over_budget = False
        self.message = b""
        self.leftover = b""

    @property
    def held(self) -> int:
        """Bytes held right now (what counts against a memory budget)."""
        return len(self._buf)

    @property
    def overflow(self) -> bool:
        return self.discarded > 0 or len(self.message) > self.limit

    @property
    def size(self) -> int:
        """Wire size of the message (what was sent between 354 and the final dot)."""
        return self.discarded + len(self.message)

    def stop_holding(self) -> None:
        """Keep reading to the end of data, but hold no more of it (a memory budget ran out)."""
        self.over_budget = True
        self._drop()

    def _drop(self) -> None:
        buf = self._buf
        if len(buf) > 4:
            self.discarded += len(buf) - 4
            del buf[:-4]
        self._start = 0

    def feed(self, chunk: bytes | bytearray) -> bool:
        buf = self._buf
        buf += chunk
        idx = buf.find(END, self._start)
        if idx < 0:
            # Past the limit only when more than the virtual CRLF (2) and a terminator's
            # unfinished ".\r" (2) are held: a message of exactly the limit whose end of data
            # arrives in pieces is not an overflow.
            if self.over_budget or len(buf) > self.limit + 4:
                self._drop()
            self._start = max(0, len(buf) - 4)
            return False
        self.leftover = bytes(buf[idx + 5 :])
        if self.discarded:
            self.discarded += idx - 2 + 2  # the part before the end, less the virtual CRLF
            self.message = b""
        else:
            self.message = bytes(memoryview(buf)[2 : idx + 2])
        self._buf = bytearray()
        return True


def unstuff(wire: bytes) -> bytes:
    """Remove the transparency dot of every CRLF-delimited line (RFC 5321 4.5.2)."""
    if wire.startswith(b"."):
        wire = wire[1:]
    if b"\r\n." in wire:
        wire = wire.replace(b"\r\n.", b"\r\n")
    return wire


@dataclass(frozen=True, slots=True)
class Findings:
    bare_lf: int = 0
    bare_cr: int = 0
    nul: int = 0
    long_line: int = 0  # the length (with CRLF) of the first line over the limit, 0 if none
    header_size: int = 0  # the header block's size when over its limit, 0 if within

    @property
    def bare_newline(self) -> bool:
        return bool(self.bare_lf or self.bare_cr)


# The header block: field lines ("Name: value") and their folded continuation lines.
_HEADER_BLOCK = re.compile(rb"(?:[!-9;-~]+[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*)*")
_LONG_LINE: dict[int, re.Pattern[bytes]] = {}


def _long_line_re(max_line: int) -> re.Pattern[bytes]:
    pat = _LONG_LINE.get(max_line)
    if pat is None:
        # Anchored at line starts, so the scan is linear in the message size.
        pat = _LONG_LINE[max_line] = re.compile(rb"(?m)^[^\r\n]{%d,}" % (max_line - 1))
    return pat


def inspect(message: bytes, *, max_line: int, max_header: int) -> Findings:
    """What is wrong with an unstuffed message (CRLF line ends expected), in C-speed scans."""
    crlf = message.count(b"\r\n")
    lf = message.count(b"\n") - crlf
    cr = message.count(b"\r") - crlf
    nul = message.count(b"\x00")
    long_line = 0
    # The regex tries every position of the message (~20 ms per MiB); most messages have no
    # long line, which the longest LF-separated piece tells at C speed (~1 ms per MiB).
    if len(message) > max_line - 2 and max(map(len, message.split(b"\n"))) >= max_line - 1:
        m = _long_line_re(max_line).search(message)
        if m is not None:
            # The whole line's length, with its CRLF.
            end = message.find(b"\n", m.start())
            if end < 0:  # the last line, unterminated: counted with the CRLF it lacks
                long_line = len(message) - m.start() + 2
            else:  # a bare LF is counted as the CRLF it stands for
                long_line = end + 1 - m.start() + (message[end - 1 : end] != b"\r")
    header_size = 0
    if len(message) > max_header:
        m = _HEADER_BLOCK.match(message)  # stops at the first line that is not a header line
        if m is not None and m.end() > max_header:
            header_size = m.end()
    return Findings(lf, cr, nul, long_line, header_size)


def normalize(message: bytes) -> bytes:
    """Bare CR and bare LF become CRLF; NUL bytes are dropped."""
    if b"\x00" in message:
        message = message.replace(b"\x00", b"")
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
