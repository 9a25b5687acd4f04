"""`make bench`: every scenario, Orchard next to its reference in the same run, on
loopback, bounded in time (wrk --seconds) or in count (curl, pip), printed as Markdown.

  1. warm artifact hit, 1.2 and 20 MiB, 64 and 256 connections  vs nginx proxy_cache   artifacts.py
  2. warm PyPI project page, JSON and HTML                         vs nginx, devpi, proxpi pages.py
  3. warm npm abbreviated packument (600 versions), tarball        vs Verdaccio          npm_bench.py
  4. cold fan-in, 200 requests, 3 replicas, production backends   vs direct upstream    cluster.py
  5. streaming memory, 64 x 200 MiB through one replica            (peak RSS < 150 MiB)  cluster.py
  6. pip install of the e2e set                                    vs devpi, local dir   pip_time.py
  7. dependencies: store 50 in one statement, cached resolution    vs per-row, nginx     deps_bench.py

Each scenario stops everything it started when it ends, fails or is interrupted; a
failing scenario is reported and the others still run (the exit status is then 1).
Needs `make e2e-prepare`, `bash e2e/bench/prepare.sh` and, for 4 and 5, `make services-up`.
"""
import argparse
import os
import platform
import subprocess
import sys
import time
import traceback

from common import terminate_on_signals, version_of

import artifacts
import cluster
import deps_bench
import npm_bench
import pages
import pip_time


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}; "
            f"nginx {nginx}, wrk {wrk}, devpi-server {version_of('devpi-server')}, proxpi {version_of('proxpi')}")


def loadavg():
    """The 1-minute load average: other work on the machine shows here."""
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orchard", required=True, help="path of a release orchard binary")
    ap.add_argument("--seconds", type=int, default=10, help="duration of each wrk run (scenarios 1-3)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections for pages and npm")
    ap.add_argument("--pip-runs", type=int, default=3, help="warm pip installs per way (scenario 6)")
    ap.add_argument("--only", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7], help="scenario numbers")
    artifacts.add_args(ap)
    args = ap.parse_args()
    args.runs = args.pip_runs
    terminate_on_signals()

    print(f"## `make bench` — {time.strftime('%Y-%m-%d %H:%M')}\n")
    print(f"- machine: {machine()}")
    print(f"- wrk: 2 threads, {args.seconds} s per run; Orchard: {args.orchard}; load average before: {loadavg()}")
    sys.stdout.flush()
    steps = [
        ([1], lambda: artifacts.run(args)),
        ([2], lambda: pages.run(args)),
        ([3], lambda: npm_bench.run(args)),
        ([4, 5], lambda: cluster.run(args, [n for n in (4, 5) if n in args.only])),
        ([6], lambda: pip_time.run(args)),
        ([7], lambda: deps_bench.run(args)),
    ]
    failed = []
    start = time.time()
    for numbers, step in steps:
        if not any(n in args.only for n in numbers):
            continue
        t = time.time()
        try:
            step()
        except Exception:
            failed.append(numbers)
            print(f"\n**Scenario {'/'.join(map(str, numbers))} failed:**\n\n```\n{traceback.format_exc()}```", flush=True)
        print(f"\n_(scenario {'/'.join(map(str, numbers))}: {time.time() - t:.0f} s)_", flush=True)
    print(f"\nTotal: {time.time() - start:.0f} s" + (f"; failed: {failed}" if failed else ""), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
