#!/usr/bin/env bash
# Stop all e2e backing services started by up.sh. Idempotent; keeps the
# installed software (and Postgres data) in place.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

# Postgres
if [[ -f $PG_DATA/postmaster.pid ]]; then
  log "postgres: stopping"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null || true
fi

# Redis (cluster nodes + standalone)
for p in "${REDIS_CLUSTER_PORTS[@]}"; do redis_stop "$p" "$STATE/redis-cluster/$p/redis.pid"; done
redis_stop "$REDIS_PORT" "$STATE/redis-$REDIS_PORT/redis.pid"

# s3s-fs (only the process named in our pid file, and only if it is s3s-fs)
if pid=$(live_pid "$S3_PID" s3s-fs); then
  log "s3s-fs: stopping pid $pid"
  stop_pid "$pid"
fi
rm -f "$S3_PID"
log "all services stopped"
