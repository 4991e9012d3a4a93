"""``[sharing]``: what spamgate exports of what the fleet learnt (docs/SHARING.md).

Nothing leaves the site unless configured: no zone file without ``zone_file``, no ``/feed``
without ``feed_token``.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.fields import opt


@dataclass(frozen=True, slots=True)
class SharingConfig:
    zone_file: str = opt(
        "",
        "Path of the rbldnsd ip4set zone file written on a schedule (atomically); empty: off.",
    )
    zone_interval: float = opt("5m", "How often the zone file is rewritten.", kind="duration", minimum=1)
    zone_ttl: int = opt(300, "DNS TTL written into the zone file ($TTL).", minimum=0)
    feed_token: str = opt(
        "",
        "Token a peer must send (Authorization: Bearer, or ?token=) to read /feed on the admin "
        "listener; empty: /feed is off.",
    )
    include_reputation: bool = opt(
        True,
        "Also export IPs with a bad reputation (checks.reputation bad_ratio and min_messages), "
        "each with its history's expiry.",
    )
    max_entries: int = opt(100000, "At most this many entries are exported.", minimum=1)

    # -- DMARC aggregate reports (RFC 7489 7.2): off by default ------------------------------
    dmarc_record: bool = opt(
        False,
        "Record every DMARC evaluation (source IP, From domain, disposition, SPF/DKIM results "
        "and alignment) in the store for aggregate reports to the domains' rua addresses.",
    )
    dmarc_relay: str = opt(
        "",
        "Mail server ('host:port') that sends the reports; empty: reports are only written by "
        "'spamgate dmarc report --output DIR'.",
    )
    dmarc_org_name: str = opt("", "Reporting organisation name in the reports; empty: server.hostname.")
    dmarc_contact: str = opt(
        "", "Contact address in the reports and their From; empty: postmaster@server.hostname."
    )
    dmarc_send_interval: float = opt(
        "0s",
        "How often a worker looks for finished UTC days whose reports are not sent yet and sends "
        "them; 0: only 'spamgate dmarc report'.",
        kind="duration",
    )
    dmarc_keep: float = opt(
        "3d", "How long recorded evaluations are kept (a report covers one UTC day).", kind="duration"
    )
