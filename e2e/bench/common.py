"""What the `make bench` scenarios share: the load generators (wrk for a bounded
duration, curl for a bounded count), peak RSS, Markdown tables, and a Stack that
starts every process in its own session and stops them all at the end, even on
failure. The upstreams and references started here are only ever pointed at
loopback."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import harness  # noqa: E402
from harness import E2E, Orchard, Proc, free_port, http, wait_http  # noqa: E402,F401

VENV_BIN = E2E / "venv/bin"
BENCH_BIN = E2E / "bench-venv/bin"
BENCH_PKGS = E2E / "bench-pkgs"
PYPI_JSON = "application/vnd.pypi.simple.v1+json"
LOGS = Path.home() / ".cache/orchard/bench-logs"
SERVICES_DIR = Path(os.environ.get("ORCHARD_SERVICES_DIR", Path.home() / ".cache/orchard/services"))


# ---------------------------------------------------------------- load generators

def wrk(url, connections, seconds, headers=(), timeout=10):
    """A bounded wrk run: {rps, p50, p99 (ms), errors, mib_s}."""
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", f"{timeout}s"]
    for h in headers:
        args += ["-H", h]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True,
                         timeout=seconds + timeout + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\b", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    mib_s = float(m.group(1)) * {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}[m.group(2)] if m else 0.0
    return {"rps": rps, "p50": lat(50), "p99": lat(99), "errors": errors, "mib_s": mib_s}


def fetch_many(urls, parallel, timeout=300):
    """Fetch every URL at once (curl --parallel, one connection each) and return, per
    transfer, (HTTP status, bytes, seconds to the last byte, seconds to the first
    byte); plus the wall time."""
    config = "".join(f'url = "{u}"\noutput = "/dev/null"\n' for u in urls)
    fmt = r"%{http_code} %{size_download} %{time_total} %{time_starttransfer}\n"
    t = time.perf_counter()
    r = subprocess.run(["curl", "-sS", "--parallel", "--parallel-immediate", "--parallel-max", str(parallel),
                        "--max-time", str(timeout), "-w", fmt, "-K", "-"],
                       input=config, capture_output=True, text=True, timeout=timeout + 60)
    wall = time.perf_counter() - t
    results = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            results.append((int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3])))
    return results, wall


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))
    return values[k]


# ---------------------------------------------------------------- memory

def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def reset_peak(pids):
    """Reset VmHWM (peak RSS) to the current RSS: `echo 5 > /proc/PID/clear_refs`."""
    for root in pids:
        for p in tree(root):
            try:
                with open(f"/proc/{p}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass


def current_rss_mib(pid):
    """VmRSS (MiB) of one process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            m = re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)
        return int(m.group(1)) / 1024 if m else 0
    except OSError:
        return 0


def peak_rss_mib(pids):
    """Sum of VmHWM (MiB) over the processes and their descendants."""
    total = 0
    for root in pids:
        for p in tree(root):
            try:
                with open(f"/proc/{p}/status") as f:
                    m = re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M)
                total += int(m.group(1)) if m else 0
            except OSError:
                pass
    return total / 1024


# ---------------------------------------------------------------- tables

def table(title, columns, rows):
    """Print a Markdown table (right-aligned numbers) under a ### title."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if i == 0 or not _numeric_col(rows, i) else "---:" for i in range(len(columns))) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


def _numeric_col(rows, i):
    return any(re.fullmatch(r"[\d.,×x% ()/-]+(MiB|ms|s)?", str(r[i])) for r in rows if i < len(r))


def f0(x):
    return f"{x:.0f}"


def f2(x):
    return f"{x:.2f}"


def ratio(a, b, digits=2):
    return f"{a / b:.{digits}f}" if b else "n/a"


SERVER_COLUMNS = ["req/s", "p50 ms", "p99 ms", "errors", "peak RSS MiB"]


def server_cells(m):
    return [f0(m["rps"]), f2(m["p50"]), f2(m["p99"]), m["errors"], f0(m["rss"])]


def measure(url, connections, seconds, pids, headers=(), timeout=10):
    """wrk against url, with the peak RSS of pids (and their children) during the run."""
    reset_peak(pids)
    m = wrk(url, connections, seconds, headers, timeout)
    m["rss"] = peak_rss_mib(pids)
    return m


# ---------------------------------------------------------------- processes

class Stack:
    """Processes and clean-ups of one scenario; `with Stack() as s:` stops them all."""

    def __init__(self, name):
        self.work = Path(tempfile.mkdtemp(prefix=f"orchard-bench-{name}-"))
        self.work.chmod(0o755)  # nginx workers run as an unprivileged user
        self.cleanups = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(keep_logs=exc_type is not None)
        return False

    def defer(self, fn, *args):
        self.cleanups.append((fn, args))

    def close(self, keep_logs=False):
        while self.cleanups:
            fn, args = self.cleanups.pop()
            try:
                fn(*args)
            except Exception as e:  # keep stopping the rest
                print(f"cleanup {getattr(fn, '__name__', fn)}: {e}", file=sys.stderr)
        if keep_logs:  # a failed scenario: keep what its processes said
            dest = LOGS / self.work.name
            for log in self.work.rglob("*.log"):
                target = dest / log.relative_to(self.work)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, target)
            print(f"logs of the failed scenario: {dest}", file=sys.stderr)
        shutil.rmtree(self.work, ignore_errors=True)

    def proc(self, args, name, env=None, cwd=None):
        p = Proc([str(a) for a in args], self.work / f"{name}.log", env=env, cwd=cwd).start()
        self.defer(p.stop)
        return p

    def orchard(self, binary, env):
        harness.ORCHARD_BIN = str(binary)
        full = {"RUST_LOG": "warn", "ORCHARD_LOG_FORMAT": "text"}
        full.update(env)
        o = Orchard(self.work, full)
        self.defer(o.stop)
        o.start()
        o.pid = o.proc.p.pid
        return o

    def pypiserver(self, *dirs):
        port = free_port()
        p = self.proc([VENV_BIN / "pypi-server", "run", "-i", "127.0.0.1", "-p", port, "-a", ".", "-P", ".",
                       "--disable-fallback", *dirs], f"pypiserver-{port}")
        url = f"http://127.0.0.1:{port}/simple/"
        wait_http(url)
        return url, p

    def nginx(self, name, server_block, workers="auto", http_extra=""):
        """nginx with one server block (the listen line is added) and optional http-level
        directives; returns (base URL, pid of the master)."""
        port = free_port()
        d = self.work / name
        d.mkdir()
        (d / "nginx.conf").write_text(f"""
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log;
daemon off;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  types {{ application/zip whl; application/json json; text/html html; }}
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy_temp;
  fastcgi_temp_path {d}/fastcgi_temp;
  uwsgi_temp_path {d}/uwsgi_temp;
  scgi_temp_path {d}/scgi_temp;
  {http_extra}
  server {{
    listen 127.0.0.1:{port};
{server_block}
  }}
}}
""")
        p = self.proc(["nginx", "-c", d / "nginx.conf", "-p", d], name)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                http(base + "/", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        return base, p.p.pid

    def devpi(self, upstream_simple_url):
        """devpi-server with one mirror index, root/up, of the given upstream (never the
        public index: the server is initialised with --no-root-pypi). Returns (index URL, pid)."""
        server_dir, client_dir = self.work / "devpi-server", self.work / "devpi-client"
        subprocess.run([BENCH_BIN / "devpi-init", "--serverdir", server_dir, "--no-root-pypi", "--root-passwd", ""],
                       check=True, capture_output=True)
        # warnings only, like every other server here (its default logs each request)
        logger_cfg = self.work / "devpi-logging.json"
        logger_cfg.write_text(json.dumps({
            "version": 1, "handlers": {"console": {"class": "logging.StreamHandler", "level": "WARNING"}},
            "root": {"handlers": ["console"], "level": "WARNING"}}))
        port = free_port()
        p = self.proc([BENCH_BIN / "devpi-server", "--serverdir", server_dir, "--host", "127.0.0.1", "--port", port,
                       "--mirror-cache-expiry", "3600", "--logger-cfg", logger_cfg], "devpi-server")
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/+api")
        devpi = [BENCH_BIN / "devpi", "--clientdir", client_dir]
        for cmd in (["use", base], ["login", "root", "--password", ""],
                    ["index", "-c", "root/up", "type=mirror", f"mirror_url={upstream_simple_url}"]):
            subprocess.run(devpi + cmd, check=True, capture_output=True)
        return f"{base}/root/up/+simple/", p.p.pid

    def proxpi(self, upstream_simple_url, threads=8):
        """proxpi behind gunicorn (one process, as its docs ask; gthread workers)."""
        port = free_port()
        env = dict(os.environ, PROXPI_INDEX_URL=upstream_simple_url, PROXPI_INDEX_TTL="3600",
                   PROXPI_CACHE_DIR=str(self.work / "proxpi-cache"), PROXPI_LOGGING_LEVEL="WARNING")
        p = self.proc([BENCH_BIN / "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
                       "--threads", threads, "--log-level", "warning", "proxpi.server:app"], "proxpi", env=env)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/health")
        return f"{base}/index/", p.p.pid


def version_of(package, venv_bin=BENCH_BIN):
    r = subprocess.run([venv_bin / "python", "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


def load_services_env():
    """The ORCHARD_TEST_* variables from `make services-up`, if not already set."""
    env_sh = SERVICES_DIR / "env.sh"
    if "ORCHARD_TEST_DATABASE_URL" in os.environ or not env_sh.exists():
        return
    for line in env_sh.read_text().splitlines():
        m = re.match(r"export (\w+)=(.*)$", line)
        if m:
            os.environ.setdefault(m.group(1), m.group(2).strip("'\""))


def production_env(stack, name):
    """Postgres (a fresh database), Redis Cluster (a fresh namespace) and S3 (a fresh
    prefix); the database and the stored objects are dropped at the end."""
    load_services_env()
    prefix = f"bench-{name}-{uuid.uuid4().hex[:8]}"
    env = harness.production_env(prefix)
    db = env["ORCHARD_DATABASE_URL"]
    admin = os.environ["ORCHARD_TEST_DATABASE_URL"]
    stack.defer(lambda: subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {db.rsplit('/', 1)[1]} WITH (FORCE)"],
                                       capture_output=True))
    stack.defer(shutil.rmtree, SERVICES_DIR / "s3" / env["ORCHARD_S3_BUCKET"] / prefix, True)
    return env


def sources_file(path, *upstreams):
    return harness.sources_file(path, *upstreams)


def terminate_on_signals():
    """SIGTERM/SIGHUP raise SystemExit so that every `finally` (and Stack) runs."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)
