# spamgate: `make run` starts it on its embedded default, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
# System tools the tests drive (Debian package names: command they provide).
SYSPKGS := swaks:swaks redis-server:redis-server postfix:smtp-source postfix:smtp-sink \
           prometheus:promtool chromium:chromium chromium-driver:chromedriver dovecot-lmtpd:dovecot \
           clamav-daemon:clamd rspamd:rspamd spamd:spamd spamassassin:spamassassin \
           rbldnsd:rbldnsd
# What `make bench` needs on top (the byte-proxy reference).
BENCH_PKGS := haproxy:haproxy
# Byte-code caching on for `make run` and `make test`, whatever the environment says (it may set
# PYTHONDONTWRITEBYTECODE=1): the suite starts ~450 spamgate processes and each would compile
# proxy/ from source again. The .pyc files go to the usual __pycache__/ directories (ignored by
# git). Not PYTHONPYCACHEPREFIX: it ignores the .pyc files pip wrote for site-packages, so the
# pytest process would compile pyspf itself, under filterwarnings=error (invalid escapes in spf.py).
PYCACHE := PYTHONDONTWRITEBYTECODE=

.PHONY: run test lint fmt typecheck docs bench bench-honest bench-content soak sysdeps bench-sysdeps venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# bench/ extras (matplotlib for the soak's plot, py-spy): only for bench-honest and soak.
BENCH_STAMP := $(VENV)/.stamp-bench
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

run: $(STAMP)
	$(PYCACHE) $(VENV)/bin/spamgate run $(ARGS)

sysdeps:
	@missing=""; for p in $(or $(PKGS),$(SYSPKGS)); do pkg=$${p%%:*}; cmd=$${p##*:}; \
	  if command -v dpkg-query >/dev/null; then \
	    dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	  else command -v $$cmd >/dev/null 2>&1 || test -x /usr/sbin/$$cmd || missing="$$missing $$pkg"; fi; done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	  else \
	    echo "make test needs these Debian packages: $$missing"; \
	    echo "install them with: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

bench-sysdeps: PKGS = $(SYSPKGS) $(BENCH_PKGS)
bench-sysdeps: sysdeps

test: $(STAMP) sysdeps
	$(PYCACHE) $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check proxy tests bench
	$(VENV)/bin/ruff format --check proxy tests bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format proxy tests bench
	$(VENV)/bin/ruff check --fix proxy tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

docs: $(STAMP)
	$(VENV)/bin/spamgate docs config > docs/CONFIG.md
	$(VENV)/bin/spamgate docs symbols > docs/SYMBOLS.md

bench: $(STAMP) bench-sysdeps
	$(PY) bench/run.py $(BENCH_ARGS)

# W1 under the configuration a site ships, W5-real, loadgen vs smtp-source (bench/honest.py).
bench-honest: $(BENCH_STAMP) bench-sysdeps
	$(PY) bench/honest.py $(BENCH_ARGS)

# Every content check and clamd + rspamd on, a mixed corpus (bench/content_load.py); short check:
# make bench-content BENCH_ARGS="--rounds 1 --quick"
bench-content: PKGS = postfix:smtp-sink clamav-daemon:clamd rspamd:rspamd rbldnsd:rbldnsd
bench-content: $(STAMP) sysdeps
	$(PY) bench/content_load.py $(BENCH_ARGS)

# N minutes (default 30) at half the calibrated rate with faults; not part of `make test`.
# Short check: make soak SOAK_ARGS="--minutes 3 --warmup 1"
soak: $(BENCH_STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
