"""Real pip and uv against Orchard, on the embedded default and on Postgres + Redis
Cluster + S3: a first install fills the cache, the second is served entirely from it
(proved from /metrics), and installs still work with every upstream stopped — also after
a restart, and after the cache is lost (pages from their persisted last good copies)."""
from conftest import E2E, Orchard, Upstream, pip_install, production_env, sources_file, uv_install


def started_upstreams(tmp):
    return Upstream("a", E2E / "pkgs-a", tmp).start(), Upstream("b", E2E / "pkgs-b", tmp).start()


def test_embedded_pip_and_uv_then_offline(tmp):
    a, b = started_upstreams(tmp)
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "sources-embedded.yaml", ("a", a.url), ("b", b.url)),
           "ORCHARD_DATA_DIR": str(tmp / "embedded-data")}
    orchard = Orchard(tmp, env).start()
    try:
        pip_install(orchard.index, tmp / "venv-pip-1")
        first = orchard.requests_by_cache()
        assert first.get("miss", 0) > 20, first

        uv_install(orchard.index, tmp / "venv-uv-2")
        second = orchard.requests_by_cache()
        assert second.get("miss", 0) == first.get("miss", 0), f"the second install went upstream: {first} -> {second}"
        assert second.get("hit", 0) > first.get("hit", 0) + 20

        a.stop()
        b.stop()
        pip_install(orchard.index, tmp / "venv-pip-3")
        third = orchard.requests_by_cache()
        assert third.get("miss", 0) == first.get("miss", 0), f"went upstream with the upstreams stopped: {third}"
        assert orchard.stop() == 0

        # Restarted on the same data directory with the upstreams still down: the pages
        # come from their persisted last good copies (the in-process cache died with the
        # process), the files from storage.
        orchard = Orchard(tmp, env).start()
        pip_install(orchard.index, tmp / "venv-pip-4")
        uv_install(orchard.index, tmp / "venv-uv-5")
        after = orchard.requests_by_cache()
        assert after.get("miss", 0) == 0 and after.get("stale", 0) >= 1 and after.get("hit", 0) > 20, after
        restored = sum(v for (n, labels), v in orchard.metrics().items()
                       if n == "orchard_document_copies_total" and ("outcome", "restored") in labels)
        assert restored >= 8, restored
    finally:
        orchard.stop()
        a.stop()
        b.stop()


def test_production_backends_shared_by_a_new_replica(tmp):
    a, b = started_upstreams(tmp)
    env = production_env(f"e2e-{tmp.name}")
    env["ORCHARD_UPSTREAMS_FILE"] = sources_file(tmp / "sources-production.yaml", ("a", a.url), ("b", b.url))
    orchard = Orchard(tmp, env).start()
    try:
        pip_install(orchard.index, tmp / "venv-prod-pip-1")
        first = orchard.requests_by_cache()
        uv_install(orchard.index, tmp / "venv-prod-uv-2")
        second = orchard.requests_by_cache()
        assert second.get("miss", 0) == first.get("miss", 0), f"{first} -> {second}"
        assert orchard.stop() == 0

        # A new process, upstreams down: everything comes from Postgres, Redis and S3.
        a.stop()
        b.stop()
        replica = Orchard(tmp, env).start()
        try:
            pip_install(replica.index, tmp / "venv-prod-pip-3")
            counts = replica.requests_by_cache()
            assert counts.get("miss", 0) == 0, counts
            assert counts.get("hit", 0) > 20, counts
        finally:
            replica.stop()
        # …and with the cache lost too (a new namespace stands for a flushed Redis): the
        # pages come from their last good copies in S3.
        replica = Orchard(tmp, dict(env, ORCHARD_CACHE_NAMESPACE=env["ORCHARD_CACHE_NAMESPACE"] + "-flushed")).start()
        try:
            pip_install(replica.index, tmp / "venv-prod-pip-4")
            counts = replica.requests_by_cache()
            assert counts.get("miss", 0) == 0 and counts.get("stale", 0) >= 1, counts
        finally:
            replica.stop()
    finally:
        orchard.stop()
        a.stop()
        b.stop()
