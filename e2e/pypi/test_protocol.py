"""The simple repository API as Orchard serves it: merged view and shadowing, content
negotiation, redirects, rewritten links, PEP 592/658/700 fields, artifact HEAD, Range
and ETag."""
import hashlib
import io
import json
import time
import zipfile

import pytest

from conftest import Orchard, http, sources_file

JSON = "application/vnd.pypi.simple.v1+json"
HTML1 = "application/vnd.pypi.simple.v1+html"


@pytest.fixture(scope="module")
def orchard(tmp, upstream_a, upstream_b, fault):
    env = {"ORCHARD_UPSTREAMS_FILE": sources_file(tmp / "sources-protocol.yaml",
                                                  ("a", upstream_a.url), ("b", upstream_b.url), ("faulty", fault.url))}
    o = Orchard(tmp, env).start()
    yield o
    o.stop()


def page(orchard, path, accept=JSON):
    status, headers, body = http(orchard.url + path, headers={"Accept": accept})
    assert status == 200, (path, status, body[:300])
    return headers, body


def test_higher_priority_source_hides_the_project_in_lower_ones(orchard, upstream_a, upstream_b):
    _, body = page(orchard, "/pypi/simple/six/")
    doc = json.loads(body)
    names = [f["filename"] for f in doc["files"]]
    assert len(names) == 6 and all(n.startswith("six-1.1") for n in names), names
    assert "six-1.10.0-py2.py3-none-any.whl" not in names, "no mixing of files across sources"
    assert all(f["url"].startswith("../../../sources/a/files/six/") for f in doc["files"])
    # colorama exists only in b
    doc = json.loads(page(orchard, "/pypi/simple/colorama/")[1])
    assert doc["files"][0]["url"].startswith("../../../sources/b/files/colorama/")
    # the per-source view shows b's own six
    doc = json.loads(page(orchard, "/sources/b/simple/six/")[1])
    assert [f["filename"] for f in doc["files"]] == ["six-1.10.0-py2.py3-none-any.whl"]
    assert doc["files"][0]["url"] == "../../files/six/six-1.10.0-py2.py3-none-any.whl"
    # every link points back at Orchard
    for path in ("/pypi/simple/six/", "/pypi/simple/", "/sources/b/simple/six/"):
        for accept in (JSON, "text/html"):
            body = page(orchard, path, accept)[1].decode()
            assert f":{upstream_a.port}" not in body and f":{upstream_b.port}" not in body


def test_root_index_merges_sources(orchard):
    doc = json.loads(page(orchard, "/pypi/simple/")[1])
    names = {p["name"] for p in doc["projects"]}
    assert {"six", "colorama", "requests", "faulty"} <= names
    html = page(orchard, "/pypi/simple/", "text/html")[1].decode()
    assert '<a href="colorama/">colorama</a>' in html


def test_content_negotiation(orchard):
    h, body = page(orchard, "/pypi/simple/six/", JSON)
    assert h["content-type"] == JSON and h["vary"] == "Accept"
    assert json.loads(body)["meta"]["api-version"] in ("1.0", "1.1")
    h, body = page(orchard, "/pypi/simple/six/", HTML1)
    assert h["content-type"] == HTML1 and b'name="pypi:repository-version"' in body
    h, body = page(orchard, "/pypi/simple/six/", "text/html")
    assert h["content-type"].startswith("text/html")
    h, body = page(orchard, "/pypi/simple/six/", f"text/html;q=0.2, {JSON};q=0.9")
    assert h["content-type"] == JSON
    h, _ = page(orchard, "/pypi/simple/six/", "*/*")
    assert h["content-type"].startswith("text/html")
    status, _, body = http(orchard.url + "/pypi/simple/six/", headers={"Accept": "application/json"})
    assert status == 406 and b"not_acceptable" in body
    # representations are cached separately and stay distinct
    assert page(orchard, "/pypi/simple/six/", JSON)[0]["content-type"] == JSON
    assert page(orchard, "/pypi/simple/six/", "text/html")[0]["content-type"].startswith("text/html")


def test_names_are_normalised_with_a_redirect(orchard):
    for path, location in [("/pypi/simple/Six/", "../six/"), ("/pypi/simple/SIX", "six/"),
                           ("/pypi/simple/Charset_Normalizer/", "../charset-normalizer/"),
                           ("/pypi/simple", "simple/"), ("/sources/a/simple/Six/", "../six/")]:
        status, headers, _ = http(orchard.url + path)
        assert (status, headers.get("location")) == (301, location), path


def test_yanked_and_requires_python_survive(orchard):
    html = page(orchard, "/sources/faulty/simple/attrs-demo/", "text/html")[1].decode()
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in html
    assert 'data-yanked="broken &amp; withdrawn"' in html
    assert "#sha256=" in html
    doc = json.loads(page(orchard, "/sources/faulty/simple/attrs-demo/")[1])
    by_name = {f["filename"]: f for f in doc["files"]}
    assert by_name["attrs_demo-1.0-py3-none-any.whl"]["requires-python"] == ">=3.8,<4"
    assert by_name["attrs_demo-1.0-py3-none-any.whl"]["yanked"] is False
    assert by_name["attrs_demo-0.9-py3-none-any.whl"]["yanked"] == "broken & withdrawn"


def test_metadata_is_extracted_and_advertised_once_the_wheel_is_cached(orchard):
    wheel = "six-1.13.0-py2.py3-none-any.whl"
    def entry():
        doc = json.loads(page(orchard, "/sources/a/simple/six/")[1])
        return next(f for f in doc["files"] if f["filename"] == wheel)
    assert "core-metadata" not in entry(), "nothing advertised before it can be served"
    meta_url = f"{orchard.url}/sources/a/files/six/{wheel}.metadata"
    assert http(meta_url)[0] == 404
    status, _, data = http(f"{orchard.url}/sources/a/files/six/{wheel}")
    assert status == 200
    expected = zipfile.ZipFile(io.BytesIO(data)).read("six-1.13.0.dist-info/METADATA")
    deadline = time.time() + 20
    while "core-metadata" not in entry():
        assert time.time() < deadline, "metadata never advertised"
        time.sleep(0.2)
    advertised = entry()["core-metadata"]["sha256"]
    status, _, meta = http(meta_url)
    assert status == 200 and meta == expected
    assert hashlib.sha256(meta).hexdigest() == advertised
    html = page(orchard, "/sources/a/simple/six/", "text/html")[1].decode()
    assert f'data-core-metadata="sha256={advertised}"' in html


def test_artifact_head_range_etag(orchard):
    url = f"{orchard.url}/sources/a/files/six/six-1.14.0-py2.py3-none-any.whl"
    status, headers, body = http(url)
    assert status == 200 and headers["x-orchard-cache"] == "miss"
    digest = hashlib.sha256(body).hexdigest()
    assert int(headers["content-length"]) == len(body)
    declared = json.loads(page(orchard, "/sources/a/simple/six/")[1])
    assert digest in [f["hashes"]["sha256"] for f in declared["files"]]
    status, headers, body2 = http(url)
    assert (status, headers["x-orchard-cache"], body2) == (200, "hit", body)
    assert headers["etag"] == f'"{digest}"' and headers["content-type"] == "application/zip"
    status, headers, empty = http(url, method="HEAD")
    assert status == 200 and int(headers["content-length"]) == len(body) and empty == b""
    status, headers, part = http(url, headers={"Range": "bytes=10-19"})
    assert status == 206 and part == body[10:20] and headers["content-range"] == f"bytes 10-19/{len(body)}"
    status, headers, part = http(url, headers={"Range": "bytes=-5"})
    assert status == 206 and part == body[-5:]
    status, headers, _ = http(url, headers={"Range": f"bytes={len(body)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(body)}"
    status, _, nothing = http(url, headers={"If-None-Match": f'"{digest}"'})
    assert status == 304 and nothing == b""
    # a range request on an uncached file fills the cache and answers the range
    url2 = f"{orchard.url}/sources/a/files/six/six-1.15.0-py2.py3-none-any.whl"
    status, headers, part = http(url2, headers={"Range": "bytes=0-3"})
    assert status == 206 and part == b"PK\x03\x04"
