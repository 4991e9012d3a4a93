"""``python -m proxy`` is ``spamgate``."""

from proxy.cli import main

raise SystemExit(main())
