# Common settings and helpers for the local Kubernetes API server (envtest
# style: etcd + kube-apiserver as plain processes on 127.0.0.1, no Docker, no
# kubelet/scheduler/controller-manager). Sourced by build.sh, up.sh, down.sh
# and env.sh; not meant to be run directly.

K8S_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Versions. KUBE_VERSION must match tools/kube/go.mod (k8s.io/kubernetes and
# the v0.X.Y staging replaces), ETCD_VERSION tools/etcd/go.mod. build.sh
# checks that they agree.
KUBE_VERSION=v1.35.4
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0

# Where built binaries are cached (outside the repo).
K8S_BIN="${ORCHARD_K8S_BIN:-$HOME/.cache/orchard/k8s/bin}"
# Where the running cluster keeps pki, etcd data, logs, pid files, kubeconfig.
STATE="${ORCHARD_K8S_STATE:-$HOME/.cache/orchard/k8s/state}"

# Go build parallelism (packages built at once). 1 keeps the build polite on
# the 2-core machines; raise it when the machine is otherwise idle.
BUILD_JOBS="${ORCHARD_K8S_BUILD_JOBS:-1}"

# Ports (all bound to 127.0.0.1 only). Kept below Linux's ephemeral range
# (32768-60999): a busy test run leaves thousands of loopback connections
# whose local ports come from that range, and one of them holding a port makes
# the listener's bind fail ("address already in use") at random.
ETCD_PORT="${ORCHARD_K8S_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${ORCHARD_K8S_ETCD_PEER_PORT:-12380}"
API_PORT="${ORCHARD_K8S_API_PORT:-16443}"

ETCD_URL="http://127.0.0.1:$ETCD_PORT"
API_URL="https://127.0.0.1:$API_PORT"

PKI="$STATE/pki"
ETCD_DIR="$STATE/etcd"
ETCD_PID="$STATE/etcd.pid"
ETCD_LOG="$STATE/etcd.log"
API_CERT_DIR="$STATE/apiserver-certs"
API_PID="$STATE/kube-apiserver.pid"
API_LOG="$STATE/kube-apiserver.log"
KUBECONFIG_FILE="$STATE/kubeconfig"

KUBECTL="$K8S_BIN/kubectl"

LOG_TAG=k8s
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../proc.sh"   # log, die, wait_until, pid_alive, pid_gone, stop_pid

# live_pid PIDFILE BINARY: print the pid from PIDFILE if that process is alive
# and runs BINARY (guards against a stale pid file and pid reuse).
live_pid() {
  local pid exe
  [[ -f $1 ]] && pid=$(head -n1 "$1") && [[ $pid =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$2" ]] || return 1
  echo "$pid"
}

# port_listening PORT: something listens on 127.0.0.1:PORT (or a wildcard).
port_listening() {
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

etcd_healthy() {
  curl -fsS -m 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'
}

# The API server answers /readyz with our admin credentials.
api_ready() {
  [[ -f $KUBECONFIG_FILE ]] || return 1
  "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=3s get --raw /readyz >/dev/null 2>&1
}
