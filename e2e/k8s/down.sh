#!/usr/bin/env bash
# Stop the kube-apiserver and etcd started by up.sh (only the processes named
# in our pid files, and only if they run our binaries). Idempotent. Keeps the
# state (etcd data, pki, kubeconfig), so the next up.sh has the same objects
# and the same credentials.
#
# Usage: down.sh [--wipe]   --wipe also deletes the whole state dir.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

wipe=false
case "${1:-}" in
  "") ;;
  --wipe) wipe=true ;;
  *) die "usage: down.sh [--wipe]" ;;
esac

if [[ -d $STATE ]]; then
  exec 9>"$STATE/.up.lock"
  flock -w 300 9 || die "another up.sh holds $STATE/.up.lock"

  # API server first, so it does not spin on a missing etcd.
  if pid=$(live_pid "$API_PID" "$K8S_BIN/kube-apiserver"); then
    log "kube-apiserver: stopping pid $pid"
    stop_pid "$pid"
  fi
  rm -f "$API_PID"
  if pid=$(live_pid "$ETCD_PID" "$K8S_BIN/etcd"); then
    log "etcd: stopping pid $pid"
    stop_pid "$pid"
  fi
  rm -f "$ETCD_PID"
fi

if $wipe; then
  log "wiping $STATE"
  rm -rf "$STATE"
fi
log "kubernetes API server stopped"
