"""Fixtures of the Maven end-to-end suite: two real Maven repository layouts filled by
prepare.sh and served by nginx (A: everything `mvn package` of e2e/maven/project needs,
parents and a BOM included; B: a different slf4j-api jar and commons-io), the fault
upstream (it also serves a Maven layout under /m2/), and real `mvn` builds."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import *  # noqa: E402,F401,F403
from harness import FaultUpstream  # noqa: E402
from harness import E2E, Proc, free_port, http, tmp, wait_http  # noqa: E402,F401


class Nginx:
    def __init__(self, which):
        self.which, self.port = which, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = E2E / f"maven-nginx-{which}/access.log"

    def start(self):
        subprocess.run(["bash", str(HERE / "nginx.sh"), "start", self.which, str(self.port)], check=True)
        return self

    def stop(self):
        subprocess.run(["bash", str(HERE / "nginx.sh"), "stop", self.which], check=True)

    def requests(self, uri_part=""):
        """Lines of the access log ("METHOD URI STATUS") containing uri_part."""
        if not self.log.exists():
            return []
        return [l for l in self.log.read_text().splitlines() if uri_part in l]


def settings(path, mirror_url):
    path.write_text(f"""<settings>
  <mirrors>
    <mirror><id>orchard</id><mirrorOf>*</mirrorOf><url>{mirror_url}</url></mirror>
  </mirrors>
</settings>
""")
    return path


def mvn_package(tmp, name, mirror_url, project="project", jar="maven-e2e-1.0.0.jar"):
    """`mvn -B package` of an e2e project (./project or ./spring-boot) with an empty
    local repository."""
    work = tmp / name
    shutil.copytree(HERE / project, work, ignore=shutil.ignore_patterns("target"))
    s = settings(tmp / f"{name}-settings.xml", mirror_url)
    r = subprocess.run(["mvn", "-B", "-s", str(s), f"-Dmaven.repo.local={tmp / (name + '-m2')}", "package"],
                       cwd=work, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and "BUILD SUCCESS" in r.stdout, r.stdout[-4000:]
    assert "Tests run: " in r.stdout and ", Failures: 0, Errors: 0" in r.stdout
    assert (work / "target" / jar).exists()
    return r.stdout


@pytest.fixture(scope="session")
def upstream_a():
    n = Nginx("a").start()
    yield n
    n.stop()


@pytest.fixture(scope="session")
def upstream_b():
    n = Nginx("b").start()
    yield n
    n.stop()


@pytest.fixture(scope="session")
def fault(tmp):
    f = FaultUpstream(tmp, "/m2/").start()
    yield f
    f.stop()
