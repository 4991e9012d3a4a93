"""What is inside a message: a bounded MIME walk, links, attachments and archives (no I/O).

Below the checks and free of SMTP, DNS and policy: it imports only the standard library (and
nothing of ``proxy/`` but the shared utilities). :func:`proxy.content.analyse.analyse` does the
whole pass once per message; ``proxy/checks/contentutil.py`` shares its result between the
content checks of a transaction and moves large messages off the event loop.
"""
