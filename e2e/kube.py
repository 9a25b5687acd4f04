"""Helpers for suites that use the local Kubernetes API server from e2e/k8s
(`make k8s-up`): kubectl, UpstreamSource status polling, and the operator binary run
on the host."""
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

from harness import Proc, free_port, http, wait_http

REPO = Path(__file__).resolve().parent.parent
K8S_STATE = Path(os.environ.get("ORCHARD_K8S_STATE", Path.home() / ".cache/orchard/k8s/state"))
K8S_BIN = Path(os.environ.get("ORCHARD_K8S_BIN", Path.home() / ".cache/orchard/k8s/bin"))
KUBECONFIG = str(K8S_STATE / "kubeconfig")
OPERATOR_BIN = os.environ.get("ORCHARD_OPERATOR_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/orchard/target")) / "debug/orchard-operator")


def kubectl(*args, input=None, check=True, namespace=None):
    cmd = [str(K8S_BIN / "kubectl"), "--kubeconfig", KUBECONFIG]
    if namespace:
        cmd += ["-n", namespace]
    p = subprocess.run(cmd + list(args), input=input, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr}")
    return p


def get(kind, name, namespace):
    p = kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


def ready(obj):
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == "Ready":
            return c
    return None


def wait_ready(name, namespace, status="True", reason=None, generation=None, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        obj = get("upstreamsource", name, namespace)
        c = ready(obj)
        last = c
        if c and c["status"] == status and (reason is None or c["reason"] == reason) \
                and (generation is None or c.get("observedGeneration") == generation):
            return obj
        time.sleep(0.05)
    raise AssertionError(f"{namespace}/{name} never became Ready={status} {reason or ''} (last: {last})")


def source_yaml(name, url, protocol="pypi", priority=50, extra=""):
    return f"""apiVersion: orchard.dev/v1alpha1
kind: UpstreamSource
metadata:
  name: {name}
spec:
  protocol: {protocol}
  url: {url}
  priority: {priority}
{extra}"""


def sql(url, query):
    return subprocess.run(["psql", url, "-Atc", query], check=True, capture_output=True, text=True).stdout.strip()


def redis_get(env, key):
    host, port = env["ORCHARD_REDIS_CLUSTER_NODES"].split(",")[0].split(":")
    return subprocess.run(["redis-cli", "-c", "-h", host, "-p", port, "GET", key], check=True,
                          capture_output=True, text=True).stdout.strip()


class Operator:
    def __init__(self, tmp, env, namespace, identity, lease_seconds=3, kubeconfig=None):
        self.metrics_port = free_port()
        self.log = tmp / f"operator-{identity}-{uuid.uuid4().hex[:6]}.log"
        full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "KUBECONFIG": kubeconfig or KUBECONFIG,
                "RUST_LOG": "info", "ORCHARD_OPERATOR_NAMESPACE": namespace, "ORCHARD_OPERATOR_IDENTITY": identity,
                "ORCHARD_OPERATOR_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
                "ORCHARD_OPERATOR_LEASE_SECONDS": str(lease_seconds)}
        for k in ("ORCHARD_DATABASE_URL", "ORCHARD_REDIS_CLUSTER_NODES", "ORCHARD_CACHE_NAMESPACE", "ORCHARD_CREDENTIALS_KEY"):
            full[k] = env[k]
        self.proc = Proc([OPERATOR_BIN], self.log, env=full)

    def start(self):
        self.proc.start()
        wait_http(f"http://127.0.0.1:{self.metrics_port}/healthz")
        return self

    def stop(self):
        return self.proc.stop()

    def kill(self):
        self.proc.p.kill()
        self.proc.p.wait()

    def metrics(self):
        out = {}
        for line in http(f"http://127.0.0.1:{self.metrics_port}/metrics")[2].decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out




def apply_crd():
    """Checks the API server is there and applies manifests/crd.yaml; returns the kubeconfig."""
    if not Path(KUBECONFIG).exists():
        raise AssertionError(f"{KUBECONFIG} is missing: run `make k8s-up` (make test does)")
    kubectl("apply", "-f", str(REPO / "manifests/crd.yaml"))
    kubectl("wait", "--for", "condition=established", "--timeout=30s", "crd/upstreamsources.orchard.dev")
    return KUBECONFIG


def new_namespace():
    # No controller-manager runs, so namespaces are never finalised after a delete:
    # every session uses new ones.
    ns = f"orchard-e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    return ns
