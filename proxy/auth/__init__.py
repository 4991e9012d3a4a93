"""Mail authentication logic (SPF, DKIM, DMARC, ARC, Authentication-Results), free of SMTP.

The checks in ``proxy/checks/mail/spf.py`` and ``proxy/checks/data/{dkim,dmarc,arc,auth_results}.py``
turn these results into symbols; :mod:`proxy.auth.memo` shares one computation per transaction.
"""
