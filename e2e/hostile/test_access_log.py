"""The access log: one JSON line per package request (target `orchard::access`) with
method, path, route, status, cache outcome, source, bytes, completeness, duration and
peer — never the query string (it may carry a token) and never a credential."""
import json
import time

from conftest import TOKEN, Orchard, http
from test_ssrf import sources


def access_lines(o):
    out = []
    for line in o.log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("target") == "orchard::access":
            out.append(entry["fields"])
    return out


def test_every_request_gets_one_line_without_query_or_secrets(tmp, hostile, bystander):
    o = Orchard(tmp, sources(tmp, "access", hostile, bystander)).start()
    file = "/sources/evil/files/local-log/local_log-1.0-py3-none-any.whl"
    try:
        assert http(f"{o.url}/pypi/simple/local-log/")[0] == 200
        miss = http(f"{o.url}{file}")
        hit = http(f"{o.url}{file}?token=s3cret-in-query")
        assert (miss[0], hit[0], hit[1]["x-orchard-cache"]) == (200, 200, "hit")
        assert http(f"{o.url}/pypi/simple/Bad%20Name/")[0] == 400
        time.sleep(0.3)  # lines are written when the bodies end
        lines = access_lines(o)
        by_path = {}
        for f in lines:
            by_path.setdefault(f["path"], []).append(f)
        files = by_path[file]
        assert [(f["status"], f["cache"], f["source"], f["complete"]) for f in files] == [
            (200, "miss", "evil", True), (200, "hit", "evil", True)], files
        assert all(f["bytes"] == len(miss[2]) and f["method"] == "GET" for f in files)
        assert files[0]["route"] == "/sources/{source}/files/{project}/{filename}", files[0]
        assert all(f["peer"] == "127.0.0.1" and f["duration_ms"] >= 0 for f in files)
        page = by_path["/pypi/simple/local-log/"][0]
        assert (page["status"], page["cache"]) == (200, "miss")
        assert by_path["/pypi/simple/Bad%20Name/"][0]["status"] == 400
        text = o.log.read_text()
        assert "s3cret-in-query" not in text and TOKEN not in text
    finally:
        o.stop()


def test_the_access_log_can_be_turned_off(tmp, hostile, bystander):
    o = Orchard(tmp, dict(sources(tmp, "noaccess", hostile, bystander), ORCHARD_ACCESS_LOG="false")).start()
    try:
        assert http(f"{o.url}/pypi/simple/local-quiet/")[0] == 200
        time.sleep(0.3)
        assert access_lines(o) == []
    finally:
        o.stop()
