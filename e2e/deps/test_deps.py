"""Dependencies end to end: extraction on ingest, resolution of known trees (cached
answers, refresh), and ensure files — requirements.txt and package-lock.json ensured,
upstreams stopped, then pip and npm ci install through Orchard alone."""
import hashlib
import json
import os
import re
import subprocess
import sys
import time

from conftest import E2E, NPM, PYPI, TOKEN, http

ORCHARD_BIN = os.environ.get("ORCHARD_BIN")


def fetch_sha(orchard, path):
    status, headers, body = http(orchard.url + path)
    assert status == 200, (path, status, body[:300])
    return hashlib.sha256(body).hexdigest()


def deps(orchard, sha, token=None, **query):
    q = "&".join(f"{k}={v}" for k, v in query.items())
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    status, headers, body = http(f"{orchard.url}/api/v1/artifacts/{sha}/dependencies?{q}", headers=auth)
    assert status == 200, body[:500]
    return json.loads(body), {k.lower(): v for k, v in headers.items()}


def names(nodes):
    return {n["name"]: n for n in nodes}


def resolutions(orchard, result):
    return orchard.metrics().get(("orchard_dependency_resolutions_total", (("result", result),)), 0)


def test_pypi_tree_of_flask_and_requests(orchard):
    whl = next(p.name for p in (E2E / "pkgs-a").iterdir() if p.name.startswith("flask-"))
    sha = fetch_sha(orchard, f"/sources/pypi-a/files/flask/{whl}")
    tree, headers = deps(orchard, sha, python_version="3.11", platform="linux")
    assert headers.get("x-orchard-cache") == "miss"
    assert (tree["name"], tree["known"]) == ("flask", True)
    top = names(tree["dependencies"])
    for n in ("werkzeug", "jinja2", "itsdangerous", "click", "blinker"):
        assert top[n]["status"] == "resolved", top[n]
        assert re.fullmatch(r"[0-9a-f]{64}", top[n]["sha256"])
    listed = {p.name.split("-")[1] for p in (E2E / "pkgs-a").iterdir() if p.name.startswith("werkzeug-")}
    assert top["werkzeug"]["version"] in listed
    assert "importlib-metadata" not in top, "python_version < '3.10' marker applied"
    under = [names(top[n]["dependencies"])["markupsafe"] for n in ("werkzeug", "jinja2")]
    assert all(m["status"] == "resolved" for m in under)
    assert sorted(bool(m.get("repeated")) for m in under) == [False, True], "expanded once, then marked repeated"
    assert "colorama" not in names(top["click"]["dependencies"]), "platform_system == 'Windows' marker applied"
    assert tree["conflicts"] == []

    req = next(p.name for p in (E2E / "pkgs-a").iterdir() if p.name.startswith("requests-"))
    rsha = fetch_sha(orchard, f"/sources/pypi-a/files/requests/{req}")
    plain, _ = deps(orchard, rsha)
    assert set(names(plain["dependencies"])) == {"charset-normalizer", "idna", "urllib3", "certifi"}
    optional, _ = deps(orchard, rsha, include_optional="true")
    pysocks = names(optional["dependencies"])["pysocks"]
    assert pysocks["kind"] == "extra:socks" and pysocks["status"] == "not-found", pysocks


def test_pep658_metadata_resolves_without_downloading_wheels(orchard, upstreams):
    """The fault upstream's meta-* wheels are not zips; their PEP 658 metadata says
    meta-app needs meta-leaf>=1.0. Resolution reads the metadata files only."""
    meta = upstreams["meta"]
    meta.reset()
    sha = fetch_sha(orchard, "/sources/pypi-meta/files/meta-app/meta_app-1.0-py3-none-any.whl")
    tree, _ = deps(orchard, sha)
    assert (tree["name"], tree["version"], tree["known"]) == ("meta-app", "1.0", True)
    leaf = names(tree["dependencies"])["meta-leaf"]
    assert (leaf["version"], leaf["status"], leaf["requirement"]) == ("1.0", "resolved", ">=1.0"), leaf
    assert "sha256" not in leaf, "the leaf's wheel is not cached, so no digest is claimed"
    counts = meta.counts()
    assert counts.get("/files/meta_leaf-1.0-py3-none-any.whl.metadata") == 1, counts
    assert "/files/meta_leaf-1.0-py3-none-any.whl" not in counts, "the leaf wheel was not downloaded"


def test_second_call_is_a_cache_hit_and_refresh_recomputes(orchard):
    whl = next(p.name for p in (E2E / "pkgs-a").iterdir() if p.name.startswith("rich-"))
    sha = fetch_sha(orchard, f"/sources/pypi-a/files/rich/{whl}")
    first, h1 = deps(orchard, sha)
    hits = resolutions(orchard, "hit")
    second, h2 = deps(orchard, sha)
    assert (h1["x-orchard-cache"], h2["x-orchard-cache"]) == ("miss", "hit")
    assert second == first
    assert resolutions(orchard, "hit") == hits + 1
    refreshed = resolutions(orchard, "refreshed")
    assert http(f"{orchard.url}/api/v1/artifacts/{sha}/dependencies?refresh=true")[0] == 401, "refresh is an admin action"
    third, h3 = deps(orchard, sha, token=TOKEN, refresh="true")
    assert h3["x-orchard-cache"] == "miss" and third == first
    assert resolutions(orchard, "refreshed") == refreshed + 1
    assert set(names(first["dependencies"])) >= {"markdown-it-py", "pygments"}


def test_npm_tree_of_chalk(orchard):
    sha = fetch_sha(orchard, "/npm/chalk/-/chalk-4.1.2.tgz")
    tree, _ = deps(orchard, sha)
    assert (tree["protocol"], tree["name"], tree["version"]) == ("npm", "chalk", "4.1.2")
    top = names(tree["dependencies"])
    assert top["ansi-styles"]["version"] == "4.3.0"
    assert top["supports-color"]["version"] == "7.2.0"
    assert names(top["ansi-styles"]["dependencies"])["color-convert"]["version"] == "2.0.1"
    assert names(names(top["ansi-styles"]["dependencies"])["color-convert"]["dependencies"])["color-name"]["version"] == "1.1.4"
    assert names(top["supports-color"]["dependencies"])["has-flag"]["version"] == "4.0.0"


def test_maven_tree_of_jackson_databind(orchard):
    sha = fetch_sha(orchard, "/maven/com/fasterxml/jackson/core/jackson-databind/2.17.2/jackson-databind-2.17.2.jar")
    tree, _ = deps(orchard, sha)
    assert (tree["name"], tree["version"]) == ("com.fasterxml.jackson.core:jackson-databind", "2.17.2")
    top = names(tree["dependencies"])
    assert set(top) == {"com.fasterxml.jackson.core:jackson-annotations", "com.fasterxml.jackson.core:jackson-core"}, top.keys()
    assert all(n["version"] == "2.17.2" and n["status"] == "resolved" for n in top.values())


def test_bad_requests(orchard):
    assert http(f"{orchard.url}/api/v1/artifacts/nothex/dependencies")[0] == 400
    assert http(f"{orchard.url}/api/v1/artifacts/{'0' * 64}/dependencies")[0] == 404
    assert http(f"{orchard.url}/api/v1/artifacts/{'0' * 64}/dependencies?max_depth=0")[0] == 400
    assert http(f"{orchard.url}/api/v1/artifacts/{'0' * 64}/dependencies?platform=beos")[0] == 400
    assert http(f"{orchard.url}/api/v1/ensure", method="POST", data=b"six==1.16.0\n")[0] == 401
    assert http(f"{orchard.url}/api/v1/ensure", method="POST", data=b"six==1.16.0\n",
                headers={"Authorization": "Bearer wrong"})[0] == 403
    status, _, body = http(f"{orchard.url}/api/v1/ensure", method="POST", data=b"-i http://x/\n",
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 400 and b"not supported" in body
    assert http(f"{orchard.url}/healthz".replace(orchard.url, orchard.admin))[0] == 200


def requirements_txt(path):
    """Pins and hashes of the PyPI suite's install set, from the upstream files."""
    lines = []
    chosen = {}
    for d in ("pkgs-a", "pkgs-b"):
        for p in sorted((E2E / d).iterdir()):
            if not p.name.endswith((".whl", ".tar.gz")):
                continue
            project = re.split(r"-\d", p.name, maxsplit=1)[0].replace("_", "-").lower()
            version = p.name[len(project) + 1:].split("-")[0].removesuffix(".tar.gz")
            if project in ("six",) and version != "1.16.0":
                continue
            chosen.setdefault(project, (version, []))[1].append(hashlib.sha256(p.read_bytes()).hexdigest())
    for project, (version, hashes) in sorted(chosen.items()):
        lines.append(f"{project}=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes))
    path.write_text("\n".join(lines) + "\n")
    return path


def ensure_cli(orchard, file):
    r = subprocess.run([ORCHARD_BIN, "ensure", str(file), "--server", orchard.url], capture_output=True, text=True,
                       env=dict(os.environ, ORCHARD_ADMIN_TOKEN=TOKEN), timeout=900)
    return r


def upstream_fetches(orchard):
    return sum(v for (n, _), v in orchard.metrics().items() if n == "orchard_upstream_requests_total")


def test_ensure_then_install_with_upstreams_stopped(orchard, upstreams, tmp):
    reqs = requirements_txt(tmp / "requirements.txt")
    lock = json.loads((E2E / "npm-project/package-lock.json").read_text())
    for key, p in lock["packages"].items():
        if key and "resolved" in p:
            name = p.get("name") or key.rsplit("node_modules/", 1)[1]
            p["resolved"] = f"{orchard.url}/npm/{name}/-/{p['resolved'].rsplit('/', 1)[1]}"
    lock_path = tmp / "package-lock.json"
    lock_path.write_text(json.dumps(lock))

    r = ensure_cli(orchard, reqs)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"ensure: (\d+) files: (\d+) cached, (\d+) fetched, 0 failed", r.stdout)
    assert m and int(m.group(1)) >= 25 and int(m.group(3)) > 0, r.stdout
    r = ensure_cli(orchard, lock_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"ensure: 3\d files: \d+ cached, \d+ fetched, 0 failed", r.stdout), r.stdout

    # Idempotent: a second run of both files is all cached and asks no upstream anything.
    before = upstream_fetches(orchard)
    for f in (reqs, lock_path):
        r = ensure_cli(orchard, f)
        assert r.returncode == 0 and re.search(r"files: (\d+) cached, 0 fetched, 0 failed", r.stdout), r.stdout
    assert upstream_fetches(orchard) == before

    for u in upstreams.values():
        u.stop()
    try:
        target = PYPI.venv(tmp / "ensured-venv")
        pip = subprocess.run([str(target / "bin/pip"), "install", "--no-cache-dir", "--disable-pip-version-check",
                              "--require-hashes", "--index-url", f"{orchard.url}/pypi/simple/", "-r", str(reqs)],
                             capture_output=True, text=True, timeout=600)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        proj = tmp / "ensured-npm"
        proj.mkdir()
        (proj / "package.json").write_text((E2E / "npm-project/package.json").read_text())
        (proj / "package-lock.json").write_text(lock_path.read_text())
        (proj / ".npmrc").write_text(f"registry={orchard.url}/npm/\n")
        NPM.npm(["ci"], proj, tmp / "ensured-npm-cache")
        check = subprocess.run(["node", "-e", "require('chalk'); require('debug'); require('semver'); require('yargs');"
                                "require('commander'); require('@babel/code-frame'); require('@isaacs/cliui')"],
                               cwd=proj, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
    finally:
        for u in upstreams.values():
            u.start()


def test_ensure_reports_failures_and_exits_non_zero(orchard, tmp):
    f = tmp / "bad-ensure.yaml"
    f.write_text("- {protocol: pypi, name: six, version: '1.16.0'}\n"
                 "- {protocol: pypi, name: no-such-project-x, version: '1.0'}\n"
                 "- {protocol: npm, name: ms, constraint: ^2.0.0}\n"
                 "- {protocol: maven, name: 'org.slf4j:slf4j-api', version: '0.0.0-missing'}\n"
                 "- {protocol: pypi, name: idna, version: '1.0', hashes: ['sha256:00']}\n")
    r = ensure_cli(orchard, f)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no-such-project-x" in r.stderr and "slf4j-api" in r.stderr
    status, _, body = http(f"{orchard.url}/api/v1/ensure", method="POST", data=f.read_bytes(),
                           headers={"Authorization": f"Bearer {TOKEN}"})
    report = json.loads(body)
    assert any(i["name"] == "six" and i["status"] in ("cached", "fetched") for i in report["items"])
    assert any(i["name"] == "ms" and i["version"] == "2.1.3" and i["status"] != "failed" for i in report["items"])
    assert report["summary"]["failed"] == 4, report  # the missing Maven version: its POM and its jar
    assert all(i["reason"] for i in report["items"] if i["status"] == "failed")


def test_admin_sources_and_invalidation(orchard):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http(f"{orchard.url}/api/v1/sources")[0] == 401
    status, _, body = http(f"{orchard.url}/api/v1/sources", headers=auth)
    assert status == 200
    listed = {s["name"]: s for s in json.loads(body)["sources"]}
    assert set(listed) == {"pypi-a", "pypi-b", "npm-a", "maven-a", "pypi-meta"}
    assert listed["pypi-meta"]["include"] == ["meta-*"]
    assert listed["pypi-a"]["origin"] == "configuration" and listed["pypi-a"]["credentials"] is None
    page = f"{orchard.url}/sources/pypi-a/simple/six/"
    http(page)
    assert http(page)[1].get("x-orchard-cache") == "hit"
    before = listed["pypi-a"]["generation"]
    status, _, body = http(f"{orchard.url}/api/v1/sources/pypi-a/invalidate", method="POST", data=b"", headers=auth)
    assert status == 200 and json.loads(body)["generation"] == before + 1
    assert http(page)[1].get("x-orchard-cache") == "miss", "the source's pages were dropped"
    assert http(f"{orchard.url}/api/v1/sources/nope/invalidate", method="POST", data=b"", headers=auth)[0] == 404
    assert http(f"{orchard.url}/api/v1/sources/pypi-a/invalidate", method="POST", data=b"")[0] == 401


def test_the_dependencies_api_can_require_the_admin_token(tmp, upstreams):
    """ORCHARD_DEPS_REQUIRE_TOKEN (the chart turns it on): 401 without the token, 403 with
    a wrong one, answers with it; python_version spellings are one environment."""
    from conftest import Orchard, sources
    o = Orchard(tmp, {"ORCHARD_UPSTREAMS_FILE": sources(tmp / "deps-token-sources.yaml", upstreams),
                      "ORCHARD_ADMIN_TOKEN": TOKEN, "ORCHARD_DEPS_REQUIRE_TOKEN": "true"}).start()
    try:
        whl = next(p.name for p in (E2E / "pkgs-a").iterdir() if p.name.startswith("six-1.16.0"))
        sha = fetch_sha(o, f"/sources/pypi-a/files/six/{whl}")
        url = f"{o.url}/api/v1/artifacts/{sha}/dependencies"
        assert http(url)[0] == 401
        assert http(url, headers={"Authorization": "Bearer wrong"})[0] == 403
        first, _ = deps(o, sha, token=TOKEN, python_version="3.01")
        _, headers = deps(o, sha, token=TOKEN, python_version="3.1")
        assert headers.get("x-orchard-cache") == "hit", "3.01 and 3.1 are one cached environment"
        assert http(f"{url}?python_version=3.100", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 400
    finally:
        o.stop()
