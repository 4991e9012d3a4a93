"""SMTP replies with enhanced status codes (RFC 3463) and the reference id a sender can quote.

Every reply spamgate writes itself goes through :class:`Reply`; replies relayed from the
downstream keep the downstream's code, enhanced code and text, line for line.
"""

from __future__ import annotations

import re

from proxy.model import Reply, default_enhanced

__all__ = ["Reply", "default_enhanced", "from_downstream"]


def from_downstream(code: int, message: str) -> Reply:
    """A downstream reply as aiosmtplib gives it (lines joined with '\\n'), enhanced code kept."""
    lines = message.split("\n") if message else [""]
    enhanced = ""
    m = re.match(r"^([245]\.[0-9]{1,3}\.[0-9]{1,3}) ", lines[0] + " ")
    if m and m.group(1)[0] == str(code)[0]:
        enhanced = m.group(1)
        prefix = enhanced + " "
        lines = [ln[len(prefix) :] if ln.startswith(prefix) else ln for ln in lines]
    return Reply(code, enhanced or default_enhanced(code), "\n".join(lines).rstrip())


# Replies spamgate gives on its own, in one place so the QA test can check every one
# (tests/test_replies.py fails when a Reply is built anywhere else in proxy/).
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Command line too long")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
BAD_SEQUENCE_MAIL = Reply(503, "5.5.1", "Need MAIL command first")
BAD_SEQUENCE_RCPT = Reply(503, "5.5.1", "Need RCPT command first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NO_VALID_RCPT = Reply(554, "5.5.1", "No valid recipients")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: HELO/EHLO hostname")
SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
RCPT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
UNKNOWN_PARAM = Reply(555, "5.5.4", "Unsupported MAIL/RCPT parameter")
SMTPUTF8_NOT_OFFERED = Reply(555, "5.6.7", "SMTPUTF8 not offered")
NON_ASCII_WITHOUT_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients")
LINE_TOO_LONG_DATA = Reply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6)")
BARE_NEWLINE = Reply(554, "5.5.2", "Bare <LF> or <CR> received; lines must end with <CR><LF>")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
TLS_ALREADY = Reply(503, "5.5.1", "TLS already active")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
NO_VRFY = Reply(252, "2.5.0", "Cannot VRFY user; send some mail and we will try our best")
HELP = Reply(214, "2.0.0", "See RFC 5321")
AUTH_NOT_OFFERED = Reply(502, "5.5.1", "AUTH not offered")
PROTOCOL_ERROR = Reply(521, "5.5.1", "Protocol error: this is an SMTP server")
PROXY_NOT_ALLOWED = Reply(554, "5.7.0", "PROXY header not accepted from this address")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_CONNECTIONS_IP = Reply(421, "4.7.0", "Too many connections from your address, try again later")
TOO_MANY_TRANSACTIONS = Reply(421, "4.7.0", "Too many messages in one session, reconnect")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
CONNECT_REJECTED_BUSY = Reply(503, "5.5.1", "Connection rejected; only QUIT is accepted")
DOWNSTREAM_UNAVAILABLE = Reply(451, "4.4.1", "Downstream server unavailable, try again later")
DOWNSTREAM_LOST = Reply(451, "4.4.2", "Connection to downstream server lost, try again later")
DOWNSTREAM_TLS = Reply(451, "4.7.5", "Downstream TLS required but not available, try again later")
DOWNSTREAM_XCLIENT = Reply(
    451, "4.7.0", "Downstream server did not accept the client's identity (XCLIENT), try again later"
)
INTERNAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
INTERNAL_ERROR_CLOSING = Reply(421, "4.3.0", "Local error in processing, closing connection")
DOWNSTREAM_NO_SMTPUTF8 = Reply(553, "5.6.7", "Downstream server does not support SMTPUTF8")
CONTROL_CHARACTERS = Reply(501, "5.5.2", "Syntax error: control characters in command")
TOO_MANY_JUNK_COMMANDS = Reply(421, "4.7.0", "Too many commands without mail, closing connection")
INFLIGHT_BUDGET = Reply(451, "4.3.1", "Insufficient system resources, try again later")
OTHER_ROUTE = Reply(452, "4.5.3", "Recipient goes to another destination, send it again in a new transaction")
LMTP_ONE_RCPT = Reply(
    452, "4.5.3", "One recipient per transaction for this destination, send it again in a new one"
)
OTHER_POLICY = Reply(
    452, "4.5.3", "Recipient has another filtering policy, send it again in a new transaction"
)
# Failures of the downstream that carry no downstream reply: the client's reply gets our ref.
OWN_DOWNSTREAM_FAILURES = (DOWNSTREAM_UNAVAILABLE, DOWNSTREAM_LOST, DOWNSTREAM_TLS, DOWNSTREAM_XCLIENT)


def greeting(hostname: str, banner: str) -> Reply:
    """The 220 greeting (no enhanced code: RFC 2034 does not give the greeting one)."""
    return Reply(220, "", f"{hostname} {banner}")


def helo_ok(hostname: str) -> Reply:
    return Reply(250, "", hostname)


def ehlo_ok(lines: list[str]) -> Reply:
    """The EHLO reply: our name, then one extension keyword per line."""
    return Reply(250, "", "\n".join(lines))


def local_delivery_failed(reason: str) -> Reply:
    return Reply(451, "4.3.0", f"Local delivery failed: {reason}")


def delivered_to_maildir(unique: str) -> Reply:
    return Reply(250, "2.0.0", f"Ok: delivered to maildir as {unique}")
