"""The counting fault upstream of the PyPI suite (e2e/pypi/fault_server.py), with its
deterministic file contents memoised: the bench compares Orchard with direct fetches
from this upstream, which should then cost a copy, not 160,000 SHA-256 rounds per
5 MiB request in Python. Same routes, same counts (GET /__count)."""
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pypi"))
import fault_server  # noqa: E402

fault_server.content = functools.lru_cache(maxsize=32)(fault_server.content)

if __name__ == "__main__":
    fault_server.main()
