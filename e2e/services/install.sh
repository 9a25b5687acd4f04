#!/usr/bin/env bash
# Install what the e2e backing services need; skips whatever is present.
#   - the Debian packages of every program in e2e/programs.tsv (e2e/programs.py),
#     and the libraries the build links (libpq-dev, libsqlite3-dev)
#   - s3s-fs (S3-compatible server) built with cargo into $TOOLS
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
. ./lib.sh

# --- programs and libraries ---------------------------------------------------
# The programs come from the one list, e2e/programs.tsv (apt-get installs the
# missing ones); the libraries are what the Rust build links.
python3 "$(dirname "$PWD")/programs.py" install --scope test
LIB_PKGS=(libpq-dev libsqlite3-dev)
missing=()
for p in "${LIB_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
    || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "missing: ${missing[*]} -> apt-get install"
  SUDO=(); [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  # Wait (up to 10 min) for any other apt/dpkg run holding the lock.
  APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  "${SUDO[@]}" apt-get "${APT_OPTS[@]}" update -qq
  "${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends \
    "${LIB_PKGS[@]}" >/dev/null
fi

# --- s3s-fs -----------------------------------------------------------------
if [[ ! -x $S3S_BIN ]]; then
  mkdir -p "$TOOLS"
  # Serialise concurrent installs; re-check once we hold the lock.
  exec 9>"$TOOLS/.s3s-install.lock"
  flock 9
  # A build started outside this script (same command) may be running: wait for it.
  while pgrep -f "cargo install s3s-fs@$S3S_VERSION" >/dev/null; do
    [[ -x $S3S_BIN ]] && break
    log "waiting for a running 'cargo install s3s-fs' to finish..."
    sleep 10
  done
  if [[ ! -x $S3S_BIN ]]; then
    command -v cargo >/dev/null || die "cargo not found; needed to build s3s-fs"
    log "building s3s-fs $S3S_VERSION (several minutes on 2 cores)"
    CARGO_TARGET_DIR="$HOME/.cache/orchard/s3s-target" \
      cargo install "s3s-fs@$S3S_VERSION" --locked --features binary --root "$TOOLS"
  fi
  exec 9>&-
  [[ -x $S3S_BIN ]] || die "s3s-fs not installed at $S3S_BIN"
fi
