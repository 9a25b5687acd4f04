#!/usr/bin/env bash
# Prepares the npm end-to-end suite, skipping whatever is already there:
#   - $E2E/npm-tools: Verdaccio 6.8.0 (the real upstream; later versions need Node 22)
#     and pnpm 9 (a second real client), installed with npm
#   - $E2E/npm-project: package.json + package-lock.json of a real dependency tree
#   - $E2E/npm-tarballs-a, -b: the tarballs of the two upstreams, from `npm pack`
#     against the registry npm is configured with
#   - $E2E/verdaccio-a, -b: a Verdaccio config + storage per upstream, filled by
#     publishing those tarballs (publish.py); run them with verdaccio.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E="${ORCHARD_E2E_DIR:-$HOME/.cache/orchard/e2e}"
TOOLS="$E2E/npm-tools"
PROJECT="$E2E/npm-project"
SET_VERSION=1   # bump (with the package lists below) to refill the Verdaccio storages
log() { printf '[e2e-npm] %s\n' "$*" >&2; }
mkdir -p "$E2E"

# Writes stdin to $1 only when the content differs (keeps reruns from touching files).
write_if_changed() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# --- tools ------------------------------------------------------------------
# node-fetch is pinned: Verdaccio's audit plugin asks for the dist-tag `cjs`,
# which the reachable registry does not serve.
mkdir -p "$TOOLS"
write_if_changed "$TOOLS/package.json" <<'JSON'
{
  "private": true,
  "dependencies": { "verdaccio": "6.8.0", "pnpm": "9.15.9" },
  "overrides": { "node-fetch": "2.7.0" }
}
JSON
if [[ ! -x $TOOLS/node_modules/.bin/verdaccio || ! -x $TOOLS/node_modules/.bin/pnpm ||
      $TOOLS/package.json -nt $TOOLS/node_modules/.package-lock.json ]]; then
  log "installing verdaccio 6.8.0 and pnpm 9 into $TOOLS"
  (cd "$TOOLS" && npm install --no-audit --no-fund --loglevel=error >&2)
fi

# --- upstream A: a real dependency closure -----------------------------------
mkdir -p "$PROJECT"
write_if_changed "$PROJECT/package.json" <<'JSON'
{
  "name": "orchard-e2e-project",
  "version": "1.0.0",
  "private": true,
  "dependencies": {
    "chalk": "^4.1.2",
    "debug": "^4.3.4",
    "semver": "^7.6.0",
    "commander": "^12.1.0",
    "yargs": "^17.7.2",
    "@babel/code-frame": "^7.24.0",
    "@types/node": "^20.11.0",
    "@isaacs/cliui": "^8.0.2"
  }
}
JSON
# Resolve the closure once (the lockfile is kept; delete it to re-resolve).
if [[ ! -f $PROJECT/package-lock.json || $PROJECT/package.json -nt $PROJECT/package-lock.json ]]; then
  log "resolving the dependency tree in $PROJECT"
  (cd "$PROJECT" && npm install --package-lock-only --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
fi

# pack_into DIR SPEC... : `npm pack` every name@version whose tarball is not in DIR yet.
pack_into() {
  local dir=$1; shift
  local missing=() spec file
  mkdir -p "$dir"
  for spec in "$@"; do
    file=${spec#@}; file=${file%@*}; file=${file//\//-}-${spec##*@}.tgz   # @a/b@1 -> a-b-1.tgz
    [[ -f $dir/$file ]] || missing+=("$spec")
  done
  (( ${#missing[@]} )) || return 0
  log "packing ${#missing[@]} tarballs into $dir"
  # Pack into a staging folder first so an interrupted run leaves no partial file.
  rm -rf "$dir/.partial"; mkdir "$dir/.partial"
  (cd "$dir/.partial" && npm pack --ignore-scripts --loglevel=error --pack-destination . "${missing[@]}" >/dev/null)
  mv "$dir/.partial"/*.tgz "$dir/"
  rmdir "$dir/.partial"
}

# Every package of the lockfile (aliases such as string-width-cjs carry the real name).
mapfile -t SPECS_A < <(python3 - "$PROJECT/package-lock.json" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1]))
specs = set()
for path, meta in lock["packages"].items():
    if not path or meta.get("link") or meta.get("inBundle"):
        continue
    name = meta.get("name") or path.rsplit("node_modules/", 1)[1]
    specs.add(f"{name}@{meta['version']}")
print("\n".join(sorted(specs)))
PY
)
pack_into "$E2E/npm-tarballs-a" "${SPECS_A[@]}"

# --- upstream B: an older ms (A has 2.1.x) and a scoped package A lacks -------
pack_into "$E2E/npm-tarballs-b" ms@2.0.0 @types/ms@2.1.0

# --- samples for the dependency-extraction tests (not published anywhere) -------
# chokidar 3.6.0 declares fsevents as an optional dependency.
pack_into "$E2E/npm-samples" chokidar@3.6.0

# --- Verdaccio storages --------------------------------------------------------
# A registry left running by an interrupted fill is stopped on exit.
RUNNING=
trap '[[ -z $RUNNING ]] || "$HERE/verdaccio.sh" stop "$RUNNING"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# fill_verdaccio a|b : writes the config, then publishes the upstream's tarballs.
fill_verdaccio() {
  local id=$1 dir="$E2E/verdaccio-$1" tarballs="$E2E/npm-tarballs-$1"
  [[ -f $dir/.complete-$SET_VERSION ]] && return 0
  log "filling $dir"
  mkdir -p "$dir/storage"
  cat >"$dir/config.yaml" <<'YAML'
# Verdaccio upstream for Orchard's npm e2e tests (written by e2e/npm/prepare.sh).
storage: ./storage
auth:
  htpasswd:
    file: ./htpasswd
    max_users: 100
uplinks: {}
packages:
  '@*/*':
    access: $all
    publish: $authenticated
    unpublish: $authenticated
  '**':
    access: $all
    publish: $authenticated
    unpublish: $authenticated
max_body_size: 200mb
web:
  enable: false
log: { type: stdout, format: pretty, level: warn }
YAML
  local port; port=$(free_port)
  "$HERE/verdaccio.sh" start "$id" "$port"; RUNNING=$id
  local url="http://127.0.0.1:$port" user=orchard pass=orchard-e2e-password
  local body="{\"_id\":\"org.couchdb.user:$user\",\"name\":\"$user\",\"password\":\"$pass\",\"type\":\"user\",\"roles\":[]}"
  # Create the user; when it exists (a resumed run), the same PUT with basic auth logs in.
  local resp
  resp=$(curl -s -X PUT -H 'Content-Type: application/json' -d "$body" "$url/-/user/org.couchdb.user:$user")
  if ! grep -q '"token"' <<<"$resp"; then
    resp=$(curl -sf -u "$user:$pass" -X PUT -H 'Content-Type: application/json' -d "$body" "$url/-/user/org.couchdb.user:$user")
  fi
  local token; token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$resp")
  python3 "$HERE/publish.py" "$url" "$token" "$tarballs"/*.tgz
  "$HERE/verdaccio.sh" stop "$id"; RUNNING=
  touch "$dir/.complete-$SET_VERSION"
}
fill_verdaccio a
fill_verdaccio b
log "ready: $(ls "$E2E/npm-tarballs-a" | wc -l) tarballs upstream A, $(ls "$E2E/npm-tarballs-b" | wc -l) upstream B"
