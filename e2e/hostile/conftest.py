"""Fixtures of the hostile-input suite: a hostile upstream (hostile_server.py) that
requires a bearer token and whose index points elsewhere, and a bystander listener that
records whatever reaches it. The shared harness is e2e/harness.py."""
import json
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from harness import *  # noqa: E402,F401,F403
from harness import Orchard, Proc, free_port, http, production_env, tmp, wait_http  # noqa: E402,F401

TOKEN = "hostile-suite-secret-token"


def vm_hwm_mb(orchard):
    """Peak resident memory of an Orchard process so far (VmHWM), in MiB."""
    status = Path(f"/proc/{orchard.proc.p.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


class Listener:
    def __init__(self, tmp, role, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc([sys.executable, str(HERE / "hostile_server.py"), role, str(self.port), *map(str, args)],
                         tmp / f"hostile-{role}-{self.port}.log")

    def start(self):
        self.proc.start()
        wait_http(f"{self.url}/__seen")
        return self

    def stop(self):
        self.proc.stop()

    def seen(self):
        """[[path, authorization header or None], ...] in arrival order."""
        return json.loads(http(f"{self.url}/__seen")[2])


@pytest.fixture(scope="session")
def bystander(tmp):
    b = Listener(tmp, "bystander").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def hostile(tmp, bystander):
    u = Listener(tmp, "upstream", bystander.port, TOKEN).start()
    yield u
    u.stop()
