"""Fixtures of the PyPI end-to-end suite: real upstreams (pypiserver), a fault
upstream, and helpers for real pip and uv runs. The shared harness is e2e/harness.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import *  # noqa: E402,F401,F403
from harness import E2E, FaultUpstream, Proc, free_port, http, json, tmp, wait_http  # noqa: E402,F401

HERE = Path(__file__).resolve().parent
VENV_BIN = E2E / "venv/bin"
# The set every install test asks for: >20 packages, an sdist (docopt), one project
# with many versions (six), one only the second upstream has (colorama).
REQUIREMENTS = ["requests", "flask", "pytest", "rich", "attrs", "six==1.16.0", "docopt==0.6.2", "colorama"]
IMPORTS = "import requests, flask, pytest, rich, attrs, six, docopt, colorama"


class Upstream:
    def __init__(self, name, directory, tmp):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}/simple/"
        self.proc = Proc([str(VENV_BIN / "pypi-server"), "run", "-i", "127.0.0.1", "-p", str(self.port),
                          "-a", ".", "-P", ".", "--disable-fallback", str(directory)], tmp / f"pypiserver-{name}.log")

    def start(self):
        self.proc.start()
        wait_http(self.url)
        return self

    def stop(self):
        self.proc.stop()


def venv(path):
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


def pip_install(index, target, packages=REQUIREMENTS):
    venv(target)
    r = subprocess.run([str(target / "bin/pip"), "install", "--no-cache-dir", "--disable-pip-version-check",
                        "--index-url", index, *packages], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(target / "bin/python"), "-c", IMPORTS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return target


def uv_install(index, target, packages=REQUIREMENTS):
    subprocess.run([str(VENV_BIN / "uv"), "venv", "-q", str(target)], check=True)
    env = dict(os.environ, VIRTUAL_ENV=str(target))
    r = subprocess.run([str(VENV_BIN / "uv"), "pip", "install", "--no-cache", "--index-url", index, *packages],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(target / "bin/python"), "-c", IMPORTS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return target


@pytest.fixture(scope="session")
def upstream_a(tmp):
    u = Upstream("a", E2E / "pkgs-a", tmp).start()
    yield u
    u.stop()


@pytest.fixture(scope="session")
def upstream_b(tmp):
    u = Upstream("b", E2E / "pkgs-b", tmp).start()
    yield u
    u.stop()


@pytest.fixture(scope="session")
def fault(tmp):
    f = FaultUpstream(tmp).start()
    yield f
    f.stop()


