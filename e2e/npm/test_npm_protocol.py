"""The npm registry API as Orchard serves it: full and abbreviated packuments, scoped
names in both spellings, versions and dist-tags, shadowing by priority, integrity kept
and verified, faults and hostile input."""
import base64
import hashlib
import json
import subprocess
import time

import pytest

from conftest import Orchard, http, sources_file

ABBREV = "application/vnd.npm.install-v1+json"


@pytest.fixture(scope="module")
def orchard(tmp, verdaccio_a, verdaccio_b, fault):
    env = {
        "ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "npm-sources-protocol.yaml", ("a", verdaccio_a.url),
                                               ("b", verdaccio_b.url), ("faulty", fault.url), protocol="npm"),
        "ORCHARD_HTTP_READ_TIMEOUT": "2",
        "ORCHARD_CACHE_TTL_VERSIONS": "1",
    }
    o = Orchard(tmp, env).start()
    yield o
    o.stop()


def get(orchard, path, accept="application/json"):
    status, headers, body = http(orchard.url + path, headers={"Accept": accept})
    return status, headers, body


def test_full_and_abbreviated_packuments(orchard, verdaccio_a):
    status, h, body = get(orchard, "/npm/chalk")
    assert status == 200 and h["content-type"].startswith("application/json") and h["vary"] == "Accept"
    full = json.loads(body)
    status, h, body = get(orchard, "/npm/chalk", f"{ABBREV}; q=1.0, application/json; q=0.8, */*")
    assert status == 200 and h["content-type"] == ABBREV
    abbrev = json.loads(body)
    assert "readme" not in abbrev and "4.1.2" in abbrev["versions"]
    _, _, upstream = http(verdaccio_a.url + "chalk", headers={"Accept": "application/json"})
    upstream = json.loads(upstream)
    for doc in (full, abbrev):
        dist = doc["versions"]["4.1.2"]["dist"]
        assert dist["tarball"] == f"{orchard.url}/sources/a/chalk/-/chalk-4.1.2.tgz"
        assert dist["integrity"] == upstream["versions"]["4.1.2"]["dist"]["integrity"]
        assert dist["shasum"] == upstream["versions"]["4.1.2"]["dist"]["shasum"]
    assert f":{verdaccio_a.port}" not in json.dumps(full)
    # the tarball's bytes match the integrity
    status, h, tgz = http(full["versions"]["4.1.2"]["dist"]["tarball"])
    assert status == 200
    assert "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode() == full["versions"]["4.1.2"]["dist"]["integrity"]


def test_scoped_names_both_spellings(orchard):
    s1, _, b1 = get(orchard, "/npm/@babel/code-frame")
    s2, _, b2 = get(orchard, "/npm/@babel%2fcode-frame")
    s3, _, _ = get(orchard, "/npm/@babel%2Fcode-frame")
    assert (s1, s2, s3) == (200, 200, 200) and b1 == b2
    doc = json.loads(b1)
    v = doc["dist-tags"]["latest"]
    tarball = doc["versions"][v]["dist"]["tarball"]
    assert tarball == f"{orchard.url}/sources/a/@babel/code-frame/-/code-frame-{v}.tgz"
    assert http(tarball)[0] == 200
    assert http(tarball.replace("/sources/a/@babel/code-frame/", "/npm/@babel%2fcode-frame/"))[0] == 200


def test_versions_and_tags(orchard):
    status, _, body = get(orchard, "/npm/chalk/4.1.2")
    assert status == 200 and json.loads(body)["version"] == "4.1.2"
    status, _, body = get(orchard, "/npm/chalk/latest")
    assert status == 200 and json.loads(body)["version"] == "4.1.2"
    assert json.loads(body)["dist"]["tarball"].startswith(orchard.url)
    assert get(orchard, "/npm/chalk/9.9.9")[0] == 404
    assert get(orchard, "/npm/-/ping")[0] == 200


def test_priority_shadows_whole_packages(orchard):
    doc = json.loads(get(orchard, "/npm/ms")[2])
    assert list(doc["versions"]) == ["2.1.3"], "a's ms hides b's entirely"
    doc = json.loads(get(orchard, "/sources/b/ms")[2])
    assert list(doc["versions"]) == ["2.0.0"]
    doc = json.loads(get(orchard, "/npm/@types/ms")[2])
    v = doc["dist-tags"]["latest"]
    assert doc["versions"][v]["dist"]["tarball"].startswith(f"{orchard.url}/sources/b/@types/ms/-/")
    assert get(orchard, "/npm/missing-everywhere")[0] == 404  # the fault upstream 404s missing-*


def test_stale_packument_and_upstream_faults(orchard, fault):
    assert get(orchard, "/sources/faulty/stale-pkg")[0] == 200
    time.sleep(1.5)  # past the 1 s versions TTL
    for mode in ("500", "slow", "reset"):
        fault.mode("stale-pkg", mode)
        status, h, _ = get(orchard, "/sources/faulty/stale-pkg")
        assert (status, h["x-orchard-cache"]) == (200, "stale"), mode
    for mode, expected in (("slow", 504), ("500", 502), ("reset", 502)):
        name = f"fresh-{mode}"
        fault.mode(name, mode)
        assert get(orchard, f"/sources/faulty/{name}")[0] == expected, mode
        fault.mode(name, "ok")
        assert get(orchard, f"/sources/faulty/{name}")[0] == 200


@pytest.mark.parametrize("mode,expected", [("wrong", 502), ("truncated", 502), ("500", 502), ("slow", 504)])
def test_tarball_faults_store_nothing(orchard, fault, mode, expected):
    name = f"tgz-{mode}"
    assert get(orchard, f"/sources/faulty/{name}")[0] == 200
    fault.mode(f"{name}-1.0.0.tgz", mode)
    mismatches = orchard.counter("orchard_hash_mismatch_total")
    status, _, _ = http(f"{orchard.url}/sources/faulty/{name}/-/{name}-1.0.0.tgz", method="HEAD")
    assert status == expected
    if mode == "wrong":
        assert orchard.counter("orchard_hash_mismatch_total") == mismatches + 1
    fault.mode(f"{name}-1.0.0.tgz", "ok")
    status, h, body = http(f"{orchard.url}/sources/faulty/{name}/-/{name}-1.0.0.tgz")
    assert status == 200 and h["x-orchard-cache"] == "miss" and len(body) == 300_000


BAD = [
    ("/npm/%2e%2e", 400),
    ("/npm/@scope/..", 400),
    ("/npm/@scope/..%2fx", 400),
    ("/npm/@scope%2f..%2fx", 400),
    ("/npm/Bad%20Name", 400),
    ("/npm/.hidden", 400),
    ("/npm/_private", 400),
    ("/npm/node_modules", 400),
    ("/npm/" + "a" * 215, 400),
    ("/npm/chalk/..%2f..%2fetc", 400),
    ("/npm/chalk/-/..%2fchalk.tgz", 400),
    ("/npm/chalk/-/chalk.tar.gz", 400),
    ("/npm/@scope", 400),
    ("/npm/chalk/1/2", 404),
    ("/sources/nope/chalk", 404),
]


@pytest.mark.parametrize("path,expected", BAD)
def test_bad_input(orchard, fault, verdaccio_a, path, expected):
    before = fault.total()
    status, _, body = http(orchard.url + path)
    assert status == expected, (path, body[:200])
    error = json.loads(body)["error"]
    if path.startswith("/npm/"):
        # the npm registry's format: npm prints this string (an object shows as [object Object])
        assert isinstance(error, str) and error, body[:200]
    else:
        assert error["status"] == expected
    assert fault.total() == before
    assert http(f"{orchard.admin}/healthz")[0] == 200


def test_npm_prints_why_a_request_failed(orchard, tmp):
    """`npm view` of a package the source does not have: npm's error line carries
    Orchard's message (through one source's view: the fault upstream answers any name)."""
    r = subprocess.run(["npm", "view", "no-such-package-anywhere", "--registry", f"{orchard.url}/sources/a/",
                        "--cache", str(tmp / "npm-view-cache"), "--no-update-notifier"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert 'package "no-such-package-anywhere" not found in any npm source' in r.stderr, r.stderr
    assert "[object Object]" not in r.stderr
