"""Property tests of the SMTP syntax layer (proxy/smtp/): command lines, paths, the DATA stream.

Each property states what the session relies on, checked against a naive oracle written here
byte by byte. Hypothesis runs derandomized (the same examples on every run, no database) with
bounded example counts and no deadline, so the file is reproducible and takes a few seconds.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.smtp.address import PathError, is_valid_mailbox, parse_path
from proxy.smtp.command import Command, CommandError, parse_command
from proxy.smtp.data import DataReader, inspect, unstuff

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)

END = b"\r\n.\r\n"


def is_ascii_control(c: int) -> bool:
    return c < 0x20 or c == 0x7F


# -- command lines ----------------------------------------------------------------------------

CONTROLS = [c for c in range(0x20) if c != 0x09] + [0x7F]
# Bytes that make parse_command's cases: letters, white space, controls, UTF-8 and invalid UTF-8.
LINE_BYTES = st.lists(
    st.one_of(
        st.sampled_from(
            [b"MAIL", b"rcpt", b"NOOP", b"X1", b"9", b"_", b" ", b"\t", b":", b"<", b">", b"@"]
            + [b"\xc3\xa9", b"\xff"]
        ),
        st.sampled_from([bytes([c]) for c in CONTROLS]),
        st.binary(min_size=1, max_size=4),
    ),
    max_size=12,
).map(b"".join)
TERMINATORS = st.sampled_from([b"\r\n", b"\n", b""])


def line_body(line: bytes) -> bytes:
    """The line without its final CRLF or LF (what is left must hold no control character)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


@SETTINGS
@given(st.one_of(st.binary(max_size=80), st.builds(bytes.__add__, LINE_BYTES, TERMINATORS)))
def test_parse_command_total(line: bytes) -> None:
    """Any line: a Command with an upper-case ASCII-letter verb, or CommandError and nothing else;
    'control' exactly when the line (less its final CRLF/LF) holds a control character other
    than TAB, else 'verb' exactly when the first word is not ASCII letters."""
    body = line_body(line)
    has_control = any(is_ascii_control(c) and c != 0x09 for c in body)
    first_word = body.replace(b"\t", b" ").partition(b" ")[0]
    bad_verb = re.fullmatch(rb"[A-Za-z]+", first_word) is None
    if has_control or bad_verb:
        with pytest.raises(CommandError) as err:
            parse_command(line)
        assert err.value.reason == ("control" if has_control else "verb"), line
        return
    cmd = parse_command(line)
    assert re.fullmatch(r"[A-Z]+", cmd.verb), cmd
    assert cmd.verb == first_word.decode("ascii").upper()
    assert not any(is_ascii_control(ord(c)) for c in cmd.arg)


@SETTINGS
@given(
    st.binary(max_size=30),
    st.sampled_from(CONTROLS),
    st.binary(max_size=30),
    TERMINATORS,
)
def test_parse_command_control_anywhere(prefix: bytes, control: int, suffix: bytes, end: bytes) -> None:
    """A control character other than TAB anywhere before the final CRLF/LF -> CommandError('control')."""
    line = prefix + bytes([control]) + suffix + end
    if len(prefix) >= len(line_body(line)):
        return  # the control is the line's own final LF, or the CR of its final CRLF
    with pytest.raises(CommandError) as err:
        parse_command(line)
    assert err.value.reason == "control", line


ARG_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")),
    max_size=40,
).filter(lambda s: s == s.strip())


@SETTINGS
@given(
    st.from_regex(r"[A-Za-z]{1,12}", fullmatch=True),
    st.sampled_from([" ", "\t", "  ", " \t "]),
    ARG_TEXT,
    TERMINATORS,
)
def test_parse_command_round_trip(verb: str, sep: str, arg: str, end: bytes) -> None:
    """A generated valid command line parses back to its verb (upper case) and argument."""
    line = (verb + (sep + arg if arg else "")).encode("utf-8") + end
    assert parse_command(line) == Command(verb.upper(), arg)


# -- paths ------------------------------------------------------------------------------------

PATH_ALPHABET = st.sampled_from(list('<>"\\@ :=.,-aZ09+\t') + ["\x00", "\r", "\n", "\x7f", "\x1b", "é"])
PATH_TEXT = st.lists(PATH_ALPHABET, max_size=30).map("".join)
KEYWORD = st.sampled_from(["FROM", "TO"])


def unquoted_space(address: str) -> bool:
    """A space outside a quoted string (backslash escapes only inside quotes, RFC 5321 4.1.2)."""
    quoted = escaped = False
    for c in address:
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == " " and not quoted:
            return True
    return False


# The argument after "FROM:"/"TO:": free text, a bracketed path with parameters, a bare path.
PATH_REST = st.one_of(
    PATH_TEXT,
    st.builds(
        lambda sp, inner, params: f"{sp}<{inner}>{params}",
        st.sampled_from(["", " "]),
        PATH_TEXT,
        st.one_of(st.just(""), PATH_TEXT.map(lambda t: " " + t)),
    ),
    st.builds(lambda a, b: f"{a}@{b}", PATH_TEXT, PATH_TEXT),
)


@SETTINGS
@given(
    KEYWORD,
    st.one_of(
        st.text(max_size=40),
        st.builds(lambda k, rest: k + ":" + rest, st.sampled_from(["FROM", "to", "TO", "From"]), PATH_REST),
    ),
)
def test_parse_path_total(keyword: str, arg: str) -> None:
    """Any text: a Path or PathError, nothing else; a parsed address holds no control character
    and no space outside a quoted string, and parameter names are upper case."""
    try:
        path = parse_path(arg, keyword)
    except PathError:
        return
    assert not any(is_ascii_control(ord(c)) for c in path.address), (arg, path)
    assert not unquoted_space(path.address), (arg, path)
    for key in path.params:
        assert key == key.upper()
        assert re.fullmatch(r"[A-Z0-9][A-Z0-9-]*", key), key


ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
ATOM = st.text(alphabet=ATEXT, min_size=1, max_size=8)
DOT_ATOM = st.lists(ATOM, min_size=1, max_size=3).map(".".join)
QTEXT = [chr(c) for c in range(32, 127) if c not in (34, 92)]
SPECIALS = list('<>@ ,:;"\\')  # what a quoted local part may hide from a naive parser
QUOTED = st.lists(
    st.one_of(
        st.sampled_from(QTEXT),
        st.sampled_from([c for c in SPECIALS if c not in '"\\']),
        st.sampled_from(QTEXT + SPECIALS).map(lambda c: "\\" + c),
    ),
    max_size=10,
).map(lambda parts: '"' + "".join(parts) + '"')
LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
DOMAIN = st.one_of(
    st.lists(LABEL, min_size=1, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(lambda ip: f"[{ip}]"),
    st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip}]"),
)
MAILBOX = st.builds(lambda local, domain: f"{local}@{domain}", st.one_of(DOT_ATOM, QUOTED), DOMAIN).filter(
    lambda a: len(a.rpartition("@")[0]) <= 64
)
PARAM_KEY = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,10}", fullmatch=True)
PARAM_VALUE = st.one_of(st.none(), st.text(alphabet=[chr(c) for c in range(33, 127)], max_size=12))
# One spelling per parameter name (names are case-insensitive; the last one would win).
PARAMS = st.dictionaries(PARAM_KEY, PARAM_VALUE, max_size=4).map(
    lambda d: dict({k.upper(): (k, v) for k, v in d.items()}.values())
)


@SETTINGS
@given(
    KEYWORD,
    st.one_of(st.just(""), MAILBOX),
    PARAMS,
    st.sampled_from(["", " "]),
    st.sampled_from(["", "@relay.example:", "@a.example,@b.example:"]),
    st.booleans(),
    st.booleans(),
)
def test_parse_path_round_trip(
    keyword: str,
    address: str,
    params: dict[str, str | None],
    space: str,
    route: str,
    lower: bool,
    brackets: bool,
) -> None:
    """A valid mailbox (dot-atom or quoted local part, domain or address literal) with
    parameters parses back to the same address and parameters, in every accepted spelling:
    keyword in any case, a space after the colon, a source route, no angle brackets."""
    if address:
        assert is_valid_mailbox(address), address
    if not address or '"' in address:
        brackets = True  # the lenient bracket-less form is for plain addresses
    if not brackets:
        route = ""
    if not address:
        route = ""
    raw_params = "".join(f" {k}" + ("" if v is None else f"={v}") for k, v in params.items())
    path_text = f"<{route}{address}>" if brackets else address
    arg = f"{keyword.lower() if lower else keyword}:{space}{path_text}{raw_params}"
    path = parse_path(arg, keyword)
    assert path.address == address, arg
    assert path.params == {k.upper(): v for k, v in params.items()}, arg
    assert path.raw_params == raw_params.strip()


@SETTINGS
@given(
    KEYWORD,
    st.builds(lambda local, domain: f"{local}@{domain}", DOT_ATOM, DOMAIN),
    st.sampled_from([" ", "\t", "\x00", "\r", "\n", "\x1b", "\x7f", "\r\n"]),
    st.integers(0, 300),
    st.booleans(),
)
def test_parse_path_refuses_space_or_control(
    keyword: str, address: str, bad: str, where: int, brackets: bool
) -> None:
    """A control character anywhere in an unquoted address (bracketed or not), or a space
    inside the brackets, is a PathError: it would travel to the downstream and our headers."""
    where = min(where, len(address))
    path_text = address[:where] + bad + address[where:]
    arg = f"{keyword}:<{path_text}>" if brackets else f"{keyword}:{path_text}"
    if not brackets and bad == " ":
        return  # without brackets a space ends the path: what follows is read as parameters
    with pytest.raises(PathError):
        parse_path(arg, keyword)


# -- DATA: end of data, dot-stuffing, limits ---------------------------------------------------

# Line content: any bytes but CR and LF, often starting with dots or looking like an end.
LINE = st.one_of(
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b".", b"..", b"...", b".x", b". ", b".\x00", b"", b"\x00.", b" ."]),
    st.binary(max_size=6).map(lambda b: b"." + b.replace(b"\r", b"").replace(b"\n", b"")),
)
# Arbitrary streams, biased toward the bytes that make and fake ends of data.
PIECE = st.one_of(
    st.sampled_from(
        [b"\r", b"\n", b".", b"\x00", b"a", b"\r\n", b"\r\n.", b"\r\n.\r", END, b"\n.\n", b"\r.\r"]
    ),
    st.binary(min_size=1, max_size=5),
)
STREAM = st.lists(PIECE, max_size=30).map(b"".join)


def stuff(content_lines: list[bytes]) -> bytes:
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in content_lines)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def feed_all(reader: DataReader, chunks: list[bytes]) -> tuple[int | None, bytes]:
    """Feed until the reader reports the end: (index of that chunk or None, the bytes not fed)."""
    for i, chunk in enumerate(chunks):
        if reader.feed(chunk):
            return i, b"".join(chunks[i + 1 :])
    return None, b""


def chunk_of(chunks: list[bytes], offset: int) -> int:
    """Index of the chunk that holds byte ``offset`` of their concatenation."""
    pos = 0
    for i, chunk in enumerate(chunks):
        pos += len(chunk)
        if offset < pos:
            return i
    raise AssertionError("offset past the data")


@SETTINGS
@given(
    st.lists(LINE, max_size=12),
    st.binary(max_size=20),
    st.lists(st.integers(0, 400), max_size=12),
)
def test_data_reader_round_trip(lines: list[bytes], trailing: bytes, cuts: list[int]) -> None:
    """Dot-stuffed content + ".CRLF" + pipelined bytes, split anywhere: the reader reports the
    end once, on the chunk holding the terminator's last byte; unstuff(message) is the content;
    leftover plus what was not fed is exactly what followed."""
    content = b"".join(line + b"\r\n" for line in lines)
    body = stuff(lines)
    wire = body + b".\r\n" + trailing
    chunks = split(wire, cuts)
    reader = DataReader(limit=10_000)
    done_at, rest = feed_all(reader, chunks)
    assert done_at == chunk_of(chunks, len(body) + 2), (wire, chunks)
    assert reader.message == body
    assert unstuff(reader.message) == content
    assert reader.leftover + rest == trailing
    assert reader.size == len(body)
    assert not reader.overflow


@SETTINGS
@given(STREAM, st.lists(st.integers(0, 200), max_size=10))
def test_data_reader_ends_at_first_crlf_dot_crlf(stream: bytes, cuts: list[int]) -> None:
    """Any bytes (bare CR, LF, NUL, LF.LF, CR.CR...), split anywhere: the end is the first
    CRLF.CRLF of CRLF + stream (the 354 line's CRLF counts), never earlier, never missed."""
    virtual = b"\r\n" + stream
    end = virtual.find(END)
    chunks = split(stream, cuts)
    reader = DataReader(limit=10_000)
    done_at, rest = feed_all(reader, chunks)
    if end < 0:
        assert done_at is None, stream
        return
    assert done_at == chunk_of(chunks, end + 2), (stream, chunks)
    assert reader.message == virtual[2 : end + 2]
    assert reader.leftover + rest == virtual[end + 5 :]


@SETTINGS
@given(st.lists(LINE, max_size=20), st.binary(max_size=8), st.data())
def test_data_reader_limit(lines: list[bytes], trailing: bytes, data: st.DataObject) -> None:
    """With a small limit: overflow exactly when the message is larger than the limit, whatever
    the split (also a message at the limit whose terminator arrives in pieces); size is the wire
    size either way; a message within the limit is kept whole; the bytes held after each feed
    stay within limit + a few bytes (never the whole message)."""
    body = stuff(lines)
    wire = body + b".\r\n" + trailing
    limit = data.draw(
        st.one_of(st.integers(0, 48), st.integers(-4, 4).map(lambda d: max(0, len(body) + d))), "limit"
    )
    # Cuts anywhere, and often inside the final CRLF.CRLF.
    near_end = st.integers(len(body) - 2, len(body) + 3)
    cuts = data.draw(st.lists(st.one_of(st.integers(0, len(wire)), near_end), max_size=15), "cuts")
    chunks = split(wire, cuts)
    reader = DataReader(limit=limit)
    done = False
    for chunk in chunks:
        done = reader.feed(chunk)
        if done:
            break
        assert reader.held <= limit + 8, (reader.held, limit)
    assert done
    assert reader.size == len(body)
    assert reader.overflow == (len(body) > limit), (limit, len(body), chunks)
    if not reader.overflow:
        assert reader.message == body


@SETTINGS
@given(STREAM, st.integers(0, 32), st.lists(st.integers(1, 16), min_size=1, max_size=40))
def test_data_reader_bounded_on_any_stream(stream: bytes, limit: int, sizes: list[int]) -> None:
    """Arbitrary bytes in chunks of arbitrary sizes: held memory never exceeds limit + chunk +
    a small constant, and the end (when there is one) is still found at the right place."""
    data = stream * 4  # long enough to pass small limits many times over
    reader = DataReader(limit=limit)
    pos = 0
    found = None
    for size in sizes * 8:
        if pos >= len(data):
            break
        chunk = data[pos : pos + size]
        pos += len(chunk)
        done = reader.feed(chunk)
        assert reader.held <= limit + len(chunk) + 8, (reader.held, limit, len(chunk))
        if done:
            found = pos
            break
    end = (b"\r\n" + data).find(END)
    if end >= 0 and end + 3 <= pos:
        assert found is not None
        assert reader.size == end
        assert reader.overflow == (end > limit)
    else:
        assert found is None


@SETTINGS
@given(st.lists(LINE, max_size=20), st.integers(0, 20), st.lists(st.integers(1, 8), min_size=1, max_size=10))
def test_data_reader_stop_holding(lines: list[bytes], stop_after: int, sizes: list[int]) -> None:
    """After stop_holding (the worker's in-flight budget ran out) the reader holds at most a
    few bytes, yet still ends at the right place and reports the true wire size."""
    body = stuff(lines)
    wire = body + b".\r\n"
    reader = DataReader(limit=10_000)
    pos, step = 0, 0
    done = False
    while not done:
        assert step < 10_000
        if step == stop_after:
            reader.stop_holding()
        size = sizes[step % len(sizes)]
        chunk = wire[pos : pos + size]
        pos += len(chunk)
        done = reader.feed(chunk)
        if reader.over_budget and not done:
            assert reader.held <= 4
        step += 1
    assert pos == len(wire)
    assert reader.size == len(body)


@SETTINGS
@given(st.binary(max_size=30))
def test_unstuff_inverts_stuffing_of_crlf_lines(extra: bytes) -> None:
    """unstuff removes one dot at the start of each CRLF line only: a dot after a bare CR or LF
    is content (a mutation that unstuffs after bare LF fails here)."""
    lines = [b".a", b"b\n.c", b"d\r.e", b"..", extra.replace(b"\r\n", b"")]
    content = b"".join(line + b"\r\n" for line in lines)
    assert unstuff(stuff(lines)) == content


# -- inspect --------------------------------------------------------------------------------------

MSG_PIECE = st.one_of(
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\x00", b"a", b"\r\r\n", b"\n\r"]),
    st.binary(min_size=1, max_size=6),
)
MESSAGE = st.lists(MSG_PIECE, max_size=30).map(b"".join)


@SETTINGS
@given(MESSAGE)
def test_inspect_counts(message: bytes) -> None:
    """bare_lf, bare_cr and nul are the counts a byte-by-byte scan finds."""
    n = len(message)
    bare_lf = sum(1 for i in range(n) if message[i] == 0x0A and (i == 0 or message[i - 1] != 0x0D))
    bare_cr = sum(1 for i in range(n) if message[i] == 0x0D and (i + 1 == n or message[i + 1] != 0x0A))
    found = inspect(message, max_line=1000, max_header=1 << 20)
    assert (found.bare_lf, found.bare_cr, found.nul) == (bare_lf, bare_cr, message.count(b"\x00"))
    assert found.bare_newline == bool(bare_lf or bare_cr)


NO_NEWLINE = st.binary(max_size=14).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@SETTINGS
@given(
    st.lists(st.tuples(NO_NEWLINE, st.sampled_from([b"\r\n", b"\n"])), max_size=8),
    NO_NEWLINE,
    st.integers(3, 16),
)
def test_inspect_long_line(lines: list[tuple[bytes, bytes]], last: bytes, max_line: int) -> None:
    """long_line is the length, CRLF counted, of the first line longer than max_line (0 if none).
    Line ends are CRLF or bare LF (inspect runs after bare newlines are refused or normalised:
    a bare LF ends a line, as after normalize); the last line may lack its end."""
    message = b"".join(text + end for text, end in lines) + last
    texts = [text for text, _ in lines] + ([last] if last else [])
    expected = next((len(t) + 2 for t in texts if len(t) + 2 > max_line), 0)
    assert inspect(message, max_line=max_line, max_header=1 << 20).long_line == expected, message


HEADER_LINE = st.one_of(
    st.builds(
        lambda name, ws, value: name + ws + b":" + value,
        st.from_regex(rb"[!-9;-~]{1,6}", fullmatch=True),
        st.sampled_from([b"", b" ", b"\t"]),
        NO_NEWLINE,
    ),
    st.builds(bytes.__add__, st.sampled_from([b" ", b"\t"]), NO_NEWLINE),  # continuation
    NO_NEWLINE,  # body text or garbage
    st.sampled_from([b"", b"\r", b"no colon here", b": empty name", b"a b: spaced name", b"x\r: y"]),
)


def is_field(line: bytes) -> bool:
    colon = line.find(b":")
    if colon <= 0:
        return False
    name = line[:colon].rstrip(b" \t")
    return bool(name) and all(33 <= c <= 126 for c in name)


def naive_header_block(message: bytes) -> int:
    """Lines (ended by LF) from the top while each is a field or a continuation of one."""
    size = 0
    seen_field = False
    for text in message.split(b"\n")[:-1]:  # the last piece has no LF: never in the block
        if is_field(text):
            seen_field = True
        elif not (seen_field and text[:1] in (b" ", b"\t")):
            break
        size += len(text) + 1
    return size


@SETTINGS
@given(
    st.lists(st.tuples(HEADER_LINE, st.sampled_from([b"\r\n", b"\n"])), max_size=10),
    st.binary(max_size=10),
    st.integers(1, 80),
)
def test_inspect_header_size(lines: list[tuple[bytes, bytes]], tail: bytes, max_header: int) -> None:
    """header_size is the size of the header block (field lines and their continuations, up to
    the first other line) when it exceeds max_header, else 0."""
    message = b"".join(text + end for text, end in lines) + tail
    block = naive_header_block(message)
    expected = block if block > max_header else 0
    assert inspect(message, max_line=1000, max_header=max_header).header_size == expected, message
