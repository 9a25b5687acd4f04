"""Upstream faults and hostile input: each gives a precise status, nothing corrupt is
stored, no upstream call is made for bad input, and the process keeps serving."""
import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Orchard, http, sources_file
from harness import raw_get as harness_raw_get

SLOW_TIMEOUT_S = 2  # the fault server sleeps 6 s in "slow" mode


@pytest.fixture(scope="module")
def orchard(tmp, fault):
    env = {
        "ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "sources-faults.yaml", ("faulty", fault.url)),
        "ORCHARD_HTTP_READ_TIMEOUT": str(SLOW_TIMEOUT_S),
        "ORCHARD_CACHE_TTL_INDEX": "1",
        "ORCHARD_CACHE_TTL_NEGATIVE": "30",
    }
    o = Orchard(tmp, env).start()
    yield o
    o.stop()


@pytest.fixture(autouse=True)
def healthy_after(orchard, fault):
    fault.reset()
    yield
    fault.reset()
    assert http(f"{orchard.admin}/healthz")[0] == 200, "the process keeps serving"


def content(filename):
    out, seed = bytearray(), filename.encode()
    while len(out) < 300_000:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:300_000])


def raw_get(orchard, path, headers=None):
    return harness_raw_get(orchard.port, path, headers)


def good_file_request(orchard, project, name):
    status, _, body, complete = raw_get(orchard, f"/sources/faulty/files/{project}/{name}")
    assert (status, complete) == (200, True)
    assert body == content(name)


@pytest.mark.parametrize("mode,expected", [("slow", 504), ("500", 502), ("reset", 502)])
def test_page_faults_without_a_cached_copy(orchard, fault, mode, expected):
    project = f"page-{mode}"  # a project nothing has cached yet
    fault.mode(project, mode)
    status, _, body = http(f"{orchard.url}/sources/faulty/simple/{project}/", headers={"Accept": "text/html"})
    assert status == expected, body
    assert status != 404, "an upstream fault is never a 404"
    fault.mode(project, "ok")
    assert http(f"{orchard.url}/sources/faulty/simple/{project}/")[0] == 200


def test_stale_page_when_the_upstream_fails(orchard, fault):
    assert http(f"{orchard.url}/sources/faulty/simple/attrs-demo/")[0] == 200
    time.sleep(1.5)  # past the 1 s index TTL
    for mode in ("500", "slow", "reset"):
        fault.mode("attrs-demo", mode)
        status, headers, body = http(f"{orchard.url}/sources/faulty/simple/attrs-demo/", headers={"Accept": "text/html"})
        assert status == 200 and headers["x-orchard-cache"] == "stale", (mode, status, body[:200])
        assert b"attrs_demo-1.0-py3-none-any.whl" in body
    stale = sum(v for (n, labels), v in orchard.metrics().items()
                if n == "orchard_http_requests_total" and ("cache", "stale") in labels)
    assert stale >= 3


def test_expired_page_is_revalidated_with_its_etag(orchard, fault):
    path = "/sources/faulty/simple/revalidate/"
    status, headers, first = http(orchard.url + path, headers={"Accept": "text/html"})
    assert (status, headers["x-orchard-cache"]) == (200, "miss")
    time.sleep(1.5)  # past the 1 s index TTL
    status, headers, second = http(orchard.url + path, headers={"Accept": "text/html"})
    assert (status, headers["x-orchard-cache"], second) == (200, "hit", first)
    counts = fault.counts()
    assert counts.get("/simple/revalidate/") == 2 and counts.get("304 /simple/revalidate/") == 1, counts


def test_hot_page_is_refreshed_in_the_background(tmp, fault):
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "sources-swr.yaml", ("faulty", fault.url)),
           "ORCHARD_CACHE_TTL_INDEX": "4"}
    o = Orchard(tmp, env).start()
    try:
        path = "/sources/faulty/simple/hot-page/"
        assert http(o.url + path)[1]["x-orchard-cache"] == "miss"
        time.sleep(3.2)  # in the last quarter of the 4 s TTL
        fault.mode("hot-page", "delay1")  # the refresh takes a second upstream...
        status, headers, _ = http(o.url + path)
        assert (status, headers["x-orchard-cache"]) == (200, "hit"), "...but the client got the cached page"
        deadline = time.time() + 10
        while fault.counts().get("/simple/hot-page/", 0) < 2:
            assert time.time() < deadline, "no background refresh reached the upstream"
            time.sleep(0.1)
        assert o.counter("orchard_background_refreshes_total") >= 1
        fault.mode("hot-page", "ok")
    finally:
        o.stop()


def test_missing_project_is_404_and_remembered(orchard, fault):
    for _ in range(3):
        assert http(f"{orchard.url}/sources/faulty/simple/missing-project/")[0] == 404
    assert fault.counts().get("/simple/missing-project/", 0) == 1, "404s are negatively cached"


@pytest.mark.parametrize("mode,expected", [("slow", 504), ("500", 502), ("reset", 502)])
def test_file_faults(orchard, fault, mode, expected):
    project = f"file-{mode}"
    name = f"file_{mode}-1.1.tar.gz"
    assert http(f"{orchard.url}/sources/faulty/simple/{project}/")[0] == 200
    fault.mode(name, mode)
    status, _, body, _ = raw_get(orchard, f"/sources/faulty/files/{project}/{name}")
    assert status == expected, body[:200]
    fault.mode(name, "ok")
    good_file_request(orchard, project, name)


@pytest.mark.parametrize("mode", ["truncated", "wrong"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_corrupt_bodies_are_never_stored_or_served_whole(orchard, fault, mode, method):
    project = f"corrupt-{mode}-{method.lower()}"
    name = f"corrupt_{mode}_{method.lower()}-1.0-py3-none-any.whl"
    path = f"/sources/faulty/files/{project}/{name}"
    assert http(f"{orchard.url}/sources/faulty/simple/{project}/")[0] == 200
    mismatches = orchard.counter("orchard_hash_mismatch_total")
    fault.mode(name, mode)
    for _ in range(2):
        if method == "GET":
            # The response is aborted before it is complete (the status went out with the head).
            status, _, body, complete = raw_get(orchard, path)
            assert not (status == 200 and complete), (status, len(body))
        else:
            status, _, _ = http(orchard.url + path, method="HEAD")
            assert status == 502, status
    if mode == "wrong":
        assert orchard.counter("orchard_hash_mismatch_total") >= mismatches + 2
    fault.mode(name, "ok")
    good_file_request(orchard, project, name)
    status, headers, _ = http(orchard.url + path, method="HEAD")
    assert headers["etag"] == f'"{hashlib.sha256(content(name)).hexdigest()}"'


BAD_PATHS = [
    ("/pypi/simple/%2e%2e/", 400),
    ("/pypi/simple/..%2f..%2fetc/", 400),
    ("/pypi/simple/a%20b/", 400),
    ("/pypi/simple/-x/", 400),
    ("/pypi/simple/" + "a" * 300 + "/", 400),
    ("/pypi/simple/%00/", 400),
    ("/sources/faulty/simple/%2e%2e/", 400),
    ("/sources/faulty/files/faulty/..%2f..%2fetc%2fpasswd", 400),
    ("/sources/faulty/files/%2e%2e/faulty-1.0.tar.gz", 400),
    ("/sources/faulty/files/faulty/faulty-1.0.exe", 400),
    ("/sources/faulty/files/faulty/.metadata", 400),
    ("/sources/%2e%2e/simple/faulty/", 404),
    ("/sources/nope/simple/faulty/", 404),
    ("/pypi/simple/faulty/extra/segments/", 404),
]


@pytest.mark.parametrize("path,expected", BAD_PATHS)
def test_bad_paths_get_a_precise_4xx_and_no_upstream_call(orchard, fault, path, expected):
    before = fault.total()
    status, _, body, _ = raw_get(orchard, path)
    assert status == expected, (path, body[:200])
    assert json.loads(body)["error"]["status"] == expected
    assert fault.total() == before, "bad input must not reach the upstream"


def test_raw_dot_segments(orchard, fault):
    before = fault.total()
    for path in ("/pypi/simple/../simple/faulty/", "/sources/faulty/files/faulty/../../../etc/passwd"):
        status, _, _, _ = raw_get(orchard, path)
        assert 400 <= status < 500, path
    assert fault.total() == before


def test_oversized_headers_and_unknown_accept(orchard, fault):
    before = fault.total()
    status, _, _, _ = raw_get(orchard, "/pypi/simple/faulty/", headers={"X-Big": "x" * 100_000})
    assert status in (400, 431), status
    status, _, body, _ = raw_get(orchard, "/pypi/simple/faulty/", headers={"Accept": "image/png"})
    assert status == 406
    assert fault.total() == before


def test_concurrent_misses_make_one_upstream_get(orchard, fault):
    project, name = "herd", "herd-1.2.tar.gz"
    fault.mode(project, "delay1")
    fault.mode(name, "delay1")
    waiters = orchard.counter("orchard_singleflight_waiters_total")
    with ThreadPoolExecutor(30) as pool:
        pages = list(pool.map(lambda _: http(f"{orchard.url}/sources/faulty/simple/{project}/")[0], range(30)))
        files = list(pool.map(lambda _: raw_get(orchard, f"/sources/faulty/files/{project}/{name}"), range(30)))
    assert pages == [200] * 30
    assert all(status == 200 and complete and body == content(name) for status, _, body, complete in files)
    counts = fault.counts()
    assert counts.get(f"/simple/{project}/") == 1, counts
    assert counts.get(f"/files/{name}") == 1, counts
    assert orchard.counter("orchard_singleflight_waiters_total") >= waiters + 2


def test_sigterm_drains_in_flight_downloads(tmp, fault):
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "sources-drain.yaml", ("faulty", fault.url)),
           "ORCHARD_SHUTDOWN_TIMEOUT": "30"}
    o = Orchard(tmp, env).start()
    project, name = "drain", "drain-1.3.tar.gz"
    assert http(f"{o.url}/sources/faulty/simple/{project}/")[0] == 200
    fault.mode(name, "delay3")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=raw_get(o, f"/sources/faulty/files/{project}/{name}")))
    t.start()
    time.sleep(1)
    o.proc.p.send_signal(15)
    t.join(30)
    status, _, body, complete = result["r"]
    assert (status, complete, body == content(name)) == (200, True, True), "the in-flight download finished"
    assert o.proc.p.wait(30) == 0
    try:
        http(f"{o.url}/", timeout=2)
        raise AssertionError("still accepting after shutdown")
    except OSError:
        pass
