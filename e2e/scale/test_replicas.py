"""N replicas behave as one cache: 200 concurrent requests for one uncached 5 MiB
artifact across three replicas cause exactly one upstream GET and identical,
hash-correct bytes for everyone; killing a replica mid-transfer corrupts nothing."""
import hashlib
import http.client as httpclient
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import content, http, raw_get


def download(port, path):
    """(status, sha256 of the body, complete?) — never raises."""
    try:
        status, _, body, complete = raw_get(port, path, timeout=120)
        return status, hashlib.sha256(body).hexdigest(), complete
    except (OSError, httpclient.HTTPException):
        return None, None, False


def file_path(project, name):
    return f"/sources/up/files/{project}/{name}"


def test_200_concurrent_misses_one_upstream_get(cluster, fault):
    replicas, lb = cluster
    project, name = "herd-big", "herd_big-1.0.tar.gz"
    expected = hashlib.sha256(content(name)).hexdigest()
    assert len(content(name)) == 5 * 1024 * 1024
    for r in replicas:  # every replica knows the page (pages are per-replica coalesced)
        assert http(f"{r.url}/sources/up/simple/{project}/")[0] == 200
    fault.mode(name, "delay1")  # the upstream answers after 1 s: every request overlaps
    lb_port = int(lb.url.rsplit(":", 1)[1])
    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(lambda _: download(lb_port, file_path(project, name)), range(200)))
    assert all(r == (200, expected, True) for r in results), [r for r in results if r != (200, expected, True)][:5]
    assert fault.counts().get(f"/files/{name}") == 1, fault.counts()
    locks = sum(r.counter("orchard_fill_lock_total") for r in replicas)
    assert locks >= 3, "every replica went through the cross-replica lock"


def test_killing_a_replica_mid_transfer(cluster, fault):
    replicas, lb = cluster
    project, name = "kill-big", "kill_big-1.0.tar.gz"
    expected = hashlib.sha256(content(name)).hexdigest()
    for r in replicas:
        assert http(f"{r.url}/sources/up/simple/{project}/")[0] == 200
    fault.mode(name, "delay2")
    victim = replicas[1]
    ports = [r.port for r in replicas]
    with ThreadPoolExecutor(60) as pool:
        futures = [pool.submit(download, ports[i % 3], file_path(project, name)) for i in range(60)]
        time.sleep(0.7)
        os.kill(victim.proc.p.pid, signal.SIGKILL)
        results = [f.result() for f in futures]
    # Nobody got a corrupt body: a complete 200 always has the right bytes.
    for status, digest, complete in results:
        if status == 200 and complete:
            assert digest == expected
    survivors = [r for r in replicas if r is not victim]
    ok = [r for i, r in enumerate(results) if ports[i % 3] != victim.port]
    assert all(r == (200, expected, True) for r in ok), ok
    # The survivors serve it (from storage), and what was stored is correct.
    for r in survivors:
        status, digest, complete = download(r.port, file_path(project, name))
        assert (status, digest, complete) == (200, expected, True)
        assert http(f"{r.admin}/readyz")[0] == 200
    assert fault.counts().get(f"/files/{name}", 0) <= 2, fault.counts()
