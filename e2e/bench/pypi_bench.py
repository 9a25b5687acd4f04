"""`make bench` (first version): warm-cache PyPI figures for Orchard next to nginx
serving the same bytes as static files, in the same run, on loopback.

Scenarios (64 connections each, wrk, bounded duration):
  - project page as PEP 691 JSON
  - project page as PEP 503 HTML
  - a ~1 MiB wheel

Prints a Markdown table: requests/s, p50, p99, errors, and Orchard/nginx ratios.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pypi"))
from conftest import E2E, VENV_BIN, free_port, http, wait_http  # noqa: E402

JSON = "application/vnd.pypi.simple.v1+json"


def wrk(url, connections, seconds, headers=()):
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "errors": errors}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--orchard", required=True, help="path of a release orchard binary")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="orchard-bench-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user
    procs = []
    try:
        up_port = free_port()
        procs.append(subprocess.Popen([str(VENV_BIN / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(up_port),
                                       "-a", ".", "-P", ".", "--disable-fallback", str(E2E / "pkgs-a")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_http(f"http://127.0.0.1:{up_port}/simple/")
        port, admin = free_port(), free_port()
        env = {"PATH": os.environ["PATH"], "ORCHARD_UPSTREAM_PYPI": f"http://127.0.0.1:{up_port}/simple/",
               "ORCHARD_LISTEN_ADDR": f"127.0.0.1:{port}", "ORCHARD_ADMIN_ADDR": f"127.0.0.1:{admin}",
               "ORCHARD_CACHE_TTL_INDEX": "3600", "RUST_LOG": "warn"}
        procs.append(subprocess.Popen([args.orchard, "serve"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                                      stderr=open(work / "orchard.log", "w"), start_new_session=True))
        wait_http(f"http://127.0.0.1:{admin}/readyz")
        base = f"http://127.0.0.1:{port}"

        wheel = next(p.name for p in (E2E / "pkgs-a").iterdir() if p.name.startswith("pygments-") and p.name.endswith(".whl"))
        page = "/pypi/simple/pygments/"
        file_path = f"/sources/pypi/files/pygments/{wheel}"
        # warm Orchard and keep its answers for nginx to serve
        static = work / "static"
        static.mkdir()
        for name, path, headers in [("page.json", page, {"Accept": JSON}), ("page.html", page, {"Accept": "text/html"}),
                                    (wheel, file_path, {})]:
            status, _, body = http(base + path, headers=headers)
            assert status == 200, (path, status)
            time.sleep(0.2)
            status, h, body = http(base + path, headers=headers)
            assert h.get("x-orchard-cache") == "hit", (path, h)
            (static / name).write_bytes(body)

        ng_port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(f"""
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types {{ application/zip whl; application/json json; text/html html; }}
  server {{
    listen 127.0.0.1:{ng_port};
    root {static};
  }}
}}
""")
        procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ng = f"http://127.0.0.1:{ng_port}"
        wait_http(f"{ng}/page.json")

        size = (static / wheel).stat().st_size
        scenarios = [
            ("project page, JSON", base + page, [f"Accept: {JSON}"], f"{ng}/page.json"),
            ("project page, HTML", base + page, ["Accept: text/html"], f"{ng}/page.html"),
            (f"wheel {size / 1048576:.2f} MiB", base + file_path, [], f"{ng}/{wheel}"),
        ]
        c, s = args.connections, args.seconds
        print(f"| scenario ({c} connections, {s} s) | Orchard req/s | p50 ms | p99 ms | errors | nginx req/s | p50 ms | p99 ms | req/s ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, url, headers, ref in scenarios:
            o = wrk(url, c, s, headers)
            n = wrk(ref, c, s)
            print(f"| {label} | {o['rps']:.0f} | {o['p50']:.2f} | {o['p99']:.2f} | {o['errors']} | "
                  f"{n['rps']:.0f} | {n['p50']:.2f} | {n['p99']:.2f} | {o['rps'] / n['rps']:.2f} |", flush=True)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(10)
            except Exception:
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
