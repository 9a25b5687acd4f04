"""The Maven layout as Orchard serves it: checksum sidecars computed from the served
bytes, HEAD, metadata, priority, negative caching of 404s, faults and hostile paths."""
import hashlib
import time
from pathlib import Path

import pytest

from conftest import E2E, FaultUpstream, Orchard, http, sources_file


@pytest.fixture(scope="module")
def orchard(tmp, upstream_a, upstream_b, fault):
    env = {
        "ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "maven-sources-protocol.yaml", ("a", upstream_a.url),
                                               ("b", upstream_b.url), ("faulty", fault.url), protocol="maven"),
        "ORCHARD_HTTP_READ_TIMEOUT": "2",
        "ORCHARD_CACHE_TTL_VERSIONS": "1",
        "ORCHARD_CACHE_TTL_NEGATIVE": "30",
    }
    o = Orchard(tmp, env).start()
    yield o
    o.stop()


def a_jar(pattern):
    root = E2E / "maven-upstream"
    jar = next(root.glob(pattern))
    return "/" + str(jar.relative_to(root)), jar.read_bytes()


def test_sidecars_match_the_served_bytes(orchard):
    path, data = a_jar("com/google/guava/guava/*/guava-*.jar")
    status, h, body = http(f"{orchard.url}/maven{path}")
    assert status == 200 and body == data and h["content-type"] == "application/java-archive"
    for ext, algo in (("sha1", hashlib.sha1), ("md5", hashlib.md5), ("sha256", hashlib.sha256), ("sha512", hashlib.sha512)):
        status, h, side = http(f"{orchard.url}/maven{path}.{ext}")
        assert status == 200 and side.decode() == algo(data).hexdigest(), ext
    status, h, empty = http(f"{orchard.url}/maven{path}", method="HEAD")
    assert status == 200 and int(h["content-length"]) == len(data) and empty == b""


def test_sidecar_of_an_uncached_file_fetches_it_first(orchard):
    path, data = a_jar("org/apache/commons/commons-lang3/*/commons-lang3-*.jar")
    status, _, side = http(f"{orchard.url}/maven{path}.sha256")
    assert status == 200 and side.decode() == hashlib.sha256(data).hexdigest()
    status, h, body = http(f"{orchard.url}/maven{path}")
    assert status == 200 and h["x-orchard-cache"] == "hit" and body == data


def test_priority_by_version(orchard, upstream_b):
    path, data = a_jar("org/slf4j/slf4j-api/2.0.13/slf4j-api-2.0.13.jar")
    assert http(f"{orchard.url}/maven{path}")[2] == data, "a's slf4j-api wins"
    b_data = (E2E / "maven-upstream-b" / path.lstrip("/")).read_bytes()
    assert b_data != data
    assert http(f"{orchard.url}/sources/b{path}")[2] == b_data
    b_only = next((E2E / "maven-upstream-b").glob("commons-io/commons-io/*/commons-io-*.jar"))
    rel = "/" + str(b_only.relative_to(E2E / "maven-upstream-b"))
    assert http(f"{orchard.url}/maven{rel}")[2] == b_only.read_bytes()


def test_metadata_and_its_checksum(orchard, fault):
    status, h, xml = http(f"{orchard.url}/sources/faulty/org/acme/widget/maven-metadata.xml")
    assert status == 200 and b"<version>1.1</version>" in xml and h["content-type"].startswith("text/xml")
    status, _, sha1 = http(f"{orchard.url}/sources/faulty/org/acme/widget/maven-metadata.xml.sha1")
    assert sha1.decode() == hashlib.sha1(xml).hexdigest()
    time.sleep(1.5)  # past the 1 s TTL: the upstream fails, the stale copy is served
    fault.mode("widget-metadata", "500")
    status, h, again = http(f"{orchard.url}/sources/faulty/org/acme/widget/maven-metadata.xml")
    assert (status, h["x-orchard-cache"], again) == (200, "stale", xml)
    fault.mode("widget-metadata", "ok")


def test_snapshot_files_are_refreshed_and_served_stale(orchard, fault):
    path = "/sources/faulty/org/acme/snap/1.0-SNAPSHOT/snap-1.0-SNAPSHOT.jar"
    name = "snap-1.0-SNAPSHOT.jar"
    status, h, first = http(orchard.url + path)
    assert (status, h["x-orchard-cache"]) == (200, "miss")
    time.sleep(1.2)  # the next 1 s window: fetched again
    before = fault.counts().get(f"/m2/org/acme/snap/1.0-SNAPSHOT/{name}", 0)
    status, h, _ = http(orchard.url + path)
    assert (status, h["x-orchard-cache"]) == (200, "miss")
    assert fault.counts().get(f"/m2/org/acme/snap/1.0-SNAPSHOT/{name}", 0) == before + 1
    time.sleep(1.2)
    fault.mode(name, "500")
    status, h, body = http(orchard.url + path)
    assert (status, h["x-orchard-cache"], body) == (200, "stale", first)
    fault.mode(name, "ok")


def test_missing_artifacts_are_404_and_remembered(orchard, upstream_a):
    path = "/org/acme/ghost/1.0/ghost-1.0.jar"
    for _ in range(3):
        assert http(f"{orchard.url}/sources/a{path}")[0] == 404
    assert upstream_a.requests().count(f"GET {path} 404") == 1, upstream_a.requests(path)
    # merged view: the version's POM is probed once per source, then remembered
    merged = "/org/acme/missing-phantom/2.0/missing-phantom-2.0.jar"  # the fault upstream 404s missing-*
    for _ in range(3):
        assert http(f"{orchard.url}/maven{merged}")[0] == 404
    assert upstream_a.requests().count("GET /org/acme/missing-phantom/2.0/missing-phantom-2.0.pom 404") == 1


def test_a_file_without_a_pom_anywhere_comes_from_the_first_source_that_has_it(orchard, fault, upstream_a):
    """Maven asks for some jars without their POM (plexus-utils 1.1 for old plugins): when
    no source has the version's POM, the first source (by priority) with the file serves
    it, and each upstream path is requested once."""
    d = "/org/acme/pomless/1.0"
    fault.mode("pomless-1.0.pom", "404")
    before = fault.counts()
    status, h, body = http(f"{orchard.url}/maven{d}/pomless-1.0.jar")
    assert (status, h["x-orchard-cache"], len(body)) == (200, "miss", 300_000)
    status, _, sha1 = http(f"{orchard.url}/maven{d}/pomless-1.0.jar.sha1")
    assert status == 200 and sha1.decode() == hashlib.sha1(body).hexdigest()
    status, h, again = http(f"{orchard.url}/maven{d}/pomless-1.0.jar")
    assert (status, h["x-orchard-cache"], again) == (200, "hit", body)
    assert http(f"{orchard.url}/maven{d}/pomless-1.0.jar", method="HEAD")[0] == 200
    after = fault.counts()
    made = {p: after.get(p, 0) - before.get(p, 0) for p in after if after.get(p, 0) != before.get(p, 0)}
    assert made == {f"/m2{d}/pomless-1.0.pom.sha1": 1, f"/m2{d}/pomless-1.0.pom": 1,
                    f"/m2{d}/pomless-1.0.jar.sha1": 1, f"/m2{d}/pomless-1.0.jar": 1}, made
    # the higher-priority sources were asked once for each path too, then remembered
    assert upstream_a.requests().count(f"GET {d}/pomless-1.0.pom 404") == 1
    assert upstream_a.requests().count(f"GET {d}/pomless-1.0.jar 404") == 1
    # a file no source has is still a 404 that says so
    fault.mode("pomless-1.0-sources.jar", "404")
    status, _, err = http(f"{orchard.url}/maven{d}/pomless-1.0-sources.jar")
    assert status == 404 and b"not found in any Maven source" in err and b"has no POM" in err, err
    fault.mode("pomless-1.0.pom", "ok")


def test_the_pom_still_decides_when_a_source_has_it(tmp):
    """A higher-priority source that has a version's jar but not its POM does not shadow
    the source that has the POM (dependency confusion stays closed)."""
    first, second = FaultUpstream(tmp, "/m2/").start(), FaultUpstream(tmp, "/m2/").start()
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "maven-sources-pom-rule.yaml", ("first", first.url),
                                                  ("second", second.url), protocol="maven")}
    o = Orchard(tmp, env).start()
    try:
        d = "/org/acme/shadowed/1.0"
        first.mode("shadowed-1.0.pom", "404")
        assert http(f"{o.url}/maven{d}/shadowed-1.0.jar")[0] == 200
        assert first.counts().get(f"/m2{d}/shadowed-1.0.jar", 0) == 0, first.counts()
        assert {p: n for p, n in second.counts().items() if p.startswith("/m2/")} == {
                                   f"/m2{d}/shadowed-1.0.pom.sha1": 1, f"/m2{d}/shadowed-1.0.pom": 1,
                                   f"/m2{d}/shadowed-1.0.jar.sha1": 1, f"/m2{d}/shadowed-1.0.jar": 1}
        # the POM Maven asks for next was stored while deciding: no second upstream request
        status, h, _ = http(f"{o.url}/maven{d}/shadowed-1.0.pom")
        assert (status, h["x-orchard-cache"]) == (200, "hit")
        assert second.counts()[f"/m2{d}/shadowed-1.0.pom"] == 1
        # neither has the POM: the first source that has the file
        d2 = "/org/acme/orphan/2.0"
        first.mode("orphan-2.0.pom", "404")
        second.mode("orphan-2.0.pom", "404")
        assert http(f"{o.url}/maven{d2}/orphan-2.0.jar")[0] == 200
        assert first.counts().get(f"/m2{d2}/orphan-2.0.jar") == 1
        assert f"/m2{d2}/orphan-2.0.jar" not in second.counts()
        # a failing higher-priority source ends the lookup (no fall-through on errors)
        d3 = "/org/acme/broken/3.0"
        first.mode("broken-3.0.pom", "500")
        status, _, _ = http(f"{o.url}/maven{d3}/broken-3.0.jar")
        assert status == 502
        assert not any(p.startswith(f"/m2{d3}/") for p in second.counts())
    finally:
        o.stop()
        first.stop()
        second.stop()


def test_concurrent_requests_make_one_upstream_request_per_path(orchard, fault):
    """Twelve clients ask for one jar and its .sha1 at once: the upstream sees the POM,
    the jar and each sidecar once."""
    import concurrent.futures
    d = "/org/acme/crowd/1.0"
    paths = [f"{d}/crowd-1.0.jar", f"{d}/crowd-1.0.jar.sha1"] * 6
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda p: http(f"{orchard.url}/sources/faulty{p}")[0], paths))
    assert statuses == [200] * 12
    counts = fault.counts()
    assert counts.get(f"/m2{d}/crowd-1.0.jar") == 1 and counts.get(f"/m2{d}/crowd-1.0.jar.sha1") == 1, \
        {p: n for p, n in counts.items() if p.startswith(f"/m2{d}")}


@pytest.mark.parametrize("mode,expected", [("wrong", 502), ("truncated", 502), ("500", 502), ("slow", 504), ("reset", 502)])
def test_file_faults_store_nothing(orchard, fault, mode, expected):
    path = f"/org/acme/fault-{mode}/1.0/fault-{mode}-1.0.jar"
    name = f"fault-{mode}-1.0.jar"
    fault.mode(name, mode)
    mismatches = orchard.counter("orchard_hash_mismatch_total")
    status, _, _ = http(f"{orchard.url}/sources/faulty{path}", method="HEAD")
    assert status == expected and status != 404
    if mode == "wrong":
        assert orchard.counter("orchard_hash_mismatch_total") == mismatches + 1
    fault.mode(name, "ok")
    status, h, body = http(f"{orchard.url}/sources/faulty{path}")
    assert (status, h["x-orchard-cache"], len(body)) == (200, "miss", 300_000)
    status, _, sha1 = http(f"{orchard.url}/sources/faulty{path}.sha1")
    assert sha1.decode() == hashlib.sha1(body).hexdigest()


BAD = [
    "/maven/org/acme/lib/1.0/../../../../etc/passwd",
    "/maven/org/acme/lib/1.0/%2e%2e/%2e%2e/x.jar",
    "/maven/org/%2e%2e/lib/1.0/lib-1.0.jar",
    "/maven/org/acme/lib/1.0/other-1.0.jar",
    "/maven/org/acme/lib/1.0/lib-1.0",
    "/maven/org/acme/lib/1.0/.lib-1.0.jar",
    "/maven/org/acme/lib/1.0/lib%201.0.jar",
    "/maven/lib/1.0/lib-1.0.jar",
    "/sources/faulty/org/acme/lib/1.0/lib-1.0.jar%00",
]


@pytest.mark.parametrize("path", BAD)
def test_bad_paths(orchard, fault, path):
    before = fault.total()
    status, _, body = http(orchard.url + path)
    assert status == 400, (path, status, body[:200])
    assert fault.total() == before
    assert http(f"{orchard.admin}/healthz")[0] == 200


def test_every_response_says_nosniff(orchard):
    """POMs and metadata are XML; no body may be sniffed into something else."""
    path, _ = a_jar("com/google/guava/guava/*/guava-*.jar")
    for p in (path, path[:-4] + ".pom", path.rsplit("/", 2)[0] + "/maven-metadata.xml", "/org/acme/lib/1.0/other-1.0.jar"):
        status, h, _ = http(f"{orchard.url}/maven{p}")
        assert h.get("x-content-type-options") == "nosniff", (p, status)
