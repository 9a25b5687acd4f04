#!/usr/bin/env bash
# Start a real Kubernetes API server the way controller-runtime's envtest does:
# etcd + kube-apiserver as plain processes on 127.0.0.1 (no Docker, no nodes,
# no scheduler/controller-manager). Idempotent: what is already healthy is left
# running. Writes an admin kubeconfig (client certificate in system:masters)
# to $STATE/kubeconfig and $STATE/env.sh (KUBECONFIG, PATH with kubectl/helm).
#
# Needs the binaries from build.sh (run it first; it is a no-op when cached).
#
# Env: ORCHARD_K8S_STATE (default ~/.cache/orchard/k8s/state),
#      ORCHARD_K8S_BIN, ORCHARD_K8S_ETCD_PORT (12379),
#      ORCHARD_K8S_ETCD_PEER_PORT (12380), ORCHARD_K8S_API_PORT (16443).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

for b in etcd kube-apiserver kubectl; do
  [[ -x $K8S_BIN/$b ]] || die "$K8S_BIN/$b is missing: run e2e/k8s/build.sh first"
done
command -v openssl >/dev/null || die "openssl is not installed"

mkdir -p "$STATE" "$PKI" "$ETCD_DIR" "$API_CERT_DIR"
chmod 700 "$STATE" "$PKI"
# The daemons inherit this directory: never a checkout that is deleted later.
cd "$STATE"
# One up.sh at a time per state dir.
exec 9>"$STATE/.up.lock"
flock 9

SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1            # first address of SERVICE_CIDR (the "kubernetes" Service)
SA_ISSUER=https://kubernetes.default.svc.cluster.local

# ---------------------------------------------------------------- PKI (once)
# A CA that signs the API server's serving certificate and the admin client
# certificate (the API server trusts it via --client-ca-file), plus the RSA
# key pair that signs and verifies service-account tokens (TokenRequest).
ossl() { openssl "$@" >/dev/null 2>&1 || { openssl "$@"; die "openssl $1 failed"; }; }

# sign NAME SUBJECT EXTENSIONS -> $PKI/NAME.{key,crt} signed by the CA
sign() {
  local name=$1 subj=$2 ext=$3
  ossl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj"
  ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -out "$PKI/$name.crt" -extfile <(printf '%s\n' "$ext")
  rm -f "$PKI/$name.csr"
}

if [[ ! -s $PKI/ca.crt || ! -s $PKI/ca.key ]]; then
  log "pki: generating CA"
  rm -f "$PKI"/*.crt "$PKI"/*.key "$API_CERT_DIR"/apiserver.*
  ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=orchard-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi
if [[ ! -s $API_CERT_DIR/apiserver.crt || ! -s $API_CERT_DIR/apiserver.key ]]; then
  # kube-apiserver uses <cert-dir>/apiserver.{crt,key} when they exist (it
  # would otherwise generate a self-signed pair there); signing it with our
  # CA lets the kubeconfig trust one CA that is known before the start.
  log "pki: generating API server serving certificate"
  sign apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  mv -f "$PKI/apiserver.crt" "$API_CERT_DIR/apiserver.crt"
  mv -f "$PKI/apiserver.key" "$API_CERT_DIR/apiserver.key"
fi
if [[ ! -s $PKI/admin.crt || ! -s $PKI/admin.key ]]; then
  log "pki: generating admin client certificate (O=system:masters)"
  sign admin "/O=system:masters/CN=orchard-admin" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
fi
if [[ ! -s $PKI/sa.key || ! -s $PKI/sa.pub ]]; then
  log "pki: generating service-account signing key"
  ossl genrsa -out "$PKI/sa.key" 2048
  ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
fi
chmod 600 "$PKI"/*.key "$API_CERT_DIR"/apiserver.key

# ---------------------------------------------------------------- kubeconfig
b64() { base64 -w0 < "$1"; }
write_kubeconfig() {
  local tmp="$KUBECONFIG_FILE.tmp"
  ( umask 077
    cat > "$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: orchard-e2e
  cluster:
    server: $API_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: orchard-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: orchard-e2e
  context:
    cluster: orchard-e2e
    user: orchard-admin
    namespace: default
current-context: orchard-e2e
EOF
  )
  mv -f "$tmp" "$KUBECONFIG_FILE"
  cat > "$STATE/env.sh" <<EOF
# Source me: the local Kubernetes API server started by e2e/k8s/up.sh.
export KUBECONFIG="$KUBECONFIG_FILE"
export PATH="$K8S_BIN:\$PATH"
EOF
}
write_kubeconfig

# ---------------------------------------------------------------- helpers
# wait_healthy NAME PIDFILE BINARY LOGFILE TIMEOUT CHECK...: wait for CHECK,
# failing fast (with the log's tail) when the process dies.
wait_healthy() {
  local name=$1 pidfile=$2 bin=$3 logf=$4 timeout=$5; shift 5
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    if ! live_pid "$pidfile" "$bin" >/dev/null; then
      log "$name exited; last lines of $logf:"
      tail -n 30 "$logf" >&2 || true
      die "$name failed to start"
    fi
    if (( $(date +%s) >= deadline )); then
      log "last lines of $logf:"; tail -n 30 "$logf" >&2 || true
      die "$name not healthy after ${timeout}s"
    fi
    sleep 0.25
  done
}

ensure_port_free() { # NAME PORT ENVVAR
  if port_listening "$2"; then
    ss -Hltnp "sport = :$2" >&2 || true
    die "$1: port $2 is taken by another process (stop it, or set $3)"
  fi
}

# start_bg PIDFILE LOGFILE CMD...: detached from this shell and its terminal.
start_bg() {
  local pidfile=$1 logf=$2; shift 2
  : > "$logf"
  # 9>&-: the daemon must not inherit (and so hold forever) the up.lock.
  setsid "$@" >>"$logf" 2>&1 </dev/null 9>&- &
  echo $! > "$pidfile"
}

# ---------------------------------------------------------------- etcd
if pid=$(live_pid "$ETCD_PID" "$K8S_BIN/etcd"); then
  log "etcd: already running (pid $pid)"
else
  rm -f "$ETCD_PID"
  ensure_port_free etcd "$ETCD_PORT" ORCHARD_K8S_ETCD_PORT
  ensure_port_free "etcd (peer)" "$ETCD_PEER_PORT" ORCHARD_K8S_ETCD_PEER_PORT
  log "etcd $ETCD_VERSION: starting on $ETCD_URL (data $ETCD_DIR/data)"
  # --unsafe-no-fsync as envtest does: a throwaway test store, and the disk is shared.
  start_bg "$ETCD_PID" "$ETCD_LOG" "$K8S_BIN/etcd" \
    --name=orchard-e2e \
    --data-dir="$ETCD_DIR/data" \
    --listen-client-urls="$ETCD_URL" \
    --advertise-client-urls="$ETCD_URL" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="orchard-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --unsafe-no-fsync=true \
    --log-level=warn
fi
wait_healthy etcd "$ETCD_PID" "$K8S_BIN/etcd" "$ETCD_LOG" 60 etcd_healthy
log "etcd: healthy"

# ---------------------------------------------------------------- kube-apiserver
if pid=$(live_pid "$API_PID" "$K8S_BIN/kube-apiserver"); then
  log "kube-apiserver: already running (pid $pid)"
else
  rm -f "$API_PID"
  ensure_port_free kube-apiserver "$API_PORT" ORCHARD_K8S_API_PORT
  log "kube-apiserver $KUBE_VERSION: starting on $API_URL"
  start_bg "$API_PID" "$API_LOG" "$K8S_BIN/kube-apiserver" \
    --etcd-servers="$ETCD_URL" \
    --cert-dir="$API_CERT_DIR" \
    --secure-port="$API_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=RBAC \
    --allow-privileged=true \
    --disable-admission-plugins=ServiceAccount \
    --endpoint-reconciler-type=none
  # endpoint-reconciler-type=none: the "kubernetes" Service is still created,
  # but its Endpoints would have to carry 127.0.0.1, which validation rejects
  # (an error logged every 10 s otherwise). Nothing here runs in a pod.
fi
wait_healthy kube-apiserver "$API_PID" "$K8S_BIN/kube-apiserver" "$API_LOG" 120 api_ready
# /readyz is green before the bootstrap controller has made the "default" namespace.
wait_healthy kube-apiserver "$API_PID" "$K8S_BIN/kube-apiserver" "$API_LOG" 30 \
  "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=3s get namespace default
log "kube-apiserver: ready (pid $(cat "$API_PID"))"

echo "kubeconfig: $KUBECONFIG_FILE"
echo "to use it:  . $STATE/env.sh    (sets KUBECONFIG; puts kubectl and helm from $K8S_BIN on PATH)"
