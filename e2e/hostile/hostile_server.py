"""A hostile upstream for Orchard's hostile-input suite, and a bystander that records
every request it gets (the "other host" a hostile index points Orchard at).

    hostile_server.py upstream PORT BYSTANDER_PORT TOKEN
        Requires "Authorization: Bearer TOKEN" on every request (a private registry) and
        records the Authorization header of each. Serves:
        GET /simple/                    a root index of 400,000 projects (about 17 MB)
        GET /simple/<project>/          a PEP 503 page. Projects named
            offhost-*    link their file to the bystander (with a sha256)
            offhost-nohash-*  the same without a hash
            redirect-*   link a file on this host that answers 302 to the bystander
            local-*      link a file on this host (with its sha256 and PEP 658 metadata)
            bomb-tar     an sdist whose tar carries a 1 GiB GNU long-name header (~1 MB gzipped)
            bomb-zip     a wheel whose METADATA inflates to 1 GiB
            bomb-cd      a wheel (~11 MB) whose central directory lists 120,001 entries
            drip-*       a 32 kB wheel sent 2 kB every 0.25 s (4 s in all)
            huge-*       a 64 MiB wheel on this host (with its sha256)
            offmeta-*    link a file on this host whose PEP 658 metadata is declared;
                         the page's file URL is on the bystander
        GET /npm/<name>                 a packument whose tarball is on the bystander
                                        (names offhost-*) or on this host (others);
                                        huge-packument*: 4000 versions, about 13.5 MB
        GET /npm/deep-json              a packument nested 100,000 arrays deep
        GET /files/<name>               deterministic bytes; /redirect/<name> → 302
        GET /m2/org/evil/chain/<N>/chain-<N>.pom
                                        a POM whose parent is chain N+1: an endless parent chain
        GET /__seen                     JSON: [[path, authorization or null], ...]
    hostile_server.py bystander PORT
        Answers every GET with deterministic bytes and records [path, authorization].
"""
import base64
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

seen = []
lock = threading.Lock()


BOMBS = {}


def cached(key, make):
    """A generated body, made once."""
    if key not in BOMBS:
        BOMBS[key] = make()
    return BOMBS[key]


def tar_bomb():
    """A .tar.gz whose first header is a GNU long name of 1 GiB."""
    import zlib
    size = 1 << 30
    header = bytearray(512)
    header[:13] = b"././@LongLink"
    header[100:107] = b"0000644"
    header[124:136] = b"%011o\0" % size
    header[156:157] = b"L"
    header[257:263] = b"ustar\0"
    header[148:156] = b"        "
    header[148:155] = b"%06o\0" % sum(header)
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [gz.compress(bytes(header))]
    chunk = b"a" * (1 << 20)
    for _ in range(size >> 20):
        out.append(gz.compress(chunk))
    out.append(gz.flush())
    return b"".join(out)


def zip_bomb(name):
    """A wheel whose .dist-info/METADATA inflates to 1 GiB (deterministic bytes)."""
    import io
    import zipfile
    buf = io.BytesIO()
    dist = name.split("-")[0] + "-1.0.dist-info"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        info = zipfile.ZipInfo(f"{dist}/METADATA", date_time=(2024, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        with z.open(info, "w", force_zip64=True) as f:
            chunk = b"Requires-Dist: a\n" * 65536
            for _ in range((1 << 30) // len(chunk)):
                f.write(chunk)
        z.writestr(zipfile.ZipInfo(f"{dist}/WHEEL", date_time=(2024, 1, 1, 0, 0, 0)), "Wheel-Version: 1.0\n")
    return buf.getvalue()


def zip_directory_bomb(name):
    """A valid wheel whose central directory lists 120,000 (empty) entries: opening it
    with a zip library keeps every entry in memory."""
    import io
    import zipfile
    buf = io.BytesIO()
    dist = name.split("-")[0] + "-1.0.dist-info"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo(f"{dist}/METADATA", date_time=(2024, 1, 1, 0, 0, 0)),
                   "Metadata-Version: 2.1\nName: bomb-cd\nVersion: 1.0\n")
        for i in range(120_000):
            z.writestr(zipfile.ZipInfo(f"d/{i}", date_time=(2024, 1, 1, 0, 0, 0)), b"")
    return buf.getvalue()


def huge_packument(name, here):
    return cached(f"{name}:{here}", lambda: make_huge_packument(name, here))


def make_huge_packument(name, here):
    versions = {}
    for i in range(4000):
        v = f"1.0.{i}"
        file = f"{name}-{v}.tgz"
        # shaped like real registry metadata: many small fields and nested objects
        versions[v] = {"name": name, "version": v, "description": "a package " * 8,
                       "keywords": [f"keyword-{j}" for j in range(60)],
                       "maintainers": [{"name": f"m{j}", "email": f"m{j}@upstream.example"} for j in range(8)],
                       "scripts": {f"s{j}": f"node s{j}.js" for j in range(10)},
                       "dependencies": {f"dep-{j}": f"^{j}.0.0" for j in range(80)},
                       "engines": {"node": ">=18"}, "_hasShrinkwrap": False,
                       "dist": {"tarball": f"{here}/files/{file}",
                                "integrity": "sha512-" + base64.b64encode(hashlib.sha512(content(file)).digest()).decode()}}
    doc = {"name": name, "dist-tags": {"latest": "1.0.3999"}, "versions": versions}
    return json.dumps(doc).encode()


def root_index():
    links = "".join(f'<a href="/simple/project-{i:06d}/">project-{i:06d}</a>\n' for i in range(400_000))
    return f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode()


def content(name):
    if name.startswith("bomb_tar"):
        return cached(name, tar_bomb)
    if name.startswith("bomb_zip"):
        return cached(name, lambda: zip_bomb(name))
    if name.startswith("bomb_cd"):
        return cached(name, lambda: zip_directory_bomb(name))
    if name.startswith("huge_"):
        return cached(name, lambda: hashlib.sha256(name.encode()).digest() * (2 << 20))  # 64 MiB
    return hashlib.sha256(name.encode()).digest() * 1000  # 32 kB, deterministic


def metadata(name):
    project = name.split("-")[0]
    return f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n".encode()


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self):
        with lock:
            seen.append([self.path, self.headers.get("Authorization")])

    def seen_or_record(self):
        """Answers GET /__seen (True), or records this request (False)."""
        if self.path == "/__seen":
            with lock:
                self.send(200, json.dumps(seen).encode(), "application/json")
            return True
        self.record()
        return False

    def send(self, status, body, ctype="application/octet-stream", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Bystander(Base):
    def do_GET(self):
        if self.seen_or_record():
            return
        name = self.path.rsplit("/", 1)[-1]
        self.send(200, content(name))


class Upstream(Base):
    bystander = None
    token = None

    def do_GET(self):
        if self.seen_or_record():
            return
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send(401, b"unauthorized", "text/plain", [("WWW-Authenticate", "Bearer")])
            return
        parts = self.path.strip("/").split("/")
        here = f"http://127.0.0.1:{self.server.server_port}"
        there = f"http://127.0.0.1:{self.bystander}"
        if parts == ["simple"]:
            self.send(200, cached("root", root_index), "text/html")
        elif parts[0] == "simple" and len(parts) == 2:
            project = parts[1]
            file = f"{project.replace('-', '_')}-1.0" + (".tar.gz" if project == "bomb-tar" else "-py3-none-any.whl")
            digest = hashlib.sha256(content(file)).hexdigest()
            meta = hashlib.sha256(metadata(file)).hexdigest()
            if project.startswith("offhost-nohash-"):
                href, attrs = f"{there}/steal/{file}", ""
            elif project.startswith("offhost-"):
                href, attrs = f"{there}/steal/{file}#sha256={digest}", ""
            elif project.startswith("redirect-"):
                href, attrs = f"{here}/redirect/{file}", ""
            elif project.startswith("offmeta-"):
                href, attrs = f"{there}/steal/{file}#sha256={digest}", f' data-dist-info-metadata="sha256={meta}"'
            elif project.startswith(("bomb-", "huge-")):
                href, attrs = f"{here}/files/{file}#sha256={digest}", ""
            else:
                href, attrs = f"{here}/files/{file}#sha256={digest}", f' data-dist-info-metadata="sha256={meta}"'
            page = f'<!DOCTYPE html><html><body><a href="{href}"{attrs}>{file}</a></body></html>'.encode()
            self.send(200, page, "text/html")
        elif parts == ["npm", "deep-json"]:
            depth = 100_000  # 200 kB of brackets: a recursive parser would blow its stack
            body = '{"name":"deep-json","versions":{"1.0.0":{"x":' + "[" * depth + "]" * depth + "}}}"
            self.send(200, body.encode(), "application/json")
        elif parts[0] == "npm" and len(parts) == 2 and parts[1].startswith("huge-packument"):
            self.send(200, huge_packument(parts[1], here), "application/json")
        elif parts[0] == "npm" and len(parts) == 2:
            name = parts[1]
            file = f"{name}-1.0.0.tgz"
            data = content(file)
            host = there + "/steal" if name.startswith("offhost-") else here + "/files"
            doc = {"name": name, "dist-tags": {"latest": "1.0.0"}, "versions": {"1.0.0": {
                "name": name, "version": "1.0.0", "dist": {
                    "tarball": f"{host}/{file}",
                    "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()}}}}
            self.send(200, json.dumps(doc).encode(), "application/json")
        elif parts[:3] == ["m2", "org", "evil"] and len(parts) == 6 and parts[5].endswith(".pom"):
            n = int(parts[4])
            pom = (f'<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
                   f'<parent><groupId>org.evil</groupId><artifactId>chain</artifactId><version>{n + 1}</version></parent>'
                   f'<artifactId>chain</artifactId><version>{n}</version><packaging>pom</packaging></project>').encode()
            self.send(200, pom, "application/xml")
        elif parts[0] == "files" and len(parts) == 2 and parts[1].startswith("drip_"):
            body = content(parts[1])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 2000):
                self.wfile.write(body[i:i + 2000])
                self.wfile.flush()
                time.sleep(0.25)
        elif parts[0] == "files" and len(parts) == 2:
            name = parts[1]
            self.send(200, metadata(name[: -len(".metadata")]) if name.endswith(".metadata") else content(name))
        elif parts[0] == "redirect" and len(parts) == 2:
            self.send(302, b"", extra=[("Location", f"{there}/steal/{parts[1]}")])
        else:
            self.send(404, b"not found", "text/plain")


def main():
    role, port = sys.argv[1], int(sys.argv[2])
    if role == "upstream":
        for bomb in ("bomb_tar-1.0.tar.gz", "bomb_zip-1.0-py3-none-any.whl"):
            content(bomb)  # made once, before the first request (about 9 s)
        Upstream.bystander, Upstream.token = int(sys.argv[3]), sys.argv[4]
        handler = Upstream
    else:
        handler = Bystander
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
