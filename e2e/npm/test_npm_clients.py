"""Real npm and pnpm through Orchard: `npm install` with an .npmrc and with --registry,
a package-lock.json round trip, the second install entirely from cache (from /metrics),
and installs with both upstream registries stopped; on the embedded default and on
Postgres + Redis Cluster + S3."""
import json

from conftest import PNPM, Orchard, Verdaccio, check_project, npm, production_env, project, sources_file


def npm_requests(orchard):
    return orchard.requests_by_cache("npm")


def run_suite(tmp, env_extra, tag):
    a, b = Verdaccio("a").start(), Verdaccio("b").start()
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / f"npm-sources-{tag}.yaml", ("a", a.url), ("b", b.url), protocol="npm")}
    env.update(env_extra)
    orchard = Orchard(tmp, env).start()
    registry = f"{orchard.url}/npm/"
    try:
        # 1. npm install with --registry (the .npmrc says otherwise; the flag wins)
        p1 = project(tmp, f"{tag}-npm-1", "http://127.0.0.1:9/unused/")
        npm(["install", "--registry", registry], p1, tmp / f"{tag}-cache-1")
        check_project(p1)
        lock = json.loads((p1 / "package-lock.json").read_text())
        resolved = [v["resolved"] for k, v in lock["packages"].items() if k]
        assert len(resolved) >= 30, len(resolved)
        assert all(r.startswith(f"{orchard.url}/sources/") for r in resolved), resolved[:3]
        assert any("/sources/b/@types/ms/-/ms-" in r for r in resolved)
        first = npm_requests(orchard)
        assert first.get("miss", 0) >= 30, first

        # 2. lockfile round trip: npm ci with the .npmrc, fresh cache: all from Orchard's cache
        p2 = project(tmp, f"{tag}-npm-2", registry, lockfile_from=p1)
        npm(["ci"], p2, tmp / f"{tag}-cache-2")
        check_project(p2)
        second = npm_requests(orchard)
        assert second.get("miss", 0) == first.get("miss", 0), f"{first} -> {second}"
        assert second.get("hit", 0) >= first.get("hit", 0) + 30

        # 3. both upstreams stopped
        a.stop()
        b.stop()
        p3 = project(tmp, f"{tag}-npm-3", registry, lockfile_from=p1)
        npm(["ci"], p3, tmp / f"{tag}-cache-3")
        check_project(p3)
        p4 = project(tmp, f"{tag}-npm-4", registry)
        npm(["install"], p4, tmp / f"{tag}-cache-4")
        check_project(p4)
        assert npm_requests(orchard).get("miss", 0) == first.get("miss", 0)
        return orchard, registry
    finally:
        orchard.stop()
        a.stop()
        b.stop()


def test_npm_embedded(tmp):
    run_suite(tmp, {}, "embedded")


def test_npm_production_backends(tmp):
    run_suite(tmp, production_env(f"e2e-npm-{tmp.name}"), "production")


def test_pnpm(tmp, verdaccio_a, verdaccio_b):
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "npm-sources-pnpm.yaml", ("a", verdaccio_a.url), ("b", verdaccio_b.url), protocol="npm")}
    orchard = Orchard(tmp, env).start()
    try:
        import subprocess
        for i in (1, 2):
            d = project(tmp, f"pnpm-{i}", f"{orchard.url}/npm/")
            r = subprocess.run([str(PNPM), "install", "--store-dir", str(tmp / f"pnpm-store-{i}"), "--reporter", "append-only"],
                               cwd=d, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stdout + r.stderr
            check = "require('chalk'); require('yargs'); require('@babel/code-frame');"
            r = subprocess.run(["node", "-e", check], cwd=d, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            assert (d / "pnpm-lock.yaml").exists()
            if i == 1:
                first = npm_requests(orchard)
        assert npm_requests(orchard).get("miss", 0) == first.get("miss", 0), "the second pnpm install came from cache"
    finally:
        orchard.stop()
