#!/usr/bin/env bash
# Prepares `make bench`, skipping whatever is already there:
#   - a virtualenv with the PyPI references, devpi-server (+ devpi-client to configure
#     it) and proxpi (+ gunicorn to serve it), apart from the e2e venv
#   - a bench package directory for its own pypiserver: a real ~1 MiB wheel copied from
#     pkgs-a (pygments), a synthetic 20 MiB wheel and a synthetic 200 MiB wheel
#     (incompressible bytes; pypiserver does not look inside)
# Needs `bash e2e/pypi/prepare.sh` first (pkgs-a).
set -euo pipefail
E2E="${ORCHARD_E2E_DIR:-$HOME/.cache/orchard/e2e}"
VENV="$E2E/bench-venv"
PKGS="$E2E/bench-pkgs"
log() { printf '[bench] %s\n' "$*" >&2; }

if ! "$VENV/bin/python" -c 'import devpi_server, proxpi, gunicorn' 2>/dev/null || [[ ! -x $VENV/bin/devpi ]]; then
  log "creating $VENV (devpi-server, devpi-client, proxpi, gunicorn)"
  rm -rf "$VENV"
  "$E2E/venv/bin/python" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q 'devpi-server>=6' 'devpi-client>=7' 'proxpi>=1.2' 'gunicorn>=21'
fi

PKGS_VERSION=1   # bump to refill
if [[ ! -f $PKGS/.complete-$PKGS_VERSION ]]; then
  log "filling $PKGS"
  rm -rf "$PKGS"; mkdir -p "$PKGS"
  cp "$E2E"/pkgs-a/pygments-*.whl "$PKGS/"
  head -c $((20 * 1024 * 1024)) /dev/urandom > "$PKGS/orchardbench_twenty-1.0-py3-none-any.whl"
  head -c $((200 * 1024 * 1024)) /dev/urandom > "$PKGS/orchardbench_huge-1.0-py3-none-any.whl"
  touch "$PKGS/.complete-$PKGS_VERSION"
fi
log "ready: $(ls "$PKGS" | wc -l) bench files, $("$VENV/bin/devpi-server" --version 2>/dev/null | head -1) devpi-server, proxpi $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("proxpi"))')"
