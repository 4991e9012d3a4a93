"""Learn and share (ITU-T X.1241 sharing, X.1231 feedback): what the fleet knows leaves the site
only as configured here.

- :mod:`.config`: the ``[sharing]`` section (zone file, token-protected feed, reports).
- :mod:`.collect`: the entries to export (penalty box, reputation penalties, bad reputation).
- :mod:`.formats`: rbldnsd ``ip4set`` zone, plain text and JSON, written and parsed.
- :mod:`.intervals`: a sorted-interval set of addresses for in-memory feed lookups.
- :mod:`.fetch`: peer feeds from files or HTTP(S) with ETag / If-Modified-Since.
- :mod:`.service`: the zone export schedule and the admin listener's ``/feed``.

Nothing here decides anything about a message: the import check is
:mod:`proxy.checks.connect.feeds`; the policy scores its symbol.
"""
