#!/usr/bin/env bash
# Check that the API server from up.sh is a real, usable Kubernetes: version,
# namespaces, RBAC denial for a service account, a CRD and a custom resource,
# TokenRequest, and a Helm install/uninstall. Safe to re-run against the same
# cluster. Prints "N passed, N failed"; exits non-zero on any failure.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/lib.sh"

[[ -f $KUBECONFIG_FILE ]] || die "no $KUBECONFIG_FILE: run e2e/k8s/up.sh first"
export KUBECONFIG="$KUBECONFIG_FILE"
k() { "$KUBECTL" --request-timeout=20s "$@"; }
HELM="$K8S_BIN/helm"
NS=orchard-smoke

passed=0 failed=0
check() { # DESCRIPTION CMD...
  local desc=$1 out; shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1)); printf 'ok   %s\n' "$desc"
  else
    failed=$((failed + 1)); printf 'FAIL %s\n%s\n' "$desc" "$(sed 's/^/     /' <<<"$out")"
  fi
}

server_version_is() { k version -o json | grep -q "\"gitVersion\": \"$KUBE_VERSION\""; }
builtin_namespaces() {
  local ns; ns=$(k get ns -o name)
  for n in default kube-system kube-public kube-node-lease; do grep -qx "namespace/$n" <<<"$ns" || return 1; done
}
ensure_ns() { k get ns "$NS" >/dev/null 2>&1 || k create ns "$NS"; }
sa_cannot_list_secrets() {
  local ans; ans=$(k auth can-i --as="system:serviceaccount:$NS:default" list secrets -n "$NS" 2>/dev/null)
  [[ $ans == no ]]
}
admin_can_do_anything() { [[ $(k auth can-i '*' '*' --all-namespaces) == yes ]]; }
crd_and_cr() {
  k apply -f - <<'EOF' || return 1
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.orchard.local
spec:
  group: smoke.orchard.local
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
EOF
  k wait --for condition=established --timeout=30s crd/widgets.smoke.orchard.local || return 1
  # The discovery cache can lag right after Established; retry briefly.
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    k apply -n "$NS" -f - <<'EOF' && break
apiVersion: smoke.orchard.local/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3}
EOF
    sleep 1
  done
  [[ $(k get widget w1 -n "$NS" -o jsonpath='{.spec.size}') == 3 ]] || return 1
  # Schema validation is enforced.
  if k apply -n "$NS" -f - <<'EOF' 2>/dev/null; then return 1; fi
apiVersion: smoke.orchard.local/v1
kind: Widget
metadata: {name: bad}
spec: {size: 0}
EOF
  k delete widget w1 -n "$NS" --wait=true
}
token_request() {
  # No controller-manager here, so nothing creates the "default" service account.
  k get sa default -n "$NS" >/dev/null 2>&1 || k create sa default -n "$NS" || return 1
  local tok; tok=$(k create token default -n "$NS" --duration=10m) || return 1
  [[ $tok == eyJ* ]] || return 1
  # The server accepts the token it issued (TokenReview via a real request).
  "$KUBECTL" --kubeconfig=/dev/null --server="$API_URL" --insecure-skip-tls-verify --token="$tok" \
    auth whoami -o jsonpath='{.status.userInfo.username}' | grep -qx "system:serviceaccount:$NS:default"
}
helm_version() { "$HELM" version --short | grep -q "^$HELM_VERSION"; }
helm_install() {
  local d; d=$(mktemp -d)
  mkdir -p "$d/chart/templates"
  printf 'apiVersion: v2\nname: smoke\nversion: 0.1.0\n' > "$d/chart/Chart.yaml"
  printf 'greeting: hello\n' > "$d/chart/values.yaml"
  cat > "$d/chart/templates/cm.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-cm}
data: {greeting: {{ .Values.greeting | quote }}}
EOF
  "$HELM" upgrade --install smoke "$d/chart" -n "$NS" --set greeting=hi --wait --timeout 60s &&
    [[ $(k get cm smoke-cm -n "$NS" -o jsonpath='{.data.greeting}') == hi ]] &&
    "$HELM" uninstall smoke -n "$NS" --wait
  local rc=$?; rm -rf "$d"; return $rc
}

check "server reports $KUBE_VERSION"                         server_version_is
check "built-in namespaces exist"                            builtin_namespaces
check "namespace $NS"                                        ensure_ns
check "RBAC: a service account may not list secrets"         sa_cannot_list_secrets
check "admin (system:masters) may do anything"               admin_can_do_anything
check "CRD established, custom resource validated and stored" crd_and_cr
check "TokenRequest issues a token the server accepts"       token_request
[[ -x $HELM ]] && {
check "helm $HELM_VERSION"                                   helm_version
check "helm install/uninstall a chart"                       helm_install
}
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
