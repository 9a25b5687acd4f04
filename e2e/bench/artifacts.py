"""Scenario 1 — warm artifact hit: a real ~1 MiB wheel (pygments) and a synthetic
20 MiB wheel, at 64 and 256 connections, through Orchard (embedded default: SQLite,
local directory, in-process cache) and through nginx `proxy_cache` (a caching reverse
proxy), both in front of the SAME upstream (a pypiserver over the bench package
directory) and both warmed."""
import argparse

from common import (BENCH_PKGS, Stack, f0, http, measure, ratio, server_cells, table, terminate_on_signals)

NGINX_CACHE = """
    location / {{
      proxy_pass http://127.0.0.1:{port};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status;
    }}
"""


def run(args):
    with Stack("artifacts") as s:
        up_url, _ = s.pypiserver(BENCH_PKGS)
        up_port = up_url.split(":")[2].split("/")[0]
        o = s.orchard(args.orchard, {"ORCHARD_UPSTREAM_PYPI": up_url, "ORCHARD_CACHE_TTL_INDEX": "3600"})
        cache_dir = s.work / "nginx-cache"
        ng, ng_pid = s.nginx("nginx-proxy-cache", NGINX_CACHE.format(port=up_port),
                             http_extra=f"proxy_cache_path {cache_dir} levels=1:2 keys_zone=bench:10m "
                                        f"max_size=4g inactive=1h use_temp_path=off;")
        wheels = sorted((p.name for p in BENCH_PKGS.iterdir()
                         if p.name.startswith(("pygments-", "orchardbench_twenty-"))),
                        key=lambda n: (BENCH_PKGS / n).stat().st_size)
        rows = []
        for name in wheels:  # pygments (1.2 MiB) first, then the 20 MiB wheel
            project = name.split("-")[0].replace("_", "-")
            size = (BENCH_PKGS / name).stat().st_size
            o_url = f"{o.url}/sources/pypi/files/{project}/{name}"
            n_url = f"{ng}/packages/{name}"
            # warm both (Orchard learns the file from the project page first)
            assert http(f"{o.url}/pypi/simple/{project}/")[0] == 200
            for _ in range(2):
                status, h, body = http(o_url, timeout=120)
                assert status == 200 and len(body) == size, (o_url, status, len(body))
                status, hn, body = http(n_url, timeout=120)
                assert status == 200 and len(body) == size, (n_url, status, len(body))
            assert h.get("x-orchard-cache") == "hit", h
            assert hn.get("x-cache-status") == "HIT", hn
            for c in args.artifact_connections:
                om = measure(o_url, c, args.seconds, [o.pid], timeout=30)
                nm = measure(n_url, c, args.seconds, [ng_pid], timeout=30)
                label = f"{size / 2**20:.1f} MiB wheel"
                rows.append([label, c, "Orchard", *server_cells(om), f0(om["mib_s"]), ratio(om["rps"], nm["rps"])])
                rows.append([label, c, "nginx proxy_cache", *server_cells(nm), f0(nm["mib_s"]), "—"])
        table(f"1. Warm artifact hit ({args.seconds} s per run), reference nginx proxy_cache over the same pypiserver",
              ["file", "connections", "server", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB", "MiB/s",
               "Orchard/nginx req/s"], rows)


def add_args(ap):
    ap.add_argument("--artifact-connections", type=int, nargs="+", default=[64, 256])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--orchard", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    add_args(ap)
    terminate_on_signals()
    run(ap.parse_args())
