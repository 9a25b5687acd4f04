"""Fixtures of the npm end-to-end suite: two real Verdaccio registries filled by
prepare.sh (A: a real dependency tree of 37 packages; B: an older `ms` and `@types/ms`),
the fault upstream of the PyPI suite (it also speaks a little npm), and helpers for real
npm and pnpm runs. The shared harness is e2e/harness.py."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import *  # noqa: E402,F401,F403
from harness import FaultUpstream  # noqa: E402
from harness import E2E, Proc, free_port, tmp, wait_http  # noqa: E402,F401

PNPM = E2E / "npm-tools/node_modules/.bin/pnpm"
# What the project's code must be able to load after an install.
CHECK = ("require('chalk'); require('debug'); require('semver'); require('yargs'); require('commander');"
         "require('@babel/code-frame'); require('@isaacs/cliui'); require('@types/ms/package.json');"
         "if (require('ms/package.json').version !== '2.1.3') throw new Error('ms from the wrong source');")


class Verdaccio:
    def __init__(self, which):
        self.which, self.port = which, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"

    def start(self):
        subprocess.run(["bash", str(HERE / "verdaccio.sh"), "start", self.which, str(self.port)], check=True)
        return self

    def stop(self):
        subprocess.run(["bash", str(HERE / "verdaccio.sh"), "stop", self.which], check=True)


def project(tmp, name, registry, lockfile_from=None):
    """A fresh copy of the test project, with an .npmrc pointing at `registry`."""
    d = tmp / name
    d.mkdir()
    shutil.copy(HERE / "project/package.json", d / "package.json")
    if lockfile_from:
        shutil.copy(lockfile_from / "package-lock.json", d / "package-lock.json")
    (d / ".npmrc").write_text(f"registry={registry}\n")
    return d


def npm(args, cwd, cache):
    r = subprocess.run(["npm", *args, "--cache", str(cache), "--no-audit", "--no-fund", "--no-update-notifier",
                        "--omit-lockfile-registry-resolved=false"],
                       cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def check_project(d):
    r = subprocess.run(["node", "-e", CHECK], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def verdaccio_a():
    v = Verdaccio("a").start()
    yield v
    v.stop()


@pytest.fixture(scope="session")
def verdaccio_b():
    v = Verdaccio("b").start()
    yield v
    v.stop()


@pytest.fixture(scope="session")
def fault(tmp):
    f = FaultUpstream(tmp, "/npm/").start()
    yield f
    f.stop()
