#!/bin/sh
# Install spamgate into a self-contained virtualenv. The Dockerfile runs exactly this script;
# tests/test_deploy.py runs it into a temporary prefix and relays a message through the result.
#
# Environment (all optional):
#   SPAMGATE_SRC      source tree to install            (default: the folder above this script)
#   PREFIX            virtualenv to create               (default: /opt/spamgate)
#   CONFIG_DIR        where spamgate.toml is written     (default: /etc/spamgate)
#   STATE_DIR         writable state: the SQLite store (STATE_DIR/state.db) and the Maildir
#                     fallback (STATE_DIR/mail), written into the config as absolute paths
#                     (default: /var/lib/spamgate, the systemd unit's StateDirectory)
#   RULES_DIR         a copy of the shipped rules, named in the written config's policy.rules_dir
#                     (default: PREFIX/share/spamgate/rules; the package itself carries them too,
#                     read when policy.rules_dir is empty)
#   PYTHON            interpreter for the virtualenv     (default: python3)
#   SPAMGATE_USER     create this system user and give it STATE_DIR (root only; default: none)
#   SPAMGATE_SETCAP   1: grant CAP_NET_BIND_SERVICE to the virtualenv's own python binary
#                     (a copy, not the system one) so a non-root user can bind port 25
#   PIP_ARGS          extra arguments for pip install (e.g. --no-cache-dir)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
SPAMGATE_SRC=${SPAMGATE_SRC:-$(dirname "$here")}
PREFIX=${PREFIX:-/opt/spamgate}
CONFIG_DIR=${CONFIG_DIR:-/etc/spamgate}
STATE_DIR=${STATE_DIR:-/var/lib/spamgate}
PYTHON=${PYTHON:-python3}
RULES_DIR=${RULES_DIR:-$PREFIX/share/spamgate/rules}
SPAMGATE_USER=${SPAMGATE_USER:-}
SPAMGATE_SETCAP=${SPAMGATE_SETCAP:-0}
PIP_ARGS=${PIP_ARGS:-}

echo "install: spamgate from $SPAMGATE_SRC into $PREFIX"
# --copies: the venv gets its own python binary, so a file capability on it stays local.
"$PYTHON" -m venv --copies "$PREFIX"
# shellcheck disable=SC2086
"$PREFIX/bin/python" -m pip install -q $PIP_ARGS "$SPAMGATE_SRC"

# A copy of the rules (and rules/patterns) for the site to adapt; the written config uses it.
rules="$RULES_DIR"
mkdir -p "$rules"
cp -R "$SPAMGATE_SRC"/rules/. "$rules/"

mkdir -p "$CONFIG_DIR" "$STATE_DIR/mail"
# Absolute, so the written config does not depend on the working directory of whoever runs it.
STATE_DIR=$(cd "$STATE_DIR" && pwd)
if [ ! -f "$CONFIG_DIR/spamgate.toml" ]; then
    "$PREFIX/bin/spamgate" show-config --defaults \
        | sed -e "s#^rules_dir = .*#rules_dir = \"$rules\"#" \
              -e "s#^maildir = .*#maildir = \"$STATE_DIR/mail\"#" \
              -e "s#^url = \"sqlite:.*#url = \"sqlite:///$STATE_DIR/state.db\"#" \
              -e "s#^dynamic_patterns = \"\"#dynamic_patterns = \"$rules/patterns/dynamic-hostnames.txt\"#" \
        > "$CONFIG_DIR/spamgate.toml"
    echo "install: wrote $CONFIG_DIR/spamgate.toml (edit relay.downstream and relay.local_domains)"
fi
"$PREFIX/bin/spamgate" check-config --config "$CONFIG_DIR/spamgate.toml"

if [ -n "$SPAMGATE_USER" ]; then
    if ! id "$SPAMGATE_USER" >/dev/null 2>&1; then
        useradd --system --home-dir "$STATE_DIR" --no-create-home --shell /usr/sbin/nologin "$SPAMGATE_USER"
    fi
    chown -R "$SPAMGATE_USER" "$STATE_DIR"
fi

if [ "$SPAMGATE_SETCAP" = 1 ]; then
    py=$(readlink -f "$PREFIX/bin/python")
    setcap cap_net_bind_service=+ep "$py"
    echo "install: CAP_NET_BIND_SERVICE granted to $py"
fi
echo "install: done; run: $PREFIX/bin/spamgate run --config $CONFIG_DIR/spamgate.toml"
