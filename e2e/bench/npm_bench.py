"""Scenario 3 — npm: Orchard next to Verdaccio serving the same packages from its own
storage, in the same run, on loopback.

  1. warm abbreviated packument of a package with 600 versions (64 connections)
  2. warm tarball hit (64 connections)
  3. a ~20 MB packument (3000 versions): the cold fetch through Orchard (parse and
     rewrite on the blocking pool), and /npm/-/ping latency while 20 MB packuments are
     being re-rendered for several client hosts at once — the server must not stall.

The synthetic packages are written straight into a Verdaccio storage folder
($ORCHARD_E2E_DIR/verdaccio-bench), once.
"""
import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import threading
import time

from common import (E2E, Stack, current_rss_mib, f0, free_port, http, measure, peak_rss_mib, ratio, reset_peak, server_cells, table,
                    terminate_on_signals, wait_http, wrk)

ABBREV = "application/vnd.npm.install-v1+json"
STORE = E2E / "verdaccio-bench"
VERDACCIO = E2E / "npm-tools/node_modules/.bin/verdaccio"


def tarball(name, version):
    pkg = json.dumps({"name": name, "version": version, "description": "bench"}).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as t:
        info = tarfile.TarInfo("package/package.json")
        info.size = len(pkg)
        t.addfile(info, io.BytesIO(pkg))
        blob = os.urandom(200_000)  # an incompressible payload, like real code
        info = tarfile.TarInfo("package/blob.bin")
        info.size = len(blob)
        t.addfile(info, io.BytesIO(blob))
    return raw.getvalue()


def write_package(storage, name, versions, filler):
    d = storage / name
    d.mkdir(parents=True, exist_ok=True)
    data = tarball(name, "1.0.0")
    (d / f"{name}-1.0.0.tgz").write_bytes(data)
    dist = {"shasum": hashlib.sha1(data).hexdigest(),
            "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()}
    doc = {"name": name, "versions": {}, "time": {}, "dist-tags": {}, "_uplinks": {}, "_distfiles": {},
           "_attachments": {}, "_rev": "1-0", "_id": name, "readme": "bench"}
    for i in range(versions):
        v = f"1.0.{i}"
        doc["versions"][v] = {"name": name, "version": v, "description": filler,
                              "dependencies": {"left-pad": "^1.3.0"},
                              "dist": dict(dist, tarball=f"http://localhost/{name}/-/{name}-{v}.tgz")}
        doc["time"][v] = "2026-01-01T00:00:00.000Z"
    doc["dist-tags"]["latest"] = f"1.0.{versions - 1}"
    (d / "package.json").write_text(json.dumps(doc))
    return (d / "package.json").stat().st_size


def prepare():
    marker = STORE / ".complete-1"
    if marker.exists():
        return
    shutil.rmtree(STORE, ignore_errors=True)
    (STORE / "storage").mkdir(parents=True)
    (STORE / "config.yaml").write_text((E2E / "verdaccio-a/config.yaml").read_text())
    (STORE / "htpasswd").write_text("")
    write_package(STORE / "storage", "bench-many", 600, "a small package with many versions")
    size = write_package(STORE / "storage", "bench-huge", 3000, "x" * 6500)
    print(f"prepared bench packages (bench-huge packument: {size / 1e6:.1f} MB)", file=sys.stderr)
    marker.touch()


def timed_get(url, headers):
    t = time.perf_counter()
    status, _, body = http(url, headers=headers, timeout=120)
    return status, len(body), time.perf_counter() - t


def run(args):
    prepare()
    with Stack("npm") as s:
        vport = free_port()
        v = s.proc([VERDACCIO, "--config", STORE / "config.yaml", "--listen", f"127.0.0.1:{vport}"], "verdaccio")
        verdaccio = f"http://127.0.0.1:{vport}"
        wait_http(f"{verdaccio}/-/ping")
        o = s.orchard(args.orchard, {"ORCHARD_UPSTREAM_NPM": f"{verdaccio}/", "ORCHARD_CACHE_TTL_VERSIONS": "3600"})
        base = o.url
        h = {"Accept": ABBREV}
        for url in (f"{base}/npm/bench-many", f"{base}/npm/bench-many/-/bench-many-1.0.0.tgz",
                    f"{verdaccio}/bench-many", f"{verdaccio}/bench-many/-/bench-many-1.0.0.tgz"):
            assert http(url, headers=h)[0] == 200, url
        c, secs = args.connections, args.seconds
        rows = []
        vname = "Verdaccio " + verdaccio_version()
        for label, o_url, v_url, hdr in [
            ("abbreviated packument, 600 versions", f"{base}/npm/bench-many", f"{verdaccio}/bench-many", [f"Accept: {ABBREV}"]),
            ("tarball 200 KB", f"{base}/npm/bench-many/-/bench-many-1.0.0.tgz", f"{verdaccio}/bench-many/-/bench-many-1.0.0.tgz", []),
        ]:
            om = measure(o_url, c, secs, [o.pid], hdr)
            vm = measure(v_url, c, secs, [v.p.pid], hdr)
            rows.append([label, "Orchard", *server_cells(om), "—"])
            rows.append([label, vname, *server_cells(vm), ratio(om["rps"], vm["rps"], 1)])
        table(f"3. Warm npm ({c} connections, {secs} s per run), reference Verdaccio serving the same packages from its storage",
              ["scenario", "server", "req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB", "Orchard/this req/s"], rows)

        # 20 MB packument: what fetching it costs each server in memory (VmHWM reset first)
        reset_peak([o.pid, v.p.pid])
        o_before, v_before = current_rss_mib(o.pid), current_rss_mib(v.p.pid)
        status, size, cold = timed_get(f"{base}/npm/bench-huge", h)
        assert status == 200
        o_fetch_peak = peak_rss_mib([o.pid])
        _, _, upstream = timed_get(f"{verdaccio}/bench-huge", h)
        v_peak = peak_rss_mib([v.p.pid])
        _, _, warm = timed_get(f"{base}/npm/bench-huge", h)
        doc_mib = size / 2**20
        stop = threading.Event()
        renders = []

        def rerender(i):
            n = 0
            while not stop.is_set():
                # a new client host each time: a new render of the 20 MB document
                status, _, dt = timed_get(f"{base}/npm/bench-huge", {"Accept": ABBREV, "Host": f"client{i}-{n}.test:{o.port}"})
                renders.append(dt)
                n += 1

        ping_secs = min(5, secs)
        threads = [threading.Thread(target=rerender, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            ping = wrk(f"{base}/npm/-/ping", 16, ping_secs)
        finally:
            stop.set()
            for t in threads:
                t.join()
        idle = wrk(f"{base}/npm/-/ping", 16, ping_secs)
        table(f"3b. A 20 MB packument ({size / 1e6:.1f} MB abbreviated)", ["measurement", "value"], [
            ["cold fetch through Orchard (upstream fetch, parse, rewrite, render)", f"{cold * 1000:.0f} ms"],
            ["the same document straight from Verdaccio", f"{upstream * 1000:.0f} ms"],
            ["warm hit through Orchard", f"{warm * 1000:.0f} ms"],
            ["re-renders for new client hosts during the ping run", f"{len(renders)}, median {sorted(renders)[len(renders) // 2] * 1000:.0f} ms"],
            [f"`/npm/-/ping` p99 while 20 MB re-renders run (16 connections, {ping_secs} s)", f"{ping['p99']:.2f} ms ({ping['rps']:.0f} req/s)"],
            [f"`/npm/-/ping` p99 idle (16 connections, {ping_secs} s)", f"{idle['p99']:.2f} ms ({idle['rps']:.0f} req/s)"],
            ["Orchard peak RSS over this part", f"{f0(peak_rss_mib([o.pid]))} MiB"],
        ])
        table(f"3c. Memory for the {size / 1e6:.1f} MB packument (VmHWM reset before; growth = peak − RSS before)",
              ["server", "RSS before MiB", "peak MiB", "growth MiB", "growth / document"], [
            ["Orchard (cold fetch: upstream read, parse, rewrite, store, serve)", f0(o_before), f0(o_fetch_peak),
             f0(o_fetch_peak - o_before), f"{(o_fetch_peak - o_before) / doc_mib:.1f}×"],
            [f"{vname} (serving it to Orchard, then directly)", f0(v_before), f0(v_peak),
             f0(v_peak - v_before), f"{(v_peak - v_before) / doc_mib:.1f}×"],
        ])


def verdaccio_version():
    try:
        return json.loads((E2E / "npm-tools/node_modules/verdaccio/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--orchard", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    terminate_on_signals()
    run(ap.parse_args())
