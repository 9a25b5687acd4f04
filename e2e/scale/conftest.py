"""Fixtures of the scale-out suite: three `orchard serve` replicas sharing Postgres,
the Redis Cluster and S3, behind nginx (round robin), in front of the counting fault
upstream of the PyPI suite."""
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "pypi"))
from harness import *  # noqa: E402,F401,F403
from harness import FaultUpstream  # noqa: E402
from harness import Orchard, Proc, free_port, http, production_env, sources_file, tmp, wait_http  # noqa: E402,F401
from fault_server import content  # noqa: E402,F401


class LoadBalancer:
    def __init__(self, tmp, backends):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        d = tmp / f"lb-{self.port}"
        d.mkdir()
        servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in backends)
        (d / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 2048; }}
http {{
  access_log off;
  upstream orchard {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://orchard;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 120s;
    }}
  }}
}}
""")
        self.proc = Proc(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)], d / "nginx.out")

    def start(self):
        self.proc.start()
        wait_http(f"{self.url}/")
        return self

    def stop(self):
        self.proc.stop()


@pytest.fixture(scope="module")
def fault(tmp):
    f = FaultUpstream(tmp, "/simple/").start()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def cluster(tmp, fault):
    env = production_env(f"e2e-scale-{tmp.name}")
    env["ORCHARD_UPSTREAMS_FILE"] = sources_file(tmp / "scale-sources.yaml", ("up", fault.url))
    env["ORCHARD_FILL_LOCK_TTL"] = "3"
    replicas = [Orchard(tmp, env).start() for _ in range(3)]
    lb = LoadBalancer(tmp, [r.port for r in replicas]).start()
    yield replicas, lb
    lb.stop()
    for r in replicas:
        r.stop()
