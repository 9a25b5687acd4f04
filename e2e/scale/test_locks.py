"""The cross-replica fill lock under pressure (three replicas, ORCHARD_FILL_LOCK_TTL=3, so
the holder renews every second): a replica that takes the lock re-checks whether another
one committed meanwhile (a fast upstream gets one GET however many requests race), a
renewal the cache does not answer is retried (the fill goes on), and a fill whose lock
another replica took stops (nothing stored, the client's body cut short)."""
import hashlib
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import content, http, raw_get, service_env

FIRST_NODE = service_env("ORCHARD_TEST_REDIS_CLUSTER_NODES").split(",")[0]


def redis(*args):
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def lock_key(replica, name, timeout=10):
    """The fill-lock key of file `name` in the Redis Cluster (waits until it exists)."""
    ns = replica.env["ORCHARD_CACHE_NAMESPACE"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = redis("--cluster", "call", FIRST_NODE, "KEYS", f"{ns}*fill-lock/*{name}")
        keys = {line.split(": ", 1)[1] for line in out.splitlines() if ": " in line and name in line}
        if keys:
            assert len(keys) == 1, keys
            return keys.pop()
        time.sleep(0.05)
    raise AssertionError(f"no fill lock for {name} appeared")


def node_of(key):
    """host:port of the master that serves `key`'s slot."""
    slot = int(redis("-c", "-p", FIRST_NODE.rsplit(":", 1)[1], "CLUSTER", "KEYSLOT", key).strip())
    for line in redis("-p", FIRST_NODE.rsplit(":", 1)[1], "CLUSTER", "NODES").splitlines():
        fields = line.split()
        if "master" in fields[2] and "fail" not in fields[2]:
            for r in fields[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return fields[1].split("@")[0]
    raise AssertionError(f"no master serves slot {slot}")


def outcomes(replica):
    return {dict(labels)["outcome"]: v for (n, labels), v in replica.metrics().items() if n == "orchard_fill_lock_total"}


def get(port, path):
    status, _, body, complete = raw_get(port, path, timeout=60)
    return status, hashlib.sha256(body).hexdigest(), complete


def test_racing_replicas_with_a_fast_upstream_make_one_get(cluster, fault):
    """400 concurrent requests for each of five fresh files, over the three replicas, with
    an upstream that answers at once: one upstream GET per file (before the re-check
    after acquiring the lock, one run in two made two)."""
    replicas, _ = cluster
    ports = [r.port for r in replicas]
    for i in range(5):
        project, name = f"race-{i}", f"race_{i}-1.0.tar.gz"
        for r in replicas:
            assert http(f"{r.url}/sources/up/simple/{project}/")[0] == 200
        path = f"/sources/up/files/{project}/{name}"
        want = hashlib.sha256(content(name)).hexdigest()
        with ThreadPoolExecutor(100) as pool:
            results = list(pool.map(lambda n: get(ports[n % 3], path), range(400)))
        assert all(r == (200, want, True) for r in results), [r for r in results if r != (200, want, True)][:3]
        assert fault.counts().get(f"/files/{name}") == 1, (name, fault.counts().get(f"/files/{name}"))


def test_a_renewal_the_cache_does_not_answer_is_retried(cluster, fault):
    """The node holding the lock pauses its clients for 1.5 s (longer than the 250 ms Redis
    deadline, shorter than the 3 s lock): the renewal is retried, the lock kept, the fill
    completes with one upstream GET."""
    replicas, _ = cluster
    holder = replicas[0]
    project, name = "renew-pause", "renew_pause-1.0.tar.gz"
    assert http(f"{holder.url}/sources/up/simple/{project}/")[0] == 200
    fault.mode(name, "drip5")
    before = outcomes(holder)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=get(holder.port, f"/sources/up/files/{project}/{name}")))
    t.start()
    key = lock_key(holder, name)
    host, port = node_of(key).rsplit(":", 1)
    redis("-h", host, "-p", port, "CLIENT", "PAUSE", "1500", "ALL")
    t.join(60)
    after = outcomes(holder)
    assert result["r"] == (200, hashlib.sha256(content(name)).hexdigest(), True), result
    assert after.get("renew_retried", 0) > before.get("renew_retried", 0), after
    assert after.get("lost", 0) == before.get("lost", 0), after
    assert fault.counts().get(f"/files/{name}") == 1
    fault.mode(name, "ok")


def test_a_fill_whose_lock_was_taken_stops(cluster, fault):
    """Another holder's token replaces the lock mid-fill (as when the lock expired and
    another replica took it): the fill stops at its next renewal — the client's body is
    cut short, nothing is stored — and the file is fetched whole on the next request."""
    replicas, _ = cluster
    holder = replicas[1]
    project, name = "lock-taken", "lock_taken-1.0.tar.gz"
    path = f"/sources/up/files/{project}/{name}"
    want = hashlib.sha256(content(name)).hexdigest()
    assert http(f"{holder.url}/sources/up/simple/{project}/")[0] == 200
    fault.mode(name, "drip6")
    before = outcomes(holder)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=get(holder.port, path)))
    t.start()
    key = lock_key(holder, name)
    redis("-c", "-p", FIRST_NODE.rsplit(":", 1)[1], "SET", key, "another-replica", "PX", "2000")
    t.join(60)
    status, _, complete = result["r"]
    assert status == 200 and not complete, "the fill went on without its lock"
    assert outcomes(holder).get("lost", 0) == before.get("lost", 0) + 1
    fault.mode(name, "ok")
    time.sleep(2)  # the other holder's lock lapses
    assert get(holder.port, path) == (200, want, True)
    assert fault.counts().get(f"/files/{name}") == 2, "the second request found nothing stored and fetched again"
