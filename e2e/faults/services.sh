#!/usr/bin/env bash
# Faults on the shared services of `make services-up`, for the fault suite:
#   restart-postgres        pg_ctl restart -m fast (every connection is cut)
#   stop-postgres / start-postgres   pg_ctl stop -m fast / start
#   stop-s3 / start-s3      kill s3s-fs / start it again (e2e/services/up.sh)
#   kill-redis-master       SIGKILL one Redis Cluster master (not the first node);
#                           prints its port
#   kill-redis-node PORT    SIGKILL that Redis Cluster node (whatever its role)
#   restart-redis-node PORT start that node again (as up.sh does; it rejoins from its
#                           nodes.conf as a replica), wait until the cluster is whole
#   cluster-state           the cluster's state as node 7001 sees it
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/../services/lib.sh"
RC_DIR="$STATE/redis-cluster"

cluster_whole() {
  local p
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    redis-cli -p "$p" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' || return 1
  done
}

case "${1:-}" in
  restart-postgres)
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-c port=$PG_PORT" -m fast -w -t 60 restart >/dev/null
    ;;
  stop-postgres)
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    ;;
  start-postgres)
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-c port=$PG_PORT" -w -t 60 start >/dev/null
    ;;
  stop-s3)
    pid=$(live_pid "$S3_PID" s3s-fs) && kill "$pid"
    wait_until 10 "s3s-fs to stop" bash -c "! curl -s -o /dev/null -m 1 http://127.0.0.1:$S3_PORT/"
    ;;
  start-s3)
    bash "$HERE/../services/up.sh" >/dev/null
    ;;
  kill-redis-master)
    port=$(redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" cluster nodes | tr -d '\r' |
      awk '$3 ~ /master/ && $3 !~ /fail/ { split($2, a, "[:@]"); print a[2] }' |
      grep -vx "${REDIS_CLUSTER_PORTS[0]}" | sort | head -n1)
    pid=$(live_pid "$RC_DIR/$port/redis.pid" redis-server)
    kill -KILL "$pid"
    echo "$port"
    ;;
  kill-redis-node)
    port=$2
    pid=$(live_pid "$RC_DIR/$port/redis.pid" redis-server)
    kill -KILL "$pid"
    ;;
  restart-redis-node)
    port=$2
    rm -f "$RC_DIR/$port/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 \
      --cluster-enabled yes --cluster-config-file "$RC_DIR/$port/nodes.conf" \
      --cluster-node-timeout 5000 --appendonly no --save '' \
      --maxmemory 256mb --maxmemory-policy allkeys-lru \
      --dir "$RC_DIR/$port" --pidfile "$RC_DIR/$port/redis.pid" \
      --logfile "$RC_DIR/$port/redis.log" --daemonize yes
    wait_until 60 "the Redis Cluster to be whole" cluster_whole
    ;;
  cluster-state)
    redis-cli -p "${REDIS_CLUSTER_PORTS[0]}" cluster info | tr -d '\r' | grep '^cluster_state'
    ;;
  *)
    echo "usage: $0 restart-postgres|stop-postgres|start-postgres|stop-s3|start-s3|kill-redis-master|kill-redis-node PORT|restart-redis-node PORT|cluster-state" >&2
    exit 2
    ;;
esac
