#!/usr/bin/env bash
# What building Orchard needs beyond Rust: libpq (diesel's Postgres backend links it).
# Skips everything when present; `make build`/`make run` call it.
set -euo pipefail
if ! dpkg-query -W -f='${Status}' libpq-dev 2>/dev/null | grep -q 'install ok installed'; then
  echo "[build-deps] installing libpq-dev" >&2
  SUDO=(); [[ $(id -u) -eq 0 ]] || SUDO=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends libpq-dev >/dev/null
fi
