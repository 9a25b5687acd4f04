"""Source changes reach every replica: a row written to upstream_sources plus an
invalidation message on the cache (what the operator does) makes all three replicas
serve — or stop serving — the source."""
import subprocess
import time

from conftest import http


def sql(url, statement):
    subprocess.run(["psql", url, "-qc", statement], check=True)


def publish(env, message):
    host, port = env["ORCHARD_REDIS_CLUSTER_NODES"].split(",")[0].split(":")
    channel = f"{env['ORCHARD_CACHE_NAMESPACE']}:invalidate"
    subprocess.run(["redis-cli", "-c", "-h", host, "-p", port, "PUBLISH", channel, message], check=True,
                   capture_output=True)


def wait_all(replicas, path, status, seconds=10):
    start = time.time()
    for r in replicas:
        while http(r.url + path)[0] != status:
            assert time.time() - start < seconds, f"{r.url}{path} never answered {status}"
            time.sleep(0.05)
    return time.time() - start


def test_a_new_source_is_served_by_every_replica(cluster, fault):
    replicas, _ = cluster
    env = replicas[0].env
    path = "/sources/late/simple/late-project/"
    assert all(http(r.url + path)[0] == 404 for r in replicas)
    sql(env["ORCHARD_DATABASE_URL"],
        f"INSERT INTO upstream_sources (name, protocol, url, priority, enabled, settings, updated_at) "
        f"VALUES ('late', 'pypi', '{fault.url}', 50, true, '{{}}', 0)")
    publish(env, '{"source":"late"}')
    took = wait_all(replicas, path, 200)
    print(f"source added: all replicas serve it after {took:.3f} s")
    sql(env["ORCHARD_DATABASE_URL"], "UPDATE upstream_sources SET enabled = false WHERE name = 'late'")
    publish(env, '{"source":"late"}')
    took = wait_all(replicas, path, 404)
    print(f"source disabled: all replicas stopped serving it after {took:.3f} s")
