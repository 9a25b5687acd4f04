"""Fixtures of the operator suite: the real API server from e2e/k8s (started by
`make k8s-up`), the CRD applied from manifests/crd.yaml, a fresh namespace, the
operator binary running on the host against Postgres + the Redis Cluster, and an
`orchard serve` replica on the same database and cache, with fault-server upstreams."""
import base64
import secrets
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import *  # noqa: E402,F401,F403
from harness import FaultUpstream, Orchard, Proc, free_port, http, production_env, tmp  # noqa: E402,F401
from kube import *  # noqa: E402,F401,F403
from kube import REPO, Operator, apply_crd, kubectl, new_namespace  # noqa: E402,F401


@pytest.fixture(scope="session")
def cluster():
    return apply_crd()


@pytest.fixture(scope="session")
def namespace(cluster):
    return new_namespace()


@pytest.fixture(scope="session")
def backends():
    env = production_env(f"op-{uuid.uuid4().hex[:6]}/")
    env["ORCHARD_CREDENTIALS_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    return env


@pytest.fixture(scope="session")
def operator(tmp, backends, namespace):
    op = Operator(tmp, backends, namespace, "op-main").start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def replica(tmp, backends):
    # A long periodic refresh: what reaches the replica within a second is the
    # invalidation message, not the safety-net reload.
    r = Orchard(tmp, {**backends, "ORCHARD_SOURCES_REFRESH": "3600"}).start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def fault(tmp):
    f = FaultUpstream(tmp).start()
    yield f
    f.stop()


@pytest.fixture(scope="session")
def fault2(tmp):
    f = FaultUpstream(tmp).start()
    yield f
    f.stop()
