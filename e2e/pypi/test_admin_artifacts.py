"""Purge and quarantine (admin token): a quarantined artifact answers 451 with its
reason on every replica within a second — also through a new path that yields the same
bytes — until the quarantine is lifted; a purge removes its paths and bytes, and the
next request fetches the file again."""
import hashlib
import json
import time

import pytest

from conftest import Orchard, http, production_env, sources_file
from fault_server import content

TOKEN = "admin-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def replicas(tmp, fault):
    env = production_env(f"e2e-admin-{tmp.name}")
    env.update({"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "sources-admin.yaml", ("faulty", fault.url), ("mirror", fault.url)),
                "ORCHARD_ADMIN_TOKEN": TOKEN})
    rs = [Orchard(tmp, env).start() for _ in range(2)]
    yield rs
    for r in rs:
        r.stop()


def api(r, method, path, body=None, headers=AUTH):
    data = json.dumps(body).encode() if body is not None else (b"" if method != "GET" else None)
    status, _, out = http(f"{r.url}{path}", method=method, headers=dict(headers, **({"Content-Type": "application/json"} if body else {})), data=data)
    return status, (json.loads(out) if out else None)


def test_quarantine_then_purge(replicas, fault):
    a, b = replicas
    file = "admin_demo-1.0-py3-none-any.whl"
    path = f"/sources/faulty/files/admin-demo/{file}"
    assert http(f"{a.url}/pypi/simple/admin-demo/")[0] == 200
    status, _, body = http(f"{a.url}{path}")
    assert status == 200 and body == content(file)
    sha = hashlib.sha256(body).hexdigest()

    # the admin token is required
    assert api(a, "PUT", f"/api/v1/artifacts/{sha}/quarantine", headers={})[0] == 401
    assert api(a, "PUT", f"/api/v1/artifacts/{sha[:10]}/quarantine")[0] == 400
    status, out = api(a, "PUT", f"/api/v1/artifacts/{sha}/quarantine", {"reason": "CVE-2099-0001: malicious post-install"})
    assert status == 200 and out["quarantined"] is True, out
    time.sleep(1.2)  # every replica re-reads the list within a second
    for r in replicas:
        status, h, body = http(f"{r.url}{path}")
        assert status == 451, (status, body[:200])
        assert "CVE-2099-0001" in json.loads(body)["error"]["message"]
    # the same bytes through another source: refused before they are fetched (declared sha256)
    before = fault.counts().get(f"/files/{file}", 0)
    assert http(f"{b.url}/sources/mirror/simple/admin-demo/")[0] == 200
    status, _, body = http(f"{b.url}/sources/mirror/files/admin-demo/{file}")
    assert status == 451 and "CVE-2099-0001" in json.loads(body)["error"]["message"]
    assert fault.counts().get(f"/files/{file}", 0) == before
    status, out = api(b, "GET", "/api/v1/artifacts?quarantined=true")
    assert status == 200
    [entry] = [e for e in out["artifacts"] if e["sha256"] == sha]
    assert entry["reason"].startswith("CVE-2099-0001") and entry["paths"][0]["path"] == f"admin-demo/{file}"
    assert api(b, "GET", "/api/v1/artifacts")[0] == 400

    # lifted: served again (a hit)
    assert api(b, "DELETE", f"/api/v1/artifacts/{sha}/quarantine")[0] == 200
    assert api(b, "DELETE", f"/api/v1/artifacts/{sha}/quarantine")[0] == 404
    time.sleep(1.2)
    status, h, body = http(f"{a.url}{path}")
    assert (status, h["x-orchard-cache"]) == (200, "hit")

    # purged: paths, row and bytes go; the next request fetches the file again
    before = fault.counts().get(f"/files/{file}", 0)
    status, out = api(a, "DELETE", f"/api/v1/artifacts/{sha}")
    assert status == 200 and out == {"sha256": sha, "urls": 1, "artifact": True, "bytes": True}, out
    assert api(a, "DELETE", f"/api/v1/artifacts/{sha}")[0] == 404
    for r in replicas:
        status, h, body = http(f"{r.url}{path}")
        assert status == 200 and body == content(file), status
    assert fault.counts().get(f"/files/{file}", 0) == before + 1, "fetched again once"


def test_a_damaged_stored_file_is_refused_until_purged(tmp, fault):
    """A stored file shortened from outside (a disk fault, a hand edit) is never served:
    503 naming the purge, the process keeps serving everything else, and after a purge
    the file is fetched again."""
    data = tmp / "damaged-data"
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "sources-damaged.yaml", ("faulty", fault.url)),
           "ORCHARD_DATA_DIR": str(data), "ORCHARD_ADMIN_TOKEN": TOKEN}
    r = Orchard(tmp, env).start()
    try:
        assert http(f"{r.url}/pypi/simple/damaged-demo/")[0] == 200
        files = ["damaged_demo-1.0-py3-none-any.whl", "damaged_demo-1.0.tar.gz"]
        shas = {}
        for f in files:
            status, _, body = http(f"{r.url}/sources/faulty/files/damaged-demo/{f}")
            assert status == 200 and body == content(f), (f, status)
            shas[f] = hashlib.sha256(body).hexdigest()
        damaged, intact = files
        sha = shas[damaged]
        stored = data / "artifacts/sha256" / sha[:2] / sha
        stored.write_bytes(content(damaged)[: len(content(damaged)) // 2])

        for _ in range(3):
            status, _, body = http(f"{r.url}/sources/faulty/files/damaged-demo/{damaged}")
            assert status == 503, (status, body[:200])
            assert f"DELETE /api/v1/artifacts/{sha}" in json.loads(body)["error"]["message"]
        status, _, body = http(f"{r.url}/sources/faulty/files/damaged-demo/{intact}")
        assert status == 200 and body == content(intact)
        assert r.metrics().get(("orchard_damaged_artifacts_total", ()), 0) == 3

        assert api(r, "DELETE", f"/api/v1/artifacts/{sha}")[0] == 200
        status, _, body = http(f"{r.url}/sources/faulty/files/damaged-demo/{damaged}")
        assert status == 200 and body == content(damaged)
        assert stored.read_bytes() == content(damaged)
    finally:
        assert r.stop() == 0
