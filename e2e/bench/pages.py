"""Scenario 2 — warm PyPI project page, PEP 691 JSON and PEP 503 HTML, 64 connections.

Orchard (embedded default) and three references, all in front of the SAME pypiserver
(the e2e upstream: pkgs-a and pkgs-b) and all warmed:
  - nginx serving the bytes Orchard served, as static files (the floor: no logic at all)
  - devpi-server, a mirror index root/up of that pypiserver (initialised with
    --no-root-pypi, so it has no index of the public registry at all)
  - proxpi under gunicorn (PROXPI_INDEX_URL = that pypiserver)
"""
import argparse

from common import (E2E, PYPI_JSON, Stack, http, measure, ratio, server_cells, table, terminate_on_signals,
                    version_of)

PROJECT = "pygments"


def run(args):
    with Stack("pages") as s:
        up_url, _ = s.pypiserver(E2E / "pkgs-a", E2E / "pkgs-b")
        o = s.orchard(args.orchard, {"ORCHARD_UPSTREAM_PYPI": up_url, "ORCHARD_CACHE_TTL_INDEX": "3600"})
        devpi_index, devpi_pid = s.devpi(up_url)
        proxpi_index, proxpi_pid = s.proxpi(up_url)
        static = s.work / "static"
        static.mkdir()
        page = f"{o.url}/pypi/simple/{PROJECT}/"
        servers = {"Orchard": (page, [o.pid]), "devpi-server " + version_of("devpi-server"): (f"{devpi_index}{PROJECT}/", [devpi_pid]),
                   "proxpi " + version_of("proxpi"): (f"{proxpi_index}{PROJECT}/", [proxpi_pid])}
        notes = []
        for fmt, accept in (("json", PYPI_JSON), ("html", "text/html")):
            for name, (url, _) in servers.items():
                for _ in range(3):  # the first fills the cache; the last must be a warm answer
                    status, h, body = http(url, headers={"Accept": accept})
                    assert status == 200, (url, status)
                ctype = h.get("content-type", "")
                if fmt == "json" and "json" not in ctype:
                    notes.append(f"{name} answered {ctype} to a JSON request")
                if name == "Orchard":
                    assert h.get("x-orchard-cache") == "hit", h
                    (static / f"page.{fmt}").write_bytes(body)
        ng, ng_pid = s.nginx("nginx-static", f"    root {static};")
        assert http(f"{ng}/page.json")[0] == 200
        rows = []
        c = args.connections
        for fmt, accept in (("JSON", PYPI_JSON), ("HTML", "text/html")):
            hdr = [f"Accept: {accept}"]
            om = measure(page, c, args.seconds, [o.pid], hdr)
            rows.append([f"project page, {fmt}", "Orchard", *server_cells(om), "—"])
            refs = [("nginx static file", f"{ng}/page.{fmt.lower()}", [ng_pid])]
            refs += [(name, url, pids) for name, (url, pids) in servers.items() if name != "Orchard"]
            for name, url, pids in refs:
                m = measure(url, c, args.seconds, pids, hdr)
                rows.append([f"project page, {fmt}", name, *server_cells(m), ratio(om["rps"], m["rps"], 1)])
        table(f"2. Warm PyPI project page ({PROJECT}), {c} connections, {args.seconds} s per run; all over the same pypiserver",
              ["page", "server", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB", "Orchard/this req/s"], rows)
        for n in notes:
            print(f"\nNote: {n}.")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--orchard", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    terminate_on_signals()
    run(ap.parse_args())
