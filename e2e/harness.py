"""What every end-to-end suite shares: processes, HTTP helpers, a real Orchard
process with its metrics, and the connection settings of the real backing services
that `make services-up` starts."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

E2E = Path(os.environ.get("ORCHARD_E2E_DIR", Path.home() / ".cache/orchard/e2e"))
ORCHARD_BIN = os.environ.get("ORCHARD_BIN") or str(
    Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/orchard/target")) / "debug/orchard"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET", headers=None, data=None, timeout=30):
    """(status, headers with lowercase names, body) without raising on HTTP errors."""
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, lower(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, lower(e.headers), e.read()


def raw_get(port, path, headers=None, timeout=30):
    """GET with http.client, tolerating bodies cut short: (status, headers with
    lowercase names, body, complete?). Connection errors raise OSError."""
    import http.client as httpclient
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        try:
            body, complete = resp.read(), True
        except (httpclient.IncompleteRead, ConnectionError) as e:
            body, complete = getattr(e, "partial", b""), False
        return resp.status, lower(resp.getheaders()), body, complete
    finally:
        conn.close()


def lower(headers):
    items = headers.items() if hasattr(headers, "items") else headers
    return {k.lower(): v for k, v in items}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wait_http(url, status=200, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = http(url, timeout=5)[0]
            if last == status:
                return
        except OSError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status} (last: {last})")


class Proc:
    def __init__(self, args, log, env=None, cwd=None):
        self.args, self.log, self.env, self.cwd = args, log, env, cwd
        self.p = None

    def start(self):
        self.p = subprocess.Popen(self.args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                  env=self.env, cwd=self.cwd, start_new_session=True)
        return self

    def stop(self):
        if self.p and self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        return self.p.returncode if self.p else None


class FaultUpstream:
    """e2e/pypi/fault_server.py: an upstream that counts requests and misbehaves on
    request. `url_path` picks the protocol it is used as: /simple/ (PyPI), /npm/, /m2/."""

    def __init__(self, tmp, url_path="/simple/"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}{url_path}"
        server = Path(__file__).resolve().parent / "pypi/fault_server.py"
        self.proc = Proc([sys.executable, str(server), str(self.port)], tmp / f"fault-{self.port}.log")

    def start(self):
        self.proc.start()
        wait_http(f"{self.base}/simple/")
        return self

    def stop(self):
        self.proc.stop()

    def mode(self, key, mode):
        assert http(f"{self.base}/__mode/{key}/{mode}", method="POST", data=b"")[0] == 200

    def reset(self):
        http(f"{self.base}/__reset", method="POST", data=b"")

    def counts(self):
        return json.loads(http(f"{self.base}/__count")[2])

    def total(self):
        return sum(self.counts().values())


METRIC = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')


class Orchard:
    def __init__(self, tmp, env, ports=None):
        """`ports`: (port, admin port) of a replica this one replaces, as a restarted pod
        keeps its address behind the Service; new free ports otherwise."""
        self.dir = tmp / f"orchard-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self.port, self.admin_port = ports or (free_port(), free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.index = f"{self.url}/pypi/simple/"
        full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
                "ORCHARD_LISTEN_ADDR": f"127.0.0.1:{self.port}", "ORCHARD_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
                "ORCHARD_LOG_FORMAT": "json", "RUST_LOG": "info"}
        full.update(env)
        self.env = full
        self.log = self.dir / "orchard.log"
        self.proc = Proc([ORCHARD_BIN, "serve"], self.log, env=full, cwd=self.dir)

    def start(self):
        self.proc.start()
        wait_http(f"{self.admin}/readyz")
        wait_http(f"{self.url}/")
        return self

    def stop(self):
        return self.proc.stop()

    def metrics(self):
        out = {}
        for line in http(f"{self.admin}/metrics")[2].decode().splitlines():
            m = METRIC.match(line)
            if m:
                labels = dict(kv.split("=", 1) for kv in re.findall(r'\w+="[^"]*"', m.group(2) or ""))
                labels = {k: v.strip('"') for k, v in labels.items()}
                out[(m.group(1), tuple(sorted(labels.items())))] = float(m.group(3))
        return out

    def requests_by_cache(self, protocol="pypi"):
        """{cache label: count} over one protocol's routes (and /sources/…)."""
        totals = {}
        for (name, labels), v in self.metrics().items():
            if name == "orchard_http_requests_total":
                d = dict(labels)
                if d["protocol"] in (protocol, "source"):
                    totals[d["cache"]] = totals.get(d["cache"], 0) + v
        return totals

    def counter(self, name):
        return sum(v for (n, _), v in self.metrics().items() if n == name)


def sources_file(path, *upstreams, protocol="pypi"):
    """A YAML sources file; upstreams are (name, url) in priority order."""
    lines = []
    for prio, (name, url) in enumerate(upstreams, start=1):
        lines += [f"- name: {name}", f"  protocol: {protocol}", f"  url: {url}", f"  priority: {prio * 10}"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def service_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `make test` (it starts the services)")
    return value


def fresh_postgres_url():
    admin = service_env("ORCHARD_TEST_DATABASE_URL")
    name = f"orchard_e2e_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    return admin.rsplit("/", 1)[0] + "/" + name


def production_env(prefix):
    return {
        "ORCHARD_DATABASE_URL": fresh_postgres_url(),
        "ORCHARD_REDIS_CLUSTER_NODES": service_env("ORCHARD_TEST_REDIS_CLUSTER_NODES"),
        "ORCHARD_CACHE_NAMESPACE": f"e2e{uuid.uuid4().hex[:8]}",
        "ORCHARD_S3_ENDPOINT": service_env("ORCHARD_TEST_S3_ENDPOINT"),
        "ORCHARD_S3_BUCKET": service_env("ORCHARD_TEST_S3_BUCKET"),
        "ORCHARD_S3_REGION": service_env("ORCHARD_TEST_S3_REGION"),
        "ORCHARD_S3_ACCESS_KEY_ID": service_env("ORCHARD_TEST_S3_ACCESS_KEY_ID"),
        "ORCHARD_S3_SECRET_ACCESS_KEY": service_env("ORCHARD_TEST_S3_SECRET_ACCESS_KEY"),
        "ORCHARD_S3_PREFIX": prefix,
    }


@pytest.fixture(scope="session")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("e2e")
