#!/usr/bin/env bash
# Install (if needed) and start the e2e backing services; each one is left
# alone when it is already healthy, so a warm run takes about a second.
#   Postgres 15        127.0.0.1:15432   (superuser postgres, no password)
#   Redis Cluster      127.0.0.1:7001-7006 (3 masters + 3 replicas)
#   Redis standalone   127.0.0.1:6390
#   S3 (s3s-fs)        127.0.0.1:19000   bucket orchard-test
# Writes $STATE/env.sh with the ORCHARD_TEST_* variables for the test-suite.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

bash "$HERE/install.sh"
mkdir -p "$STATE"
# The daemons inherit this directory as theirs: never a checkout or test directory
# that is deleted later (s3s-fs resolves every key through its working directory and
# answers 500 to everything once that is gone).
cd "$STATE"

# --- Postgres ---------------------------------------------------------------
pg_healthy() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres; }
pg_ready_or_gone() { pg_healthy || ! live_pid "$PG_DATA/postmaster.pid" postgres; }

# As root, postgres runs as the postgres OS user, which must be able to reach
# $PG_DIR: grant search (x) on every ancestor it cannot traverse ($HOME=/root
# is mode 700 on Debian).
pg_grant_traverse() {
  local d path="" dirs=()
  IFS=/ read -ra parts <<<"${PG_DIR#/}"
  for d in "${parts[@]}"; do path="$path/$d"; dirs+=("$path"); done
  for d in "${dirs[@]}"; do
    [[ -d $d ]] || break
    runuser -u postgres -- test -x "$d" && continue
    log "granting postgres search permission on $d"
    if command -v setfacl >/dev/null && setfacl -m u:postgres:x "$d" 2>/dev/null; then :
    else chmod o+x "$d"; fi
  done
}

start_postgres() {
  pg_healthy && return 0
  mkdir -p "$PG_DIR" "$PG_SOCK"
  if [[ $(id -u) -eq 0 ]]; then
    pg_grant_traverse
    chown -R postgres:postgres "$PG_DIR"
  fi
  if [[ ! -s $PG_DATA/PG_VERSION ]]; then
    log "postgres: initdb $PG_DATA"
    rm -rf "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --no-locale >/dev/null
    # Test-only settings: loopback only, many connections, no durability.
    cat >>"$PG_DATA/postgresql.conf" <<CONF

# --- orchard e2e ---
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_SOCK'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  fi
  # A live postmaster for this data dir that is still starting up: give it time.
  if live_pid "$PG_DATA/postmaster.pid" postgres >/dev/null; then
    log "postgres: running but not ready yet; waiting"
    wait_until 60 "postgres ready or gone" pg_ready_or_gone || true
  fi
  if ! pg_healthy; then
    # A postmaster.pid whose process is dead (or a zombie) is stale; postgres
    # would refuse to start while a zombie still holds that pid.
    # Same for the unix-socket lock file.
    if ! live_pid "$PG_DATA/postmaster.pid" postgres >/dev/null; then
      rm -f "$PG_DATA/postmaster.pid" "$PG_SOCK/.s.PGSQL.$PG_PORT" "$PG_SOCK/.s.PGSQL.$PG_PORT.lock"
    fi
    log "postgres: starting on 127.0.0.1:$PG_PORT"
    # The port is given at start, so a data directory made with another port still works.
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-c port=$PG_PORT" -w -t 60 start >/dev/null \
      || { tail -20 "$PG_LOG" >&2; die "postgres failed to start (log: $PG_LOG)"; }
  fi
  wait_until 60 "postgres ready" pg_healthy || die "postgres not ready (log: $PG_LOG)"
}

# --- Redis Cluster ----------------------------------------------------------
RC_DIR="$STATE/redis-cluster"

cluster_info() { redis-cli -p "$1" cluster info 2>/dev/null | tr -d '\r'; }
redis_limits() {
  local p
  for p in "$@"; do
    redis-cli -p "$p" config set maxmemory 256mb >/dev/null &&
      redis-cli -p "$p" config set maxmemory-policy allkeys-lru >/dev/null
  done
}
cluster_healthy() {
  local info; info=$(cluster_info "${REDIS_CLUSTER_PORTS[0]}") || return 1
  grep -qx 'cluster_state:ok' <<<"$info" &&
  grep -qx 'cluster_known_nodes:6' <<<"$info" &&
  grep -qx 'cluster_slots_ok:16384' <<<"$info" &&
  all_nodes_ok   # every node up and agreeing (a dead node would pass the above)
}
all_nodes_ok() {
  local p
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    # (no `| grep -q` here: with pipefail an early grep exit can fail the pipe)
    grep -qx 'cluster_state:ok' <<<"$(cluster_info "$p")" || return 1
  done
}

start_redis_cluster() {
  # a running cluster gets the memory bound too (every key Orchard writes has a TTL)
  cluster_healthy && { redis_limits "${REDIS_CLUSTER_PORTS[@]}"; return 0; }
  log "redis-cluster: (re)creating on ports ${REDIS_CLUSTER_PORTS[*]}"
  local p nodes=()
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do redis_stop "$p" "$RC_DIR/$p/redis.pid"; done
  rm -rf "$RC_DIR"
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    mkdir -p "$RC_DIR/$p"
    redis-server --port "$p" --bind 127.0.0.1 \
      --cluster-enabled yes --cluster-config-file "$RC_DIR/$p/nodes.conf" \
      --cluster-node-timeout 5000 --appendonly no --save '' \
      --maxmemory 256mb --maxmemory-policy allkeys-lru \
      --dir "$RC_DIR/$p" --pidfile "$RC_DIR/$p/redis.pid" \
      --logfile "$RC_DIR/$p/redis.log" --daemonize yes
    nodes+=("127.0.0.1:$p")
  done
  for p in "${REDIS_CLUSTER_PORTS[@]}"; do
    wait_until 20 "redis :$p" redis-cli -p "$p" ping || die "redis :$p did not start"
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$RC_DIR/create.log" 2>&1 \
    || { cat "$RC_DIR/create.log" >&2; die "redis --cluster create failed"; }
  wait_until 60 "cluster_state:ok on all nodes" all_nodes_ok || die "redis cluster not ok"
  cluster_healthy || die "redis cluster unhealthy after create"
}

# --- Redis standalone -------------------------------------------------------
RS_DIR="$STATE/redis-$REDIS_PORT"
redis_single_healthy() { [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

start_redis_single() {
  redis_single_healthy && return 0
  log "redis: starting standalone on 127.0.0.1:$REDIS_PORT"
  redis_stop "$REDIS_PORT" "$RS_DIR/redis.pid"
  mkdir -p "$RS_DIR"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly no --save '' \
    --dir "$RS_DIR" --pidfile "$RS_DIR/redis.pid" --logfile "$RS_DIR/redis.log" \
    --daemonize yes
  wait_until 20 "redis :$REDIS_PORT" redis_single_healthy || die "redis :$REDIS_PORT did not start"
}

# --- S3 (s3s-fs) ------------------------------------------------------------
start_s3() {
  mkdir -p "$S3_DIR/$S3_BUCKET"          # the bucket is just a directory
  local pid
  if pid=$(live_pid "$S3_PID" s3s-fs) && [[ $(readlink "/proc/$pid/cwd") == *" (deleted)" ]]; then
    log "s3s-fs: pid $pid runs in a deleted directory (every request fails); restarting"
    stop_pid "$pid"
  fi
  http_answers "$S3_PORT" && return 0
  if pid=$(live_pid "$S3_PID" s3s-fs); then
    log "s3s-fs: pid $pid not answering; restarting"
    stop_pid "$pid"
  fi
  log "s3s-fs: starting on 127.0.0.1:$S3_PORT"
  # setsid+nohup: detach from this shell/session so it outlives the caller.
  setsid nohup "$S3S_BIN" --host 127.0.0.1 --port "$S3_PORT" \
    --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$S3_DIR" \
    >>"$S3_LOG" 2>&1 </dev/null &
  echo $! >"$S3_PID"
  wait_until 30 "s3s-fs on :$S3_PORT" http_answers "$S3_PORT" \
    || { tail -20 "$S3_LOG" >&2; die "s3s-fs did not start (log: $S3_LOG)"; }
}

start_postgres
start_redis_cluster
start_redis_single
start_s3

# --- env.sh (rewritten only when its content changes) -----------------------
cluster_nodes=$(printf '127.0.0.1:%s,' "${REDIS_CLUSTER_PORTS[@]}"); cluster_nodes=${cluster_nodes%,}
env_new=$(cat <<ENV
# Generated by e2e/services/up.sh; source it before running the tests.
export ORCHARD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
export ORCHARD_TEST_REDIS_CLUSTER_NODES=$cluster_nodes
export ORCHARD_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
export ORCHARD_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export ORCHARD_TEST_S3_BUCKET=$S3_BUCKET
export ORCHARD_TEST_S3_REGION=$S3_REGION
export ORCHARD_TEST_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY
export ORCHARD_TEST_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY
ENV
)
if [[ ! -f $STATE/env.sh || $(cat "$STATE/env.sh") != "$env_new" ]]; then
  printf '%s\n' "$env_new" >"$STATE/env.sh"
fi

echo "postgres       ok  postgres://postgres@127.0.0.1:$PG_PORT/postgres  (data $PG_DATA)"
echo "redis-cluster  ok  $cluster_nodes"
echo "redis          ok  redis://127.0.0.1:$REDIS_PORT"
echo "s3 (s3s-fs)    ok  http://127.0.0.1:$S3_PORT bucket=$S3_BUCKET (pid $(cat "$S3_PID" 2>/dev/null || echo ?))"
echo "env file           $STATE/env.sh"
