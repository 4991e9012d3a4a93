"""What starting spamgate costs: every test starts it (tests/harness/proc.py), so do operators.

dnspython imports its DNS-over-HTTPS clients (httpx, httpcore, h2, anyio/trio: ~0.25 s) with its
query module whenever they are installed (the dev dependencies install them); proxy/__init__.py
turns that feature off, as spamgate never queries over HTTPS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOH_CLIENTS = {"httpx", "httpx2", "httpcore", "httpcore2", "h2", "anyio", "trio"}


def test_run_imports_no_dns_over_https_client() -> None:
    """Everything ``spamgate run`` imports before serving, in a fresh interpreter: pyspf and
    dkimpy load dnspython's resolver and query module, the DoH client libraries stay out."""
    code = (
        "import sys, json\n"
        "import proxy.cli, proxy.app, proxy.listener, proxy.session.runtime, proxy.auth.spf, dns.query\n"
        f"clients = {sorted(DOH_CLIENTS)!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in clients)\n"
        "print(json.dumps([loaded, dns.query.have_doh]))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    loaded, have_doh = json.loads(out.stdout)
    assert loaded == []
    assert have_doh is False
