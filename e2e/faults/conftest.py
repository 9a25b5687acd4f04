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
from harness import (E2E, FaultUpstream, Orchard, Proc, free_port, http, production_env, raw_get,  # noqa: E402,F401
                     sources_file, tmp, wait_http)
from fault_server import content, files_of  # noqa: E402

WARM = [f"warm-{i}" for i in range(6)]
# What the real client (pip) downloads during every fault, from the pypiserver source:
# two projects with their dependencies, wheels and an sdist.
PIP_SET = ["requests", "six==1.16.0", "docopt==0.6.2"]
PIP = E2E / "venv/bin/pip"
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
    def __init__(self, tmp, fault, pkgs):
        self.tmp, self.fault = tmp, fault
        self.env = production_env(f"e2e-faults-{tmp.name}")
        self.env["ORCHARD_UPSTREAMS_FILE"] = sources_file(tmp / "faults-sources.yaml", ("up", fault.url), ("pkgs", pkgs.url))
        self.env["ORCHARD_FILL_LOCK_TTL"] = "3"
        self.env["ORCHARD_HTTP_READ_TIMEOUT"] = "5"
        self.env["ORCHARD_CACHE_TTL_INDEX"] = "2"  # pages expire during every phase
        self.env["ORCHARD_DATABASE_POOL_TIMEOUT"] = "3"
        self.env["ORCHARD_ADMIN_TOKEN"] = ADMIN_TOKEN
        self.replicas = [Orchard(self.tmp, self.env).start() for _ in range(3)]

    def restart(self, i):
        """Starts replica `i` again on its address (its clients reconnect to it)."""
        old = self.replicas[i]
        old.stop()
        self.replicas[i] = Orchard(self.tmp, self.env, ports=(old.port, old.admin_port)).start()

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


class Clients:
    """A real client during the fault: `pip download` of PIP_SET (with its dependencies)
    into an empty directory, again and again until stopped, each run through the next
    replica's `/sources/pkgs/simple/` (`avoid`: replicas a Service would have taken out
    of rotation, e.g. one killed). pip retries a 5xx or a refused connection (here 8
    times, about 30 s of backoff) as a CI job would; what matters is whether the run passed."""

    def __init__(self, cluster, tmp, avoid=()):
        self.cluster, self.tmp = cluster, tmp
        self.through = [i for i in range(3) if i not in avoid]  # replicas a Service would send it to
        self.runs = []  # (replica, passed, last lines of the output)
        self.stop_event = threading.Event()
        self.thread = None

    def run_once(self, n):
        i = self.through[n % len(self.through)]
        target = self.tmp / f"pip-download-{time.monotonic_ns()}"
        r = subprocess.run([str(PIP), "download", "--no-cache-dir", "--disable-pip-version-check", "--retries", "8",
                            "--timeout", "30", "-d", str(target), "--index-url",
                            f"{self.cluster.replicas[i].url}/sources/pkgs/simple/", *PIP_SET],
                           capture_output=True, text=True, timeout=300)
        files = sorted(p.name for p in target.glob("*")) if target.exists() else []
        passed = r.returncode == 0 and len(files) >= 6
        self.runs.append((i, passed, (r.stdout + r.stderr)[-600:]))

    def loop(self):
        n = 0
        while not self.stop_event.is_set():
            self.run_once(n)
            n += 1

    def start(self):
        self.thread = threading.Thread(target=self.loop)
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=300)
        return {"runs": len(self.runs), "failed": sum(1 for _, ok, _ in self.runs if not ok)}


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


class Pkgs:
    """pypiserver over e2e/pkgs-a: real projects for the real client."""

    def __init__(self, tmp):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/simple/"
        self.proc = Proc([str(E2E / "venv/bin/pypi-server"), "run", "-i", "127.0.0.1", "-p", str(self.port), "-a", ".",
                          "-P", ".", "--disable-fallback", str(E2E / "pkgs-a")], tmp / "faults-pypiserver.log")

    def start(self):
        self.proc.start()
        wait_http(self.url)
        return self

    def stop(self):
        self.proc.stop()


@pytest.fixture(scope="module")
def pkgs(tmp):
    p = Pkgs(tmp).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def cluster(tmp, fault, pkgs):
    c = Cluster(tmp, fault, pkgs)
    # warm every replica: pages and one file of each warm project
    for r in c.replicas:
        for p in WARM:
            assert http(f"{r.url}/pypi/simple/{p}/")[0] == 200
            assert http(f"{r.url}/sources/up/files/{p}/{files_of(p)[0][0]}")[0] == 200
    # and fill what pip downloads (one run; the others hit)
    clients = Clients(c, tmp)
    clients.run_once(0)
    assert clients.runs[0][1], clients.runs[0][2]
    yield c
    c.stop()
