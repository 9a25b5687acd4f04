"""Fixtures of the dependencies suite: the real upstreams of the PyPI, npm and Maven
suites (pypiserver A and B, Verdaccio A, nginx serving Maven layout A) behind one
embedded `orchard serve` with an admin token."""
import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import *  # noqa: E402,F401,F403
from harness import E2E, FaultUpstream, Orchard, http, tmp  # noqa: E402,F401

TOKEN = "e2e-admin-token-5b1f"


def suite(name):
    """Another suite's conftest, loaded under its own name (for its upstream classes)."""
    spec = importlib.util.spec_from_file_location(f"{name}_suite", HERE.parent / name / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PYPI, NPM, MAVEN = suite("pypi"), suite("npm"), suite("maven")


@pytest.fixture(scope="session")
def upstreams(tmp):
    ups = {
        "pypi_a": PYPI.Upstream("deps-a", E2E / "pkgs-a", tmp).start(),
        "pypi_b": PYPI.Upstream("deps-b", E2E / "pkgs-b", tmp).start(),
        "npm_a": NPM.Verdaccio("a").start(),
        "maven_a": MAVEN.Nginx("a").start(),
        "meta": FaultUpstream(tmp).start(),
    }
    yield ups
    for u in ups.values():
        u.stop()


def sources(path, ups):
    path.write_text(f"""- {{name: pypi-a, protocol: pypi, url: "{ups['pypi_a'].url}", priority: 10}}
- {{name: pypi-b, protocol: pypi, url: "{ups['pypi_b'].url}", priority: 20}}
- {{name: npm-a, protocol: npm, url: "{ups['npm_a'].url}", priority: 10}}
- {{name: maven-a, protocol: maven, url: "{ups['maven_a'].url}", priority: 10}}
- {{name: pypi-meta, protocol: pypi, url: "{ups['meta'].url}", priority: 30, include: ['meta-*']}}
""")
    return str(path)


@pytest.fixture(scope="session")
def orchard(tmp, upstreams):
    o = Orchard(tmp, {"ORCHARD_UPSTREAMS_FILE": sources(tmp / "deps-sources.yaml", upstreams),
                      "ORCHARD_ADMIN_TOKEN": TOKEN}).start()
    yield o
    o.stop()
