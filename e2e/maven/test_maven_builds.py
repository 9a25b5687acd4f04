"""Real `mvn -B package` builds through Orchard's mirror, with an empty local
repository each time: the first fills the cache, the second downloads everything from
the cache (from /metrics), the third works with both upstreams stopped; on the
embedded default and on Postgres + Redis Cluster + S3. And a Spring Boot 3 application
whose build asks for files that have no POM, through the merged /maven/ route."""
import zipfile
from collections import Counter

from conftest import E2E, Nginx, Orchard, mvn_package, production_env, sources_file


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


def upstream_requests(orchard):
    return orchard.counter("orchard_upstream_requests_total")


def test_spring_boot_application_through_the_merged_route(tmp):
    """Spring Boot 3 (web + actuator + test, repackaged by spring-boot-maven-plugin, one
    JUnit 5 test) with an empty local repository through /maven/: cold with one upstream
    request per path, warm with none, and with the upstream stopped."""
    root = E2E / "maven-upstream-boot"
    plexus = root / "org/codehaus/plexus/plexus-utils/1.1"
    # the case this guards: Maven asks for a jar whose version has no POM anywhere
    assert (plexus / "plexus-utils-1.1.jar").exists() and not (plexus / "plexus-utils-1.1.pom").exists()
    boot = Nginx("boot").start()
    # metadata and 404s stay fresh for the whole test: "warm" means no upstream request at all
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "maven-sources-boot.yaml", ("boot", boot.url), protocol="maven"),
           "ORCHARD_CACHE_TTL_VERSIONS": "3600", "ORCHARD_CACHE_TTL_NEGATIVE": "3600"}
    orchard = Orchard(tmp, env).start()
    mirror = f"{orchard.url}/maven/"
    try:
        out = mvn_package(tmp, "boot-1", mirror, project="spring-boot", jar="boot-e2e-1.0.0.jar")
        assert "Tests run: 1, Failures: 0, Errors: 0" in out
        with zipfile.ZipFile(tmp / "boot-1/target/boot-e2e-1.0.0.jar") as z:  # repackaged by Spring Boot
            names = z.namelist()
        assert "BOOT-INF/classes/org/orchard/e2e/boot/Application.class" in names
        assert any(n.startswith("BOOT-INF/lib/spring-webmvc-") for n in names)
        assert "GET /org/codehaus/plexus/plexus-utils/1.1/plexus-utils-1.1.jar 200" in boot.requests()
        # one upstream request per path in the whole cold build
        per_path = Counter(line.split(" ")[1] for line in boot.requests("GET "))
        repeated = {p: n for p, n in per_path.items() if n > 1}
        assert not repeated, repeated
        cold = upstream_requests(orchard)
        assert cold == sum(per_path.values()) and cold > 200, (cold, len(per_path))
        first = orchard.requests_by_cache("maven")

        mvn_package(tmp, "boot-2", mirror, project="spring-boot", jar="boot-e2e-1.0.0.jar")
        assert upstream_requests(orchard) == cold, "the warm build went upstream"
        second = orchard.requests_by_cache("maven")
        assert second.get("miss", 0) == first.get("miss", 0)
        assert second.get("hit", 0) >= first.get("hit", 0) + 200, (first, second)

        boot.stop()
        mvn_package(tmp, "boot-3", mirror, project="spring-boot", jar="boot-e2e-1.0.0.jar")
        assert upstream_requests(orchard) == cold
        print(f"spring boot: {len(per_path)} upstream paths, {cold} upstream requests cold, 0 warm; "
              f"cache outcomes cold {first}, warm {second}")
    finally:
        orchard.stop()
        boot.stop()
