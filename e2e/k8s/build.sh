#!/usr/bin/env bash
# Build (once) the binaries the operator / Helm-chart tests need, from Go
# modules only (no Docker, no downloads other than the Go module proxy):
#   kube-apiserver, kubectl  <- k8s.io/kubernetes  (wrapper module tools/kube)
#   etcd                     <- go.etcd.io/etcd/server/v3 (wrapper module tools/etcd)
#   helm                     <- helm.sh/helm/v3/cmd/helm (plain go install)
# into ${ORCHARD_K8S_BIN:-$HOME/.cache/orchard/k8s/bin}. A binary is rebuilt
# only when its version or its wrapper module's go.mod/go.sum changed, so a
# second run takes about a second.
#
# A cold build is long: about 13 min on 2 cores with the default
# ORCHARD_K8S_BUILD_JOBS=1 (kube-apiserver alone about 7 min), and the Go
# build cache grows by about 3 GB. ORCHARD_K8S_BUILD_JOBS=2 is faster when
# nothing else is compiling.
#
# Usage: build.sh [NAME...]   (NAME: etcd kube-apiserver kubectl helm; default all)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

command -v go >/dev/null || die "go is not installed"
mkdir -p "$K8S_BIN"

# One build at a time per bin dir (two test runs starting together).
exec 9>"$K8S_BIN/.build.lock"
flock 9

KUBE_MOD="$HERE/tools/kube"
ETCD_MOD="$HERE/tools/etcd"

# The versions in lib.sh and in the wrapper modules must agree.
staging_version="v0.${KUBE_VERSION#v1.}"
grep -qE "^require k8s\.io/kubernetes $KUBE_VERSION\$" "$KUBE_MOD/go.mod" \
  || die "tools/kube/go.mod does not require k8s.io/kubernetes $KUBE_VERSION"
if grep -E '^\s+k8s\.io/[a-z0-9-]+ => ' "$KUBE_MOD/go.mod" | grep -vq " $staging_version\$"; then
  die "tools/kube/go.mod has a k8s.io replace not at $staging_version"
fi
grep -qE "^require go\.etcd\.io/etcd/server/v3 $ETCD_VERSION\$" "$ETCD_MOD/go.mod" \
  || die "tools/etcd/go.mod does not require go.etcd.io/etcd/server/v3 $ETCD_VERSION"

want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=(etcd kube-apiserver kubectl helm)

# stamp NAME VERSION [MODULE_DIR]: what the cached binary was built from.
stamp() {
  local s="$2"
  [[ -z ${3:-} ]] || s="$s $(cat "$3/go.mod" "$3/go.sum" | sha256sum | cut -c1-16)"
  echo "$s"
}
up_to_date() { # NAME STAMP
  [[ -x $K8S_BIN/$1 && -f $K8S_BIN/.$1.stamp && "$(cat "$K8S_BIN/.$1.stamp")" == "$2" ]]
}

# Polite by default: one package at a time, one compiler thread, low priority.
gobuild() { # DIR ARGS...
  local dir=$1; shift
  (cd "$dir" && GOWORK=off GOMAXPROCS="$BUILD_JOBS" CGO_ENABLED=0 nice -n 10 go "$@")
}

kube_ldflags() {
  local major=${KUBE_VERSION#v}; major=${major%%.*}
  local minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  local f="-s -w" pkg key val
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=$KUBE_VERSION" "gitMajor=$major" "gitMinor=$minor" \
              "gitTreeState=clean" "gitCommit=" "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
      key=${kv%%=*}; val=${kv#*=}
      f="$f -X $pkg.$key=$val"
    done
  done
  echo "$f"
}

build_one() {
  local name=$1 st t0 out
  case $name in
    kube-apiserver|kubectl) st=$(stamp "$name" "$KUBE_VERSION" "$KUBE_MOD") ;;
    etcd)                   st=$(stamp "$name" "$ETCD_VERSION" "$ETCD_MOD") ;;
    helm)                   st=$(stamp "$name" "$HELM_VERSION") ;;
    *) die "unknown binary: $name (etcd kube-apiserver kubectl helm)" ;;
  esac
  if up_to_date "$name" "$st"; then
    log "$name: up to date ($K8S_BIN/$name)"
    return 0
  fi
  out="$K8S_BIN/.$name.tmp"
  rm -f "$out"
  t0=$(date +%s)
  log "$name: building (-p $BUILD_JOBS) ..."
  case $name in
    kube-apiserver|kubectl)
      gobuild "$KUBE_MOD" build -p "$BUILD_JOBS" -trimpath -ldflags "$(kube_ldflags)" \
        -o "$out" "k8s.io/kubernetes/cmd/$name" ;;
    etcd)
      gobuild "$ETCD_MOD" build -p "$BUILD_JOBS" -trimpath -ldflags "-s -w" \
        -o "$out" go.etcd.io/etcd/server/v3 ;;
    helm)
      # A plain `go install pkg@version` (helm's go.mod has no replace lines);
      # GOBIN into a temp dir, then moved like the others.
      local gobin; gobin=$(mktemp -d "$K8S_BIN/.helm-gobin.XXXXXX")
      GOBIN="$gobin" gobuild "$K8S_BIN" install -p "$BUILD_JOBS" -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
      mv -f "$gobin/helm" "$out"
      rm -rf "$gobin"
      ;;
  esac
  mv -f "$out" "$K8S_BIN/$name"
  echo "$st" > "$K8S_BIN/.$name.stamp"
  log "$name: built in $(( $(date +%s) - t0 ))s, $(du -h "$K8S_BIN/$name" | cut -f1)"
}

for n in "${want[@]}"; do build_one "$n"; done
log "binaries in $K8S_BIN"
