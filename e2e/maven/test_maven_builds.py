"""Real `mvn -B package` builds through Orchard's mirror, with an empty local
repository each time: the first fills the cache, the second downloads everything from
the cache (from /metrics), the third works with both upstreams stopped; on the
embedded default and on Postgres + Redis Cluster + S3."""
from conftest import Nginx, Orchard, mvn_package, production_env, sources_file


def maven_requests(orchard):
    return orchard.requests_by_cache("maven")


def run_builds(tmp, extra_env, tag):
    a, b = Nginx("a").start(), Nginx("b").start()
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / f"maven-sources-{tag}.yaml", ("a", a.url), ("b", b.url), protocol="maven")}
    env.update(extra_env)
    orchard = Orchard(tmp, env).start()
    mirror = f"{orchard.url}/maven/"
    try:
        mvn_package(tmp, f"{tag}-build-1", mirror)
        first = maven_requests(orchard)
        assert first.get("miss", 0) >= 30, first
        assert len(a.requests("GET ")) >= 30

        mvn_package(tmp, f"{tag}-build-2", mirror)
        second = maven_requests(orchard)
        assert second.get("miss", 0) == first.get("miss", 0), f"the second build went upstream: {first} -> {second}"
        assert second.get("hit", 0) >= first.get("hit", 0) + 30

        a.stop()
        b.stop()
        mvn_package(tmp, f"{tag}-build-3", mirror)
        assert maven_requests(orchard).get("miss", 0) == first.get("miss", 0)
    finally:
        orchard.stop()
        a.stop()
        b.stop()


def test_maven_embedded(tmp):
    run_builds(tmp, {}, "embedded")


def test_maven_production_backends(tmp):
    run_builds(tmp, production_env(f"e2e-maven-{tmp.name}"), "production")
