"""Abuse reports in the Abuse Reporting Format (ARF, RFC 5965): ``multipart/report;
report-type=feedback-report`` with a human-readable part, a ``message/feedback-report`` part
and the reported message's header (``text/rfc822-headers``).

When the message never arrived (a spamtrap refused at RCPT), the third part holds the header
spamgate would have added (``Received``, ``Return-Path``, the recipient): enough to identify
the session, nothing of the trap beyond the recipient the client itself sent.
"""

from __future__ import annotations

import time
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid


def envelope_headers(ip: str, helo: str, mail_from: str, rcpts: list[str], hostname: str) -> bytes:
    date = formatdate(time.time(), usegmt=True)
    lines = [
        f"Return-Path: <{mail_from}>",
        f"Received: from {helo or 'unknown'} ([{ip}]) by {hostname}; {date}",
        *[f"X-Original-To: <{r}>" for r in rcpts],
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def build_arf(
    *,
    reporter: str,
    to: str,
    hostname: str,
    feedback_type: str,
    ip: str,
    mail_from: str,
    rcpts: list[str],
    reason: str,
    headers: bytes,
) -> Message:
    msg = MIMEMultipart("report", report_type="feedback-report")
    msg["From"] = reporter
    msg["To"] = to
    msg["Subject"] = f"Abuse report: {reason} from {ip}"
    msg["Date"] = formatdate(time.time(), usegmt=True)
    msg["Message-ID"] = make_msgid(domain=hostname)
    msg.attach(
        MIMEText(
            f"This is an abuse report (RFC 5965) from {hostname}.\r\n"
            f"A message from {ip} was refused: {reason}.\r\n",
            "plain",
        )
    )
    fields = [
        f"Feedback-Type: {feedback_type}",
        "User-Agent: spamgate/1",
        "Version: 1",
        f"Original-Mail-From: <{mail_from}>",
        *[f"Original-Rcpt-To: <{r}>" for r in rcpts],
        f"Arrival-Date: {formatdate(time.time(), usegmt=True)}",
        f"Reporting-MTA: dns; {hostname}",
        f"Source-IP: {ip}",
    ]
    report = MIMEBase("message", "feedback-report")
    report.set_payload("\r\n".join(fields) + "\r\n")
    msg.attach(report)
    part = MIMEText(headers.decode("utf-8", "replace"), "rfc822-headers")
    msg.attach(part)
    return msg
