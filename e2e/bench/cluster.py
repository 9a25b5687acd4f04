"""Scenarios 4 and 5, on three `orchard serve` replicas with the production backends
(Postgres, Redis Cluster, S3 from `make services-up`) behind nginx round robin — the
set-up of e2e/scale/conftest.py, whose LoadBalancer is reused.

4. Cold fan-in: 200 concurrent requests (one connection each) for one uncached 5 MiB
   artifact through the load balancer. Reports the upstream GETs of that file (the
   counting fault upstream, GET /__count; must be 1) and the time to the last byte,
   next to 200 concurrent fetches of the same file straight from the upstream.
5. Streaming memory: 64 concurrent downloads of a 200 MiB artifact (from the bench
   pypiserver) through one replica, cold then warm; peak RSS (VmHWM, reset before each
   phase) of every replica.
"""
import argparse
import importlib.util
import json
import sys
import uuid

from common import (BENCH_PKGS, HERE, Stack, f0, fetch_many, free_port, http, peak_rss_mib, percentile, production_env,
                    reset_peak, sources_file, table, terminate_on_signals, wait_http)

FANIN = 200
STREAMS = 64
HUGE = "orchardbench_huge-1.0-py3-none-any.whl"


def load_balancer_class():
    spec = importlib.util.spec_from_file_location("scale_conftest", HERE.parent / "scale/conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.LoadBalancer


def summary(results, expected_size):
    """(complete, total, times to the last byte, times to the first byte), of complete 200s."""
    ok = [r for r in results if r[0] == 200 and r[1] == expected_size]
    return len(ok), len(results), [r[2] for r in ok], [r[3] for r in ok]


def fill_locks(replicas):
    """orchard_fill_lock_total by outcome, summed over the replicas."""
    out = {}
    for r in replicas:
        for (name, labels), v in r.metrics().items():
            if name == "orchard_fill_lock_total" and v:
                k = dict(labels).get("outcome", "?")
                out[k] = out.get(k, 0) + int(v)
    return ", ".join(f"{k} {v}" for k, v in sorted(out.items())) or "none"


def ms(x):
    return f"{x * 1000:.0f}"


def run(args, only=(4, 5)):
    with Stack("cluster") as s:
        env = production_env(s, "cluster")
        fport = free_port()
        s.proc([sys.executable, HERE / "fault_upstream.py", fport], "fault")
        fault = f"http://127.0.0.1:{fport}"
        wait_http(fault + "/simple/")
        bench_url, _ = s.pypiserver(BENCH_PKGS)
        env["ORCHARD_UPSTREAMS_FILE"] = sources_file(s.work / "sources.yaml", ("up", fault + "/simple/"), ("bench", bench_url))
        replicas = [s.orchard(args.orchard, env) for _ in range(3)]
        pids = [r.pid for r in replicas]
        lb = load_balancer_class()(s.work, [r.port for r in replicas])
        s.defer(lb.stop)
        lb.start()

        if 4 in only:
            tag = uuid.uuid4().hex[:6]
            project, name = f"fanin-big-{tag}", f"fanin_big_{tag}-1.0-py3-none-any.whl"
            # the upstream computes (and memoises) the file while rendering the page
            assert http(f"{fault}/simple/{project}/", timeout=60)[0] == 200
            size = len(http(f"{fault}/files/{name}", timeout=60)[2])
            for r in replicas:  # every replica knows the page; the file is uncached everywhere
                assert http(f"{r.url}/sources/up/simple/{project}/")[0] == 200
            before = json.loads(http(f"{fault}/__count")[2]).get(f"/files/{name}", 0)
            url = f"{lb.url}/sources/up/files/{project}/{name}"
            runs = {}
            for phase in ("cold", "warm"):  # warm: the same, once stored, to tell fan-in from storage reads
                reset_peak(pids)
                results, wall = fetch_many([url] * FANIN, FANIN)
                rss = [peak_rss_mib([p]) for p in pids]
                gets = json.loads(http(f"{fault}/__count")[2]).get(f"/files/{name}", 0) - before
                runs[phase] = (*summary(results, size), wall, gets, " / ".join(f0(x) for x in rss))
            locks = fill_locks(replicas)
            direct, dwall = fetch_many([f"{fault}/files/{name}"] * FANIN, FANIN)
            runs["direct"] = (*summary(direct, size), dwall, FANIN, "")
            cold, warm, d = runs["cold"], runs["warm"], runs["direct"]

            def row(label, fn, fmt=ms):
                return [label, fmt(fn(cold)), fmt(fn(warm)), fmt(fn(d)), f"{fn(cold) / fn(d):.2f}"]

            table(f"4. Fan-in: {FANIN} concurrent requests (one connection each) for one uncached {size / 2**20:.0f} MiB "
                  "artifact, 3 replicas (production backends) behind nginx round robin",
                  ["measurement", "cold, through the replicas", "again, warm", "direct from the upstream",
                   "cold/direct"], [
                      ["complete 200 responses", *(f"{r[0]}/{r[1]}" for r in (cold, warm, d)), ""],
                      ["upstream GETs of the file (cumulative)", cold[5], warm[5], d[5], ""],
                      row("time to first byte, p50 ms", lambda r: percentile(r[3], 50)),
                      row("time to last byte, p50 ms", lambda r: percentile(r[2], 50)),
                      row("time to last byte, p99 ms", lambda r: percentile(r[2], 99)),
                      row("wall time, all requests, ms", lambda r: r[4]),
                      ["peak RSS per replica, MiB", cold[6], warm[6], "", ""],
                      ["cross-replica fill locks (all replicas)", locks, "", "", ""],
                  ])

        if 5 in only:
            size = (BENCH_PKGS / HUGE).stat().st_size
            project = HUGE.split("-")[0].replace("_", "-")
            r0 = replicas[0]
            assert http(f"{r0.url}/sources/bench/simple/{project}/", timeout=120)[0] == 200
            url = f"{r0.url}/sources/bench/files/{project}/{HUGE}"
            rows = []
            for phase in ("cold", "warm"):
                reset_peak(pids)
                results, wall = fetch_many([url] * STREAMS, STREAMS, timeout=900)
                rss = [peak_rss_mib([p]) for p in pids]
                n_ok, n, ok, _ = summary(results, size)
                rows.append([phase, f"{n_ok}/{n}", f"{percentile(ok, 50):.1f}", f"{percentile(ok, 99):.1f}",
                             f0(n_ok * size / 2**20 / wall), *[f0(x) for x in rss]])
            table(f"5. Streaming memory: {STREAMS} concurrent downloads of a {size / 2**20:.0f} MiB artifact through replica 1 "
                  "(production backends)",
                  ["phase", "complete", "time to last byte p50 s", "p99 s", "aggregate MiB/s",
                   "peak RSS replica 1 MiB", "replica 2", "replica 3"], rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--orchard", required=True)
    ap.add_argument("--seconds", type=int, default=10)  # unused: these scenarios are bounded by count
    ap.add_argument("--only", type=int, nargs="+", default=[4, 5])
    terminate_on_signals()
    a = ap.parse_args()
    run(a, a.only)
