"""The Helm chart: lint and template for the default values and every file in
charts/orchard/ci/, server-side dry run of the rendered objects, a real `helm install`,
the operator's RBAC checked with `kubectl auth can-i`, and the operator binary running
with a token of the chart's ServiceAccount."""
import base64
import json
import secrets
from pathlib import Path

import pytest
import yaml_lite

from conftest import (CHART, REPO, VALUES, Operator, get, helm, kubectl, new_namespace, production_env,
                      wait_ready)


def values_args(values):
    return ["-f", values] if values else []


def render(values, namespace="orchard", release="orch", extra=()):
    return helm("template", release, str(CHART), "-n", namespace, *values_args(values), *extra).stdout


@pytest.mark.parametrize("values", VALUES, ids=lambda v: Path(v).name if v else "defaults")
def test_lint_and_template(values):
    out = helm("lint", "--strict", str(CHART), *values_args(values)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out, out
    docs = yaml_lite.kinds(render(values))
    assert "Deployment" in docs and "Service" in docs and "Secret" in docs


@pytest.mark.parametrize("values", VALUES, ids=lambda v: Path(v).name if v else "defaults")
def test_rendered_objects_pass_server_side_dry_run(cluster, values):
    ns = new_namespace()
    rendered = render(values, namespace=ns)
    p = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, namespace=ns, check=False)
    assert p.returncode == 0, p.stderr
    assert "(server dry run)" in p.stdout


def test_values_are_checked():
    p = helm("template", "x", str(CHART), "--set", "bogus=1", check=False)
    assert p.returncode != 0 and "additional properties 'bogus' not allowed" in p.stderr, p.stderr
    p = helm("template", "x", str(CHART), "--set", "server.logFormat=xml", check=False)
    assert p.returncode != 0 and "logFormat" in p.stderr, p.stderr
    p = helm("template", "x", str(CHART), "--set", "database.url=postgres://db/orchard", check=False)
    assert p.returncode != 0 and "needs shared artifact storage" in p.stderr, p.stderr


def test_defaults_are_embedded_mode_and_optional_objects_are_off():
    out = render(None)
    kinds = yaml_lite.kinds(out)
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "Role", "StatefulSet"):
        assert kind not in kinds, kind
    assert "prometheus.io/scrape" in out
    assert "helm.sh/resource-policy: keep" in out
    assert "readOnlyRootFilesystem: true" in out and "runAsNonRoot: true" in out
    assert "replicas: 1" in out
    # HPA on: no replicas field on the server Deployment.
    out = render(str(CHART / "ci/cluster-values.yaml"))
    server = yaml_lite.document(out, "Deployment", "orch-orchard-server")
    assert "\n  replicas:" not in server.split("template:")[0]
    assert "HorizontalPodAutoscaler" in yaml_lite.kinds(out)


def test_chart_crd_is_the_generated_one():
    assert (CHART / "files/crd.yaml").read_text() == (REPO / "manifests/crd.yaml").read_text(), \
        "charts/orchard/files/crd.yaml differs from manifests/crd.yaml: run `make crds`"


def test_rendered_install_in_manifests_is_current():
    rendered = (REPO / "manifests/install.yaml").read_text()
    fresh = render(str(REPO / "manifests/install-values.yaml"), namespace="orchard", release="orchard")
    # The generated credentials key differs per render; everything else must match.
    strip = lambda t: "\n".join(l for l in t.splitlines() if "checksum/secret" not in l)
    assert strip(rendered) == strip(fresh), "manifests/install.yaml is stale: run `make manifests`"


def test_kustomize_install_passes_server_side_dry_run(cluster):
    if not get("namespace", "orchard", None):
        kubectl("create", "namespace", "orchard")
    p = kubectl("apply", "-k", str(REPO / "manifests"), "--dry-run=server", check=False)
    assert p.returncode == 0, p.stderr
    for kind in ("deployment.apps/orchard-server", "deployment.apps/orchard-operator", "role.rbac.authorization.k8s.io/orchard-operator",
                 "customresourcedefinition.apiextensions.k8s.io/upstreamsources.orchard.dev"):
        assert kind in p.stdout, p.stdout


@pytest.fixture(scope="module")
def installed(cluster):
    ns = new_namespace()
    kubectl("create", "secret", "generic", "orchard-connections", namespace=ns,
            *[f"--from-literal={k}={v}" for k, v in {
                "url": "postgres://orchard:pw@db.internal:5432/orchard", "redis-password": "pw",
                "access-key-id": "orchard", "secret-access-key": "pw",
                "credentials-key": base64.b64encode(secrets.token_bytes(32)).decode()}.items()])
    # The CRD is cluster-wide and already applied by kubectl (not owned by a release), so
    # the install leaves it out; its rendering is covered by the dry runs above.
    helm("install", "orch", str(CHART), "-n", ns, "-f", str(CHART / "ci/cluster-values.yaml"), "--set", "crds.enabled=false")
    return ns


def test_helm_install_and_upgrade(installed):
    ns = installed
    status = json.loads(helm("status", "orch", "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    for kind, name in [("deployment", "orch-orchard-server"), ("deployment", "orch-orchard-operator"),
                       ("role", "orch-orchard-operator"), ("serviceaccount", "orch-orchard-operator"),
                       ("horizontalpodautoscaler", "orch-orchard-server"), ("servicemonitor", "orch-orchard-server")]:
        assert get(kind, name, ns), f"{kind}/{name} missing"
    assert "pypi/simple/" in status["info"]["notes"] and "/npm/" in status["info"]["notes"] and "/maven/" in status["info"]["notes"]
    helm("upgrade", "orch", str(CHART), "-n", ns, "-f", str(CHART / "ci/cluster-values.yaml"), "--set", "crds.enabled=false")
    assert json.loads(helm("status", "orch", "-n", ns, "-o", "json").stdout)["version"] == 2


def test_generated_credentials_key_survives_upgrades(cluster):
    ns = new_namespace()
    args = ["-n", ns, "-f", str(CHART / "ci/inline-values.yaml"), "--set", "crds.enabled=false"]
    helm("install", "keep", str(CHART), *args)
    first = get("secret", "keep-orchard", ns)["data"]["credentials-key"]
    assert len(base64.b64decode(base64.b64decode(first))) == 32
    helm("upgrade", "keep", str(CHART), *args)
    assert get("secret", "keep-orchard", ns)["data"]["credentials-key"] == first


SA = "system:serviceaccount:{ns}:orch-orchard-operator"
ALLOWED = [
    ("get", "upstreamsources.orchard.dev"), ("list", "upstreamsources.orchard.dev"),
    ("watch", "upstreamsources.orchard.dev"), ("patch", "upstreamsources.orchard.dev"),
    ("patch", "upstreamsources.orchard.dev/status"), ("update", "upstreamsources.orchard.dev/finalizers"),
    ("get", "secrets"), ("list", "secrets"), ("watch", "secrets"),
    ("get", "leases.coordination.k8s.io"), ("create", "leases.coordination.k8s.io"),
    ("update", "leases.coordination.k8s.io"),
    ("create", "events.events.k8s.io"), ("patch", "events.events.k8s.io"),
]
DENIED = [
    ("create", "secrets"), ("update", "secrets"), ("delete", "secrets"),
    ("delete", "upstreamsources.orchard.dev"), ("create", "upstreamsources.orchard.dev"),
    ("update", "upstreamsources.orchard.dev"), ("delete", "leases.coordination.k8s.io"),
    ("create", "pods"), ("update", "deployments.apps"), ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("update", "upstreamsources.orchard.dev/status"), ("create", "serviceaccounts/token"),
    ("*", "*"),
]


def can_i(ns, verb, resource, *extra):
    if "/" in resource:  # resource/subresource (kubectl reads "a/b" as a resource name)
        resource, sub = resource.split("/")
        extra = (*extra, f"--subresource={sub}")
    p = kubectl("auth", "can-i", verb, resource, f"--as={SA.format(ns=ns)}", *extra, namespace=ns, check=False)
    return p.stdout.strip() == "yes"


def test_operator_rbac_is_enough_and_no_more(installed):
    ns = installed
    missing = [(v, r) for v, r in ALLOWED if not can_i(ns, v, r)]
    assert not missing, f"the operator lacks {missing}"
    extra = [(v, r) for v, r in DENIED if can_i(ns, v, r)]
    assert not extra, f"the operator may {extra}"
    other = new_namespace()
    for verb in ("get", "list", "watch"):
        assert not can_i(other, verb, "secrets"), f"{verb} secrets in another namespace"
    assert not kubectl("auth", "can-i", "list", "secrets", "--all-namespaces", f"--as={SA.format(ns=ns)}",
                       check=False).stdout.strip() == "yes", "cluster-wide secret reads"
    role = get("role", "orch-orchard-operator", ns)
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule.get("apiGroups", []), rule
    assert not kubectl("get", "clusterrolebindings", "-o", "json").stdout.count("orch-orchard-operator")


def test_operator_runs_with_the_chart_service_account_token(installed, tmp):
    ns = installed
    token = kubectl("create", "token", "orch-orchard-operator", "--duration=1h", namespace=ns).stdout.strip()
    admin = json.loads(kubectl("config", "view", "--raw", "-o", "json").stdout)
    cluster = admin["clusters"][0]["cluster"]
    kubeconfig = tmp / f"sa-{ns}.kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa", "namespace": ns}}]}))
    env = production_env(f"chart-{ns}/")
    env["ORCHARD_CREDENTIALS_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    op = Operator(tmp, env, ns, "chart-sa", kubeconfig=str(kubeconfig)).start()
    try:
        kubectl("create", "secret", "generic", "npm-internal-token", "--from-literal=token=sa-test-token", namespace=ns)
        kubectl("label", "secret", "npm-internal-token", "orchard.dev/upstream-credentials=true", namespace=ns)
        kubectl("apply", "-f", str(REPO / "manifests/examples"), namespace=ns)
        for name in ("pypi-public", "npm-internal", "maven-central-mirror"):
            wait_ready(name, ns)
        assert get("lease", "orchard-operator", ns)["spec"]["holderIdentity"] == "chart-sa"
        events = json.loads(kubectl("get", "events", "-o", "json", namespace=ns).stdout)["items"]
        assert any(e["reason"] == "Synced" for e in events)
        kubectl("delete", "upstreamsource", "pypi-public", "--timeout=20s", namespace=ns)
        assert get("upstreamsource", "pypi-public", ns) is None
        assert "forbidden" not in op.log.read_text().lower()
    finally:
        op.stop()


def test_every_value_is_documented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = [l for i, l in enumerate(lines)
                    if l.strip() and not l.lstrip().startswith(("#", "-")) and ":" in l
                    and not lines[i - 1].strip().startswith("#")]
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"
