"""Scenario 6 — real-client time: `pip install --no-cache-dir` of the e2e package set
(REQUIREMENTS of e2e/pypi/conftest.py) into a fresh venv

  - through Orchard (embedded default), warm
  - through devpi-server (mirror index root/up), warm
  - from the local package directories, `--no-index --find-links` (pkgs-a, pkgs-b)

Orchard and devpi mirror the SAME pypiserver over those directories (pkgs-b has
colorama, which the set asks for). Each way is run once to warm it (its time is shown
as "first run": a cold fill for the proxies), then `--runs` more times in fresh venvs,
the ways taking turns; the median of those is the figure. pip gets no configuration but the command line
(PIP_CONFIG_FILE=/dev/null, no PIP_* variables), so nothing else is looked at.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import E2E, Stack, http, table, terminate_on_signals, version_of

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pypi"))
import conftest as pypi_suite  # noqa: E402

REQUIREMENTS = pypi_suite.REQUIREMENTS
IMPORTS = pypi_suite.IMPORTS


def pip_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def timed_install(work, label, n, pip_args):
    target = work / f"venv-{label}-{n}"
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    t = time.perf_counter()
    r = subprocess.run([str(target / "bin/pip"), "install", "--no-cache-dir", *pip_args, *REQUIREMENTS],
                       capture_output=True, text=True, env=pip_env(), timeout=600)
    dt = time.perf_counter() - t
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([str(target / "bin/python"), "-c", IMPORTS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    subprocess.run(["rm", "-rf", str(target)])
    return dt


def run(args):
    with Stack("pip") as s:
        up_url, _ = s.pypiserver(E2E / "pkgs-a", E2E / "pkgs-b")
        o = s.orchard(args.orchard, {"ORCHARD_UPSTREAM_PYPI": up_url, "ORCHARD_CACHE_TTL_INDEX": "3600"})
        devpi_index, _ = s.devpi(up_url)
        assert http(devpi_index)[0] == 200
        ways = [
            ("Orchard", ["--index-url", f"{o.url}/pypi/simple/"]),
            ("devpi-server " + version_of("devpi-server"), ["--index-url", devpi_index]),
            ("local directory (--no-index --find-links)",
             ["--no-index", "--find-links", str(E2E / "pkgs-a"), "--find-links", str(E2E / "pkgs-b")]),
        ]
        # warm every way once, then alternate between them so that drift hits all alike
        first = {label: timed_install(s.work, label.split()[0], 0, pip_args) for label, pip_args in ways}
        runs = {label: [] for label, _ in ways}
        for i in range(args.runs):
            for label, pip_args in ways:
                runs[label].append(timed_install(s.work, label.split()[0], i + 1, pip_args))
        times = {label: (first[label], statistics.median(runs[label]), runs[label]) for label, _ in ways}
        local = times[ways[-1][0]][1]
        orchard = times["Orchard"][1]
        rows = [[label, f"{f:.2f}", f"{med:.2f}", ", ".join(f"{x:.2f}" for x in rs),
                 f"{med / local:.2f}", f"{orchard / med:.2f}"]
                for label, (f, med, rs) in times.items()]
        table(f"6. `pip install --no-cache-dir` of the e2e set ({len(REQUIREMENTS)} requirements, "
              f"{args.runs} warm runs each, fresh venvs)",
              ["pip installs from", "first run s", "warm median s", "warm runs s", "this/local dir",
               "Orchard/this"], rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--orchard", required=True)
    ap.add_argument("--runs", type=int, default=3)
    terminate_on_signals()
    run(ap.parse_args())
