"""Scenario 7 — dependencies.

  a) storing the 50 dependencies of one artifact: one statement (Orchard's
     batch_upsert_dependencies) next to 50 one-row statements, same Postgres, same run
     (server/tests/db.rs::bench_store_50_dependencies, debug build as in `make test`);
  b) a cached resolution (GET /api/v1/artifacts/{sha}/dependencies answered from one
     cache read), wrk, next to nginx serving the same JSON as a static file.
"""
import hashlib
import os
import re
import subprocess
from pathlib import Path

from common import E2E, Stack, http, measure, ratio, server_cells, table

REPO = Path(__file__).resolve().parent.parent.parent


def store50():
    env = dict(os.environ, ORCHARD_BENCH_ROUNDS=os.environ.get("ORCHARD_BENCH_ROUNDS", "200"))
    r = subprocess.run(["cargo", "test", "-q", "-p", "orchard-server", "--test", "db", "bench_store_50_dependencies",
                        "--", "--ignored", "--nocapture"], cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = {}
    for m in re.finditer(r"BENCH store50 (\w+) median_ms=([\d.]+) p99_ms=([\d.]+) statements=(\d+) rounds=(\d+)", r.stdout):
        out[m.group(1)] = (float(m.group(2)), float(m.group(3)), int(m.group(4)), int(m.group(5)))
    return out


def sequential(base, path, n):
    """p50 and p99 in ms of n sequential GETs over one keep-alive connection."""
    import http.client
    import time
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status == 200 and r.getheader("x-orchard-cache") == "hit"
        times.append((time.perf_counter() - t) * 1000)
    conn.close()
    times.sort()
    return times[n // 2], times[min(n - 1, n * 99 // 100)]


def run(args):
    s50 = store50()
    b, p = s50["batch"], s50["per_row"]
    table(f"7a. Storing 50 dependencies of one artifact, Postgres on loopback, {b[3]} rounds",
          ["way", "statements", "median ms", "p99 ms", "Orchard/this time"],
          [["batch_upsert_dependencies (Orchard)", b[2], f"{b[0]:.2f}", f"{b[1]:.2f}", "—"],
           ["one statement per dependency", p[2], f"{p[0]:.2f}", f"{p[1]:.2f}", ratio(b[0], p[0])]])

    with Stack("deps") as s:
        up_url, _ = s.pypiserver(E2E / "pkgs-a", E2E / "pkgs-b")
        o = s.orchard(args.orchard, {"ORCHARD_UPSTREAM_PYPI": up_url})
        wheel = next(f.name for f in (E2E / "pkgs-a").iterdir() if f.name.startswith("flask-"))
        status, _, body = http(f"{o.url}/sources/pypi/files/flask/{wheel}")
        assert status == 200
        sha = hashlib.sha256(body).hexdigest()
        url = f"{o.url}/api/v1/artifacts/{sha}/dependencies"
        status, h, first = http(url, timeout=120)
        assert status == 200, first[:300]
        status, h, cached = http(url)
        assert h.get("x-orchard-cache") == "hit", h
        static = s.work / "static"
        static.mkdir()
        (static / "deps.json").write_bytes(cached)
        ng, ng_pid = s.nginx("nginx-static", f"    root {static};")
        c = args.connections
        om = measure(url, c, args.seconds, [o.pid])
        nm = measure(f"{ng}/deps.json", c, args.seconds, [ng_pid])
        single = sequential(o.url, f"/api/v1/artifacts/{sha}/dependencies", 500)
        table(f"7b. Cached resolution of flask's tree ({len(cached)} bytes JSON), {c} connections, {args.seconds} s",
              ["server", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB", "Orchard/this req/s"],
              [["Orchard (one cache read)", *server_cells(om), "—"],
               ["nginx static file of the same JSON", *server_cells(nm), ratio(om["rps"], nm["rps"])]])
        print(f"\nOne keep-alive connection, one request at a time (500 requests, Python client): "
              f"p50 {single[0]:.2f} ms, p99 {single[1]:.2f} ms.")
