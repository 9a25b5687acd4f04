"""Fixtures of the fault suite: three `orchard serve` replicas sharing the real Postgres,
Redis Cluster and S3 server of `make services-up`, in front of the counting fault
upstream of the PyPI suite, and a bounded mixed load that checks every answer."""
import hashlib
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "pypi"))
from harness import FaultUpstream, Orchard, http, production_env, raw_get, sources_file, tmp  # noqa: E402,F401
from fault_server import content, files_of  # noqa: E402

WARM = [f"warm-{i}" for i in range(6)]
RESULTS = HERE / ".last-run.json"
ADMIN_TOKEN = "faults-suite-admin"


def invalidations_seen(replica):
    """How many times the replica reloaded its sources on an invalidation message."""
    n = 0
    for line in replica.log.read_text().splitlines():
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("message") == "upstream sources reloaded" and str(fields.get("reason", "")).startswith("invalidation"):
            n += 1
    return n


def service(*args):
    """e2e/faults/services.sh: a fault on a shared service."""
    return subprocess.run(["bash", str(HERE / "services.sh"), *args], check=True,
                          capture_output=True, text=True, timeout=120).stdout.strip()


class Cluster:
    def __init__(self, tmp, fault):
        self.tmp, self.fault = tmp, fault
        self.env = production_env(f"e2e-faults-{tmp.name}")
        self.env["ORCHARD_UPSTREAMS_FILE"] = sources_file(tmp / "faults-sources.yaml", ("up", fault.url))
        self.env["ORCHARD_FILL_LOCK_TTL"] = "3"
        self.env["ORCHARD_HTTP_READ_TIMEOUT"] = "5"
        self.env["ORCHARD_CACHE_TTL_INDEX"] = "2"  # pages expire during every phase
        self.env["ORCHARD_DATABASE_POOL_TIMEOUT"] = "3"
        self.env["ORCHARD_ADMIN_TOKEN"] = ADMIN_TOKEN
        self.replicas = [Orchard(self.tmp, self.env).start() for _ in range(3)]

    def restart(self, i):
        self.replicas[i].stop()
        self.replicas[i] = Orchard(self.tmp, self.env).start()

    def stop(self):
        for r in self.replicas:
            r.stop()


class Load:
    """`workers` threads sending a mix of requests round robin over the replicas until
    stopped: warm pages and files (70 %), and pages and files of new projects (30 %,
    misses; `misses=False` leaves them out). Every 200 body is checked: a file against
    the upstream's bytes, a page for its links."""

    def __init__(self, cluster, tag, misses=True, workers=6):
        self.cluster, self.tag, self.misses, self.workers = cluster, tag, misses, workers
        self.results = []  # (time answered, replica, kind, outcome, time sent)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = []
        self.started = None

    def one(self, rng, n):
        i = n % 3
        r = self.cluster.replicas[i]
        warm = not self.misses or rng.random() < 0.7
        if warm:
            project = rng.choice(WARM)
        else:
            project = f"{self.tag}-{n}-{rng.randrange(1 << 30)}"
        file = files_of(project)[0][0]
        kind = ("page" if rng.random() < 0.5 else "file") + ("" if warm else "-new")
        path = (f"/pypi/simple/{project}/" if kind.startswith("page")
                else f"/sources/up/files/{project}/{file}")
        try:
            status, headers, body, complete = raw_get(r.port, path, timeout=30)
        except OSError:
            return i, kind, "conn"
        if status != 200:
            return i, kind, str(status)
        if not complete:
            return i, kind, "cut"  # a body cut short (the client sees an error, never a whole wrong body)
        if kind.startswith("file") and hashlib.sha256(body).digest() != hashlib.sha256(content(file)).digest():
            return i, kind, "corrupt"
        if kind.startswith("page") and file.encode() not in body:
            return i, kind, "corrupt"
        return i, kind, "ok"

    def worker(self, seed):
        rng = random.Random(seed)
        n = seed
        while not self.stop_event.is_set():
            sent = time.monotonic() - self.started
            i, kind, outcome = self.one(rng, n)
            if outcome == "conn":
                time.sleep(0.1)  # a refused connection is instant: do not spin on a dead replica
            with self.lock:
                self.results.append((time.monotonic() - self.started, i, kind, outcome, sent))
            n += self.workers

    def start(self):
        self.started = time.monotonic()
        self.threads = [threading.Thread(target=self.worker, args=(s,)) for s in range(self.workers)]
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)
        return self

    def now(self):
        return time.monotonic() - self.started

    def summary(self, fault, healed_at, killed=None):
        by = {}
        for _, _, _, outcome, _ in self.results:
            by[outcome] = by.get(outcome, 0) + 1
        errors = [t for t, _, _, o, _ in self.results if o != "ok"]
        window = (max(errors) - min(errors)) if errors else 0.0
        after = [o for t, _, _, o, _ in self.results if t > healed_at + 5]
        assert len(after) >= 20, f"the load stalled: {len(after)} answers after recovery"
        return {"fault": fault, "sent": len(self.results), "by_outcome": by,
                "error_window_s": round(window, 1),
                "after_recovery": {o: after.count(o) for o in set(after)}}


def record(row):
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows = [r for r in rows if r["fault"] != row["fault"]] + [row]
    RESULTS.write_text(json.dumps(rows, indent=1))
    print(json.dumps(row))


@pytest.fixture(scope="module")
def fault(tmp):
    f = FaultUpstream(tmp, "/simple/").start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def cluster(tmp, fault):
    c = Cluster(tmp, fault)
    # warm every replica: pages and one file of each warm project
    for r in c.replicas:
        for p in WARM:
            assert http(f"{r.url}/pypi/simple/{p}/")[0] == 200
            assert http(f"{r.url}/sources/up/files/{p}/{files_of(p)[0][0]}")[0] == 200
    yield c
    c.stop()
