"""Fixtures of the Helm chart suite: helm and kubectl from e2e/k8s against the local
API server (`make k8s-up`), the chart in charts/orchard and its CI values files."""
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import *  # noqa: E402,F401,F403
from harness import production_env, tmp  # noqa: E402,F401
from kube import *  # noqa: E402,F401,F403
from kube import K8S_BIN, KUBECONFIG, REPO, apply_crd, kubectl  # noqa: E402,F401

CHART = REPO / "charts/orchard"
VALUES = [None] + sorted(str(p) for p in (CHART / "ci").glob("*.yaml"))


def helm(*args, check=True):
    p = subprocess.run([str(K8S_BIN / "helm"), "--kubeconfig", KUBECONFIG, *args], capture_output=True, text=True,
                       timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {p.stdout}{p.stderr}")
    return p


@pytest.fixture(scope="session")
def cluster():
    apply_crd()
    kubectl("apply", "-f", str(HERE / "servicemonitor-crd.yaml"))
    kubectl("wait", "--for", "condition=established", "--timeout=30s", "crd/servicemonitors.monitoring.coreos.com")
    return KUBECONFIG
