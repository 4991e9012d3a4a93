"""spamgate: an in-session SMTP filtering proxy."""

# dnspython's query module imports its DNS-over-HTTPS client libraries (httpx, httpcore, h2 and,
# through them, anyio/trio: ~0.25 s per process) whenever they are installed. spamgate never
# queries over HTTPS, and pyspf and dkimpy import dnspython's resolver (and so its query
# module) at import: turn the feature off before anything imports dnspython. force() is
# dnspython's switch for an optional feature; without it (another dnspython) nothing changes.
try:
    import dns._features as _dns_features
except ImportError:  # pragma: no cover - dnspython is a dependency
    pass
else:
    if hasattr(_dns_features, "force"):
        _dns_features.force("doh", False)
    del _dns_features
