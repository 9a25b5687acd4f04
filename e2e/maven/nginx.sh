#!/usr/bin/env bash
# Serves one of the Maven upstreams prepared by prepare.sh as static files with nginx.
#   nginx.sh start a|b|boot PORT
#                             serves $E2E/maven-upstream (a), $E2E/maven-upstream-b (b) or
#                             $E2E/maven-upstream-boot (boot)
#                             on 127.0.0.1:PORT (stopping a previous instance of the
#                             same upstream), returns once GET / answers; prints nothing
#   nginx.sh stop a|b|boot         stops it (no-op when it is not running)
# State (nginx.conf, nginx.pid, access.log, error.log, temp dirs) lives in
# $E2E/maven-nginx-a|b|boot. access.log has one line per request, "METHOD URI STATUS"
# (URI without query string), and is emptied by each start; the readiness probe of
# start is not logged.
set -euo pipefail
E2E="${ORCHARD_E2E_DIR:-$HOME/.cache/orchard/e2e}"
NGINX=${NGINX:-/usr/sbin/nginx}
usage() { echo "usage: $0 start a|b|boot PORT | stop a|b|boot" >&2; exit 2; }
[[ $# -ge 2 && $2 =~ ^(a|b|boot)$ ]] || usage
ID=$2
case $ID in a) ROOT="$E2E/maven-upstream" ;; b) ROOT="$E2E/maven-upstream-b" ;; boot) ROOT="$E2E/maven-upstream-boot" ;; esac
STATE="$E2E/maven-nginx-$ID"
PID_FILE="$STATE/nginx.pid"
CONF="$STATE/nginx.conf"

# Prints the pid when the pid file names a live nginx master.
running_pid() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q nginx || return 1
  echo "$pid"
}

stop() {
  local pid i
  if pid=$(running_pid); then
    kill -QUIT "$pid" 2>/dev/null || true   # graceful: workers finish their requests
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
}

# Writes stdin to $1 only when the content differs.
write_if_changed() {
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

start() {
  local port=$1 pid i user_line=
  [[ $port =~ ^[0-9]+$ ]] || usage
  compgen -G "$ROOT/.complete-*" >/dev/null || { echo "$ROOT is not prepared: run prepare.sh" >&2; exit 1; }
  stop
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    echo "port $port is already in use" >&2; exit 1
  fi
  mkdir -p "$STATE/tmp"
  : >"$STATE/access.log"   # each start begins with an empty access log
  # Workers run as www-data by default, which may not traverse $HOME: as root, keep root.
  [[ $EUID -ne 0 ]] || user_line='user root;'
  write_if_changed "$CONF" <<EOF
$user_line
daemon off;
worker_processes 1;
pid $PID_FILE;
error_log $STATE/error.log warn;
events { worker_connections 256; }
http {
  log_format e2e '\$request_method \$uri \$status';
  # the readiness probe of nginx.sh (header X-E2E-Probe) is not logged
  map \$http_x_e2e_probe \$e2e_loggable { "" 1; default 0; }
  access_log $STATE/access.log e2e if=\$e2e_loggable;
  client_body_temp_path $STATE/tmp/body;
  proxy_temp_path $STATE/tmp/proxy;
  fastcgi_temp_path $STATE/tmp/fastcgi;
  uwsgi_temp_path $STATE/tmp/uwsgi;
  scgi_temp_path $STATE/tmp/scgi;
  types {
    application/xml xml pom;
    application/java-archive jar;
    text/plain sha1 md5 sha256 sha512 asc;
  }
  default_type application/octet-stream;
  sendfile on;
  server {
    listen 127.0.0.1:$port;
    root $ROOT;
    autoindex on;
    location ~ /\\. { return 404; }   # marker files are not part of the repository
  }
}
EOF
  # Detached, with no inherited stdio, so callers capturing our output never hang.
  setsid "$NGINX" -p "$STATE" -e "$STATE/error.log" -c "$CONF" >>"$STATE/stderr.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PID_FILE"
  for ((i = 0; i < 100; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "nginx $ID exited; logs:" >&2; tail -n 20 "$STATE/stderr.log" "$STATE/error.log" >&2
      rm -f "$PID_FILE"; exit 1
    fi
    curl -sf -o /dev/null -H 'X-E2E-Probe: 1' "http://127.0.0.1:$port/" && kill -0 "$pid" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nginx $ID did not answer on port $port within 10 s" >&2
  tail -n 20 "$STATE/error.log" >&2; stop; exit 1
}

case $1 in
  start) [[ $# -eq 3 ]] || usage; start "$3" ;;
  stop) [[ $# -eq 2 ]] || usage; stop ;;
  *) usage ;;
esac
