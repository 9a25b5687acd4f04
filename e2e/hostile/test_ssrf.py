"""SSRF and credential forwarding: an index that names files on other hosts. The
source's credentials go only to its own origin; other hosts need `fileHosts` and a
declared digest; refusals are 502s that name the rule, and the other host receives
nothing (docs/security.md)."""
import pytest

from conftest import TOKEN, Orchard, http


def sources(tmp, name, hostile, bystander, file_hosts=(), pypi_extra=""):
    hosts = f"\n  fileHosts: [{', '.join(repr(h) for h in file_hosts)}]" if file_hosts else ""
    path = tmp / f"{name}.yaml"
    path.write_text(f"""- name: evil
  protocol: pypi
  url: {hostile.url}/simple/
  credentials: {{type: bearer, secretEnv: HOSTILE_TOKEN}}{hosts}{pypi_extra}
- name: evilnpm
  protocol: npm
  url: {hostile.url}/npm/
  credentials: {{type: bearer, secretEnv: HOSTILE_TOKEN}}{hosts}
""")
    return {"ORCHARD_UPSTREAMS_FILE": str(path), "HOSTILE_TOKEN": TOKEN}


@pytest.fixture(scope="module")
def strict(tmp, hostile, bystander):
    o = Orchard(tmp, sources(tmp, "strict", hostile, bystander)).start()
    yield o
    o.stop()


@pytest.fixture(scope="module")
def with_file_host(tmp, hostile, bystander):
    o = Orchard(tmp, sources(tmp, "filehost", hostile, bystander, [f"127.0.0.1:{bystander.port}"])).start()
    yield o
    o.stop()


def bystander_got(bystander, part):
    return [s for s in bystander.seen() if part in s[0]]


def test_a_page_linking_another_host_is_refused_and_the_host_gets_nothing(strict, bystander, hostile):
    file = "offhost_a-1.0-py3-none-any.whl"
    status, _, page = http(f"{strict.url}/pypi/simple/offhost-a/")
    assert status == 200
    status, _, body = http(f"{strict.url}/sources/evil/files/offhost-a/{file}")
    assert status == 502, (status, body)
    assert b"neither the source's origin nor listed in its fileHosts" in body
    status, _, body = http(f"{strict.url}/sources/evil/files/offhost-a/{file}.metadata")
    assert status in (404, 502), body  # no metadata declared for it
    assert bystander_got(bystander, "offhost_a") == []
    assert strict.counter("orchard_file_url_refusals_total") >= 1
    # the source itself got its token (it is the source's origin)
    assert all(a == f"Bearer {TOKEN}" for p, a in hostile.seen() if "/simple/offhost-a/" in p)


def test_declared_metadata_of_an_off_host_file_is_refused_too(strict, bystander):
    file = "offmeta_a-1.0-py3-none-any.whl"
    http(f"{strict.url}/pypi/simple/offmeta-a/")
    status, _, body = http(f"{strict.url}/sources/evil/files/offmeta-a/{file}.metadata")
    assert status == 502 and b"fileHosts" in body, (status, body)
    assert bystander_got(bystander, "offmeta_a") == []


def test_an_npm_tarball_on_another_host_is_refused(strict, bystander):
    status, _, _ = http(f"{strict.url}/npm/offhost-pkg")
    assert status == 200
    status, _, body = http(f"{strict.url}/npm/offhost-pkg/-/offhost-pkg-1.0.0.tgz")
    assert status == 502 and b"fileHosts" in body, (status, body)
    assert bystander_got(bystander, "offhost-pkg") == []


def test_redirects_to_another_host_are_not_followed(strict, bystander):
    file = "redirect_a-1.0-py3-none-any.whl"
    http(f"{strict.url}/pypi/simple/redirect-a/")
    status, _, body = http(f"{strict.url}/sources/evil/files/redirect-a/{file}")
    assert status == 502 and status != 404, (status, body)
    assert bystander_got(bystander, "redirect_a") == []


def test_a_listed_file_host_is_used_without_the_source_credentials(with_file_host, bystander, hostile):
    file = "offhost_b-1.0-py3-none-any.whl"
    http(f"{with_file_host.url}/pypi/simple/offhost-b/")
    status, h, body = http(f"{with_file_host.url}/sources/evil/files/offhost-b/{file}")
    assert status == 200 and len(body) == 32_000, (status, body[:200])
    got = bystander_got(bystander, "offhost_b")
    assert got == [[f"/steal/{file}", None]], got
    # npm: the same, the tarball's sha512 is declared
    status, _, body = http(f"{with_file_host.url}/npm/offhost-pkg2/-/offhost-pkg2-1.0.0.tgz")
    assert status == 200, body[:300]
    assert bystander_got(bystander, "offhost-pkg2") == [["/steal/offhost-pkg2-1.0.0.tgz", None]]
    # the source's own origin still gets the token
    assert any(a == f"Bearer {TOKEN}" for p, a in hostile.seen() if "offhost-b" in p)


def test_a_listed_file_host_still_needs_a_declared_digest(with_file_host, bystander):
    file = "offhost_nohash_c-1.0-py3-none-any.whl"
    http(f"{with_file_host.url}/pypi/simple/offhost-nohash-c/")
    status, _, body = http(f"{with_file_host.url}/sources/evil/files/offhost-nohash-c/{file}")
    assert status == 502 and b"declares no sha256 or sha512" in body, (status, body)
    assert bystander_got(bystander, "offhost_nohash_c") == []


def test_the_token_never_appears_in_responses_logs_or_metrics(strict, with_file_host):
    for o in (strict, with_file_host):
        assert TOKEN.encode() not in http(f"{o.admin}/metrics")[2]
        assert TOKEN not in o.log.read_text()


def test_metadata_files_honour_include_and_exclude(tmp, hostile):
    """`<file>.metadata` is refused like the file itself when the source excludes the
    project (it used to skip the check)."""
    o = Orchard(tmp, sources(tmp, "excluding", hostile, None, pypi_extra='\n  exclude: ["local-hidden*"]')).start()
    try:
        file = "local_hidden-1.0-py3-none-any.whl"
        for suffix in ("", ".metadata"):
            status, _, body = http(f"{o.url}/sources/evil/files/local-hidden/{file}{suffix}")
            assert status == 404 and b"does not serve" in body, (suffix, status, body)
        shown = "local_shown-1.0-py3-none-any.whl"
        http(f"{o.url}/sources/evil/simple/local-shown/")
        assert http(f"{o.url}/sources/evil/files/local-shown/{shown}.metadata")[0] == 200
        assert not any("local-hidden" in p or "local_hidden" in p for p, _ in hostile.seen())
    finally:
        o.stop()
