"""Archive bombs: an sdist whose tar carries a 1 GiB GNU long-name header (1 MB on the
wire), a wheel whose METADATA inflates to 1 GiB, and a wheel whose zip central directory
lists 120,000 entries (refused from its end record before a zip library reads it). The artifact is still served with
its bytes verified; dependency and metadata extraction refuse it with a logged reason;
Orchard's peak memory stays under RSS_BOUND (the review measured 2.2 GB before the bounds);
other requests keep being served."""
import hashlib
import sys
import time
from pathlib import Path

from conftest import Orchard, http, vm_hwm_mb
from test_ssrf import sources

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_server  # noqa: E402

RSS_BOUND_MB = 256



def test_archive_bombs_are_served_but_not_extracted(tmp, hostile, bystander):
    o = Orchard(tmp, sources(tmp, "bombs", hostile, bystander)).start()
    try:
        for project, file, refusal in [
            ("bomb-tar", "bomb_tar-1.0.tar.gz", "tar L header of 1073741824 bytes is over the 65536-byte limit"),
            ("bomb-zip", "bomb_zip-1.0-py3-none-any.whl", "too large"),
            ("bomb-cd", "bomb_cd-1.0-py3-none-any.whl", "zip central directory lists 120001 entries, over the 100000-entry limit"),
        ]:
            assert http(f"{o.url}/pypi/simple/{project}/")[0] == 200
            status, _, body = http(f"{o.url}/sources/evil/files/{project}/{file}")
            assert status == 200, body[:300]
            assert hashlib.sha256(body).digest() == hashlib.sha256(hostile_server.content(file)).digest()
            deadline = time.time() + 30
            while time.time() < deadline and not any(
                    file in line and "dependencies not extracted" in line for line in o.log.read_text().splitlines()):
                assert http(f"{o.admin}/healthz")[0] == 200
                time.sleep(0.2)
            lines = [l for l in o.log.read_text().splitlines() if file in l and "dependencies not extracted" in l]
            assert lines and refusal in lines[0], lines
            # asking for its dependencies answers the refusal, remembered instead of walked again
            sha = hashlib.sha256(body).hexdigest()
            for _ in range(2):
                status, _, answer = http(f"{o.url}/api/v1/artifacts/{sha}/dependencies")
                assert status == 502 and refusal in answer.decode(), (status, answer[:300])
                assert "remembered from an earlier attempt" in answer.decode(), answer[:300]
            # the same bytes again: a hit, and another project is still served
            status, h, again = http(f"{o.url}/sources/evil/files/{project}/{file}")
            assert (status, h["x-orchard-cache"], again) == (200, "hit", body)
            assert http(f"{o.url}/pypi/simple/local-ok/")[0] == 200
        peak = vm_hwm_mb(o)
        assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"
        print(f"archive bombs: peak RSS {peak:.0f} MB (bound {RSS_BOUND_MB} MB)")
    finally:
        o.stop()
