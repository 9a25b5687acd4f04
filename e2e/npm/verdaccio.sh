#!/usr/bin/env bash
# Runs one of the Verdaccio upstreams prepared by prepare.sh.
#   verdaccio.sh start a|b PORT   starts it on 127.0.0.1:PORT (stopping a previous
#                                 instance of the same upstream), returns once it
#                                 answers GET /-/ping; prints nothing
#   verdaccio.sh stop a|b         stops it (no-op when it is not running)
# The pid file and the log (verdaccio.pid, verdaccio.log) live in the upstream's dir.
set -euo pipefail
E2E="${ORCHARD_E2E_DIR:-$HOME/.cache/orchard/e2e}"
usage() { echo "usage: $0 start a|b PORT | stop a|b" >&2; exit 2; }
[[ $# -ge 2 && $2 =~ ^[ab]$ ]] || usage
ID=$2
DIR="$E2E/verdaccio-$ID"
PID_FILE="$DIR/verdaccio.pid"
LOG="$DIR/verdaccio.log"
BIN="$E2E/npm-tools/node_modules/.bin/verdaccio"

# Prints the pid when the pid file names a live Verdaccio process.
running_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q verdaccio || return 1
  echo "$pid"
}

stop() {
  local pid i
  if pid=$(running_pid); then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
}

start() {
  local port=$1 pid i
  [[ -f $DIR/config.yaml ]] || { echo "$DIR/config.yaml missing: run prepare.sh" >&2; exit 1; }
  [[ -x $BIN ]] || { echo "$BIN missing: run prepare.sh" >&2; exit 1; }
  stop
  # Refuse a port something else answers on: its ping would look like ours.
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    echo "port $port is already in use" >&2; exit 1
  fi
  # Detached, with no inherited stdio, so callers capturing our output never hang.
  setsid "$BIN" --config "$DIR/config.yaml" --listen "127.0.0.1:$port" >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "verdaccio $ID exited; log $LOG:" >&2; tail -n 20 "$LOG" >&2; rm -f "$PID_FILE"; exit 1
    fi
    curl -sf -o /dev/null "http://127.0.0.1:$port/-/ping" && kill -0 "$pid" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "verdaccio $ID did not answer on port $port within 30 s; log $LOG:" >&2
  tail -n 20 "$LOG" >&2; stop; exit 1
}

case $1 in
  start) [[ $# -eq 3 && $3 =~ ^[0-9]+$ ]] || usage; start "$3" ;;
  stop) [[ $# -eq 2 ]] || usage; stop ;;
  *) usage ;;
esac
