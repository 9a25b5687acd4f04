# Common settings and helpers for the e2e backing services.
# Sourced by install.sh, up.sh and down.sh; not meant to be run directly.

# Where service data, logs, pid files and env.sh live.
STATE="${ORCHARD_SERVICES_DIR:-$HOME/.cache/orchard/services}"
# Where locally built tools (s3s-fs) are installed (binaries in $TOOLS/bin).
TOOLS="${ORCHARD_TOOLS_DIR:-$HOME/.cache/orchard/tools}"

# Ports (all bound to 127.0.0.1 only).
PG_PORT=15432   # below the ephemeral port range (32768-60999)
REDIS_CLUSTER_PORTS=(7001 7002 7003 7004 7005 7006)
REDIS_PORT=6390
S3_PORT=19000

# Postgres 15 (Debian layout).
PG_BIN=/usr/lib/postgresql/15/bin
PG_DIR="$STATE/postgres"        # owned by the postgres OS user when run as root
PG_DATA="$PG_DIR/data"
PG_SOCK="$PG_DIR/run"           # unix_socket_directories
PG_LOG="$PG_DIR/postgres.log"

# S3 (s3s-fs).
S3S_VERSION=0.14.1
S3S_BIN="$TOOLS/bin/s3s-fs"
S3_DIR="$STATE/s3"              # a bucket is a directory under here
S3_BUCKET=orchard-test
S3_REGION=us-east-1
S3_ACCESS_KEY=orchard-test
S3_SECRET_KEY=orchard-test-secret
S3_PID="$STATE/s3s-fs.pid"
S3_LOG="$STATE/s3s-fs.log"

LOG_TAG=services
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../proc.sh"   # log, die, wait_until, pid_alive, pid_gone, stop_pid

# Run a command as the postgres OS user when we are root (postgres refuses
# to run as root); otherwise as ourselves.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Does something answer HTTP on 127.0.0.1:PORT? (any status code counts)
http_answers() {
  local code
  code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$1/" || true)
  [[ -n $code && $code != 000 ]]
}

# live_pid PIDFILE NAME: print the pid from PIDFILE if that process is alive
# and is really NAME (guards against a stale pid file and pid reuse).
live_pid() {
  local pid
  [[ -f $1 ]] && pid=$(head -n1 "$1") && [[ $pid =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]] || return 1
  echo "$pid"
}

redis_down() { ! redis-cli -p "$1" ping; }

# redis_stop PORT PIDFILE: SHUTDOWN NOSAVE, then the pid file as fallback.
redis_stop() {
  local port=$1 pidfile=$2 pid
  if redis-cli -p "$port" ping >/dev/null 2>&1; then
    log "redis :$port: shutdown"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  fi
  if pid=$(live_pid "$pidfile" redis-server); then stop_pid "$pid"; fi
  wait_until 10 "redis :$port to stop" redis_down "$port" || true
  rm -f "$pidfile"
}
