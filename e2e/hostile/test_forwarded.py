"""Forwarded headers and Host storms: tarball links follow `Forwarded` /
`X-Forwarded-*` only from ORCHARD_TRUSTED_PROXIES, and clients inventing Host values
cannot grow the cache (rendered packuments and version manifests are kept for 16 distinct
bases a replica; packuments over 1 MiB are spliced per request and never cached rendered)."""
import json
import subprocess

from conftest import Orchard, http, production_env
from test_ssrf import sources


def tarball(o, headers):
    status, _, body = http(f"{o.url}/npm/plain-pkg", headers=headers)
    assert status == 200, body[:300]
    return json.loads(body)["versions"]["1.0.0"]["dist"]["tarball"]


def test_forwarded_headers_only_from_trusted_proxies(tmp, hostile, bystander):
    env = sources(tmp, "fwd", hostile, bystander)
    o = Orchard(tmp, env).start()
    try:
        link = tarball(o, {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
                           "Forwarded": "host=evil.example;proto=https"})
        assert link.startswith(f"http://127.0.0.1:{o.port}/"), link
    finally:
        o.stop()
    o = Orchard(tmp, dict(env, ORCHARD_TRUSTED_PROXIES="127.0.0.0/8")).start()
    try:
        link = tarball(o, {"X-Forwarded-Host": "orchard.example", "X-Forwarded-Proto": "https"})
        assert link.startswith("https://orchard.example/"), link
    finally:
        o.stop()


def test_a_host_storm_does_not_grow_the_cache(tmp, hostile, bystander):
    env = dict(sources(tmp, "storm", hostile, bystander), **production_env("e2e-hostile-storm"))
    o = Orchard(tmp, env).start()
    try:
        for i in range(60):
            link = tarball(o, {"Host": f"h{i}.example"})
            assert link.startswith(f"http://h{i}.example/"), link
            status, _, body = http(f"{o.url}/npm/plain-pkg/1.0.0", headers={"Host": f"h{i}.example"})
            assert status == 200 and json.loads(body)["dist"]["tarball"].startswith(f"http://h{i}.example/")
        node = env["ORCHARD_REDIS_CLUSTER_NODES"].split(",")[0]
        host, port = node.rsplit(":", 1)
        out = subprocess.run(["redis-cli", "-h", host, "-p", port, "--cluster", "call", node, "KEYS",
                              f"{env['ORCHARD_CACHE_NAMESPACE']}*rendered*"],
                             capture_output=True, text=True, check=True).stdout
        keys = {k for l in out.splitlines() for k in l.replace(": ", " ").split()
                if k.startswith(env["ORCHARD_CACHE_NAMESPACE"])}
        # …rendered/{source}/{name}/{digest}/{repr}/{base tag} and
        # …rendered-version/{source}/{name}/{digest}/{base tag}/{version}
        packument_bases = {k.split("rendered/", 1)[1].split("/")[4] for k in keys if "rendered/evilnpm/plain-pkg/" in k}
        version_bases = {k.split("rendered-version/", 1)[1].split("/")[3] for k in keys if "rendered-version/evilnpm/plain-pkg/" in k}
        assert 1 <= len(packument_bases) <= 16 and 1 <= len(version_bases) <= 16, (packument_bases, version_bases, out[:500])
    finally:
        o.stop()
