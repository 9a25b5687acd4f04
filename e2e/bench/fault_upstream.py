"""The counting fault upstream of the PyPI suite (e2e/pypi/fault_server.py), made fit
to be the reference of 200 concurrent direct fetches: its deterministic file contents
are memoised (a request costs a copy, not 160,000 SHA-256 rounds in Python), and it
listens with a backlog of 1024 instead of socketserver's 5 (which drops SYNs and makes
clients retry after 1, 3, 7... s). Same routes, same counts (GET /__count)."""
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pypi"))
import fault_server  # noqa: E402

fault_server.content = functools.lru_cache(maxsize=32)(fault_server.content)
fault_server.ThreadingHTTPServer.request_queue_size = 1024

if __name__ == "__main__":
    fault_server.main()
