#!/usr/bin/env bash
# Prepares the PyPI end-to-end suite, skipping whatever is already there:
#   - a virtualenv with pypiserver (the real upstream), uv (a real client) and pytest
#   - two package directories for the two upstreams, filled with `pip download` from
#     the package index pip is configured with (a dependency tree of real packages,
#     six in many versions, and docopt as an sdist-only package)
set -euo pipefail
E2E="${ORCHARD_E2E_DIR:-$HOME/.cache/orchard/e2e}"
VENV="$E2E/venv"
log() { printf '[e2e-pypi] %s\n' "$*" >&2; }
mkdir -p "$E2E"

if ! "$VENV/bin/python" -c 'import pypiserver, pytest' 2>/dev/null || [[ ! -x $VENV/bin/uv ]]; then
  log "creating $VENV (pypiserver, uv, pytest)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q 'pypiserver>=2.3' 'uv>=0.5' 'pytest>=8'
fi

PKGS_VERSION=2   # bump to refill the directories
fill() {
  local dir=$1; shift
  [[ -f $dir/.complete-$PKGS_VERSION ]] && return 0
  log "filling $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  "$@"
  touch "$dir/.complete-$PKGS_VERSION"
}
fill_a() {
  local d="$E2E/pkgs-a" pip="$VENV/bin/pip"
  "$pip" download -q -d "$d" requests flask pytest rich attrs setuptools wheel
  for v in 1.12.0 1.13.0 1.14.0 1.15.0 1.16.0 1.17.0; do "$pip" download -q --no-deps -d "$d" "six==$v"; done
  "$pip" download -q --no-deps --no-binary :all: -d "$d" docopt==0.6.2
}
fill_b() {
  local d="$E2E/pkgs-b" pip="$VENV/bin/pip"
  "$pip" download -q --no-deps -d "$d" six==1.10.0 colorama
}
fill "$E2E/pkgs-a" fill_a
fill "$E2E/pkgs-b" fill_b
log "ready: $(ls "$E2E/pkgs-a" | wc -l) files upstream A, $(ls "$E2E/pkgs-b" | wc -l) upstream B"
