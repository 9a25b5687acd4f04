# Shell helpers shared by e2e/services/lib.sh and e2e/k8s/lib.sh (sourced, not run):
# logging, waiting, and stopping processes. The sourcing script sets LOG_TAG first.

log() { printf '[%s %s] %s\n' "${LOG_TAG:-e2e}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_until TIMEOUT_SECONDS DESCRIPTION CMD [ARGS...]
# Re-runs CMD (quietly) every 0.2 s until it succeeds; fails after the timeout.
wait_until() {
  local timeout=$1 desc=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) >= deadline )); then
      log "timed out after ${timeout}s waiting for: $desc"
      return 1
    fi
    sleep 0.2
  done
}

# pid_alive PID: the process exists and is not a zombie (PID 1 in these
# containers may reap late, so a killed process can linger as a zombie that
# `kill -0` still reports as alive).
pid_alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }; st=${st%% *}
  [[ -n $st && $st != Z && $st != X ]]
}
pid_gone() { ! pid_alive "$1"; }

# stop_pid PID: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid() {
  kill "$1" 2>/dev/null || true
  if ! wait_until 15 "pid $1 to exit" pid_gone "$1"; then
    kill -9 "$1" 2>/dev/null || true
    wait_until 5 "pid $1 to exit after SIGKILL" pid_gone "$1" || true
  fi
}
