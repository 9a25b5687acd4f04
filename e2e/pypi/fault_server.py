"""A deliberately unreliable PyPI-style upstream for Orchard's fault tests.

It serves PEP 503 pages and files for made-up projects and misbehaves on request:

    POST /__mode/<key>/<mode>   key = a project or file name; mode is one of
        ok | slow | delayN (answer after N seconds) | dripN (the body in 20 pieces over N
        seconds) | 500 | reset | truncated | wrong | 404
        (for a Maven file, 404 also covers its .sha1)
    GET  /__count               JSON: requests received per path (conditional requests
                                answered 304 are counted under "304 <path>")
    POST /__reset               forget modes and counts
    POST /__bearer/<token>      from now on, projects named "private-*" (pages and files)
                                answer 401 unless the request has "Authorization: Bearer <token>"
    GET  /m2/<group>/<artifact>/<version>/<file>[.sha1]
                                a Maven layout: any file (deterministic content) and its
                                .sha1; artifact ids starting with "missing-" are 404;
                                <group>/<artifact>/maven-metadata.xml lists 1.0 and 1.1
    GET  /simple/meta-<x>/      projects named "meta-*" offer PEP 658 metadata for their
                                wheel (data-dist-info-metadata + /files/<wheel>.metadata):
                                meta-<x> requires meta-leaf>=1.0; meta-leaf requires nothing.
                                Their wheel bytes are not a zip: only the metadata says
                                what they depend on
    GET  /npm/<name>            an npm packument for <name> (one version, 1.0.0) whose
                                tarball is /files/<name>-1.0.0.tgz with its sha512/sha1

Files have deterministic content (derived from the file name), and pages declare
the sha256 of that content, so "wrong" bytes are detectable.
"""
import base64
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 6
FILE_SIZE = 300_000
BIG_FILE_SIZE = 5 * 1024 * 1024

# Every project name is served (except names starting with "missing-", which are 404),
# with the files below; a few have special attributes.
PROJECTS = {
    "attrs-demo": [
        ("attrs_demo-1.0-py3-none-any.whl", ' data-requires-python="&gt;=3.8,&lt;4"'),
        ("attrs_demo-0.9-py3-none-any.whl", ' data-yanked="broken &amp; withdrawn"'),
    ],
}

modes = {}
counts = {}
bearer = {}
lock = threading.Lock()


def content(filename):
    """Deterministic bytes of a file: 5 MiB when its name contains "big", else 300 kB."""
    size = BIG_FILE_SIZE if "big" in filename else FILE_SIZE
    out = bytearray()
    seed = filename.encode()
    while len(out) < size:
        seed = hashlib.sha256(seed).digest()
        out += seed
    return bytes(out[:size])


def metadata_of(wheel):
    """PEP 658 METADATA of a meta-* wheel."""
    project = wheel.split("-")[0].replace("_", "-")
    requires = "" if project == "meta-leaf" else "Requires-Dist: meta-leaf>=1.0\n"
    return f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n{requires}".encode()


def files_of(project):
    if project.startswith("meta-"):
        wheel = f"{project.replace('-', '_')}-1.0-py3-none-any.whl"
        digest = hashlib.sha256(metadata_of(wheel)).hexdigest()
        return [(wheel, f' data-dist-info-metadata="sha256={digest}" data-core-metadata="sha256={digest}"')]
    if project in PROJECTS:
        return PROJECTS[project]
    stem = project.replace("-", "_")
    return [(f"{stem}-1.0-py3-none-any.whl", "")] + [(f"{stem}-1.{i}.tar.gz", "") for i in range(4)]


def mode_for(*keys):
    with lock:
        for k in keys:
            if k in modes:
                return modes[k]
    return "ok"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_bytes(self, status, body, ctype="text/html"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def abort(self):
        """Reset the connection (RST): close every handle on the socket, linger 0."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for f in (self.wfile, self.rfile):
            try:
                f.close()
            except OSError:
                pass
        self.connection.close()
        self.close_connection = True

    def misbehave(self, mode, body, ctype):
        if mode == "slow":
            time.sleep(SLOW_SECONDS)
        elif mode.startswith("delay"):
            time.sleep(float(mode[5:] or 1))
        elif mode.startswith("drip"):
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            piece = -(-len(body) // 20)
            try:
                for at in range(0, len(body), piece):
                    self.wfile.write(body[at:at + piece])
                    self.wfile.flush()
                    time.sleep(float(mode[4:] or 1) / 20)
            except OSError:
                pass  # the reader went away
            return True
        elif mode == "500":
            self.send_bytes(500, b"internal error")
            return True
        elif mode == "404":
            self.send_bytes(404, b"not found", "text/plain")
            return True
        elif mode == "reset":
            self.abort()
            return True
        elif mode == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.abort()
            return True
        elif mode == "wrong":
            evil = bytes(b ^ 0x5A for b in body)
            self.send_bytes(200, evil, ctype)
            return True
        return False

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        with lock:
            if parts[0] == "__mode" and len(parts) == 3:
                modes[parts[1]] = parts[2]
            elif parts[0] == "__bearer" and len(parts) == 2:
                bearer["token"] = parts[1]
            elif parts[0] == "__reset":
                modes.clear()
                counts.clear()
            else:
                self.send_bytes(404, b"no")
                return
        self.send_bytes(200, b"ok", "text/plain")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/__count":
            with lock:
                body = json.dumps(counts).encode()
            self.send_bytes(200, body, "application/json")
            return
        with lock:
            counts[path] = counts.get(path, 0) + 1
        parts = [p for p in path.split("/") if p]
        if "token" in bearer and any(p.startswith("private") for p in parts[1:2]) \
                and self.headers.get("Authorization") != f"Bearer {bearer['token']}":
            self.send_bytes(401, b"authorization required", "text/plain")
            return
        if len(parts) == 1 and parts[0] == "simple":
            links = "".join(f'<a href="{p}/">{p}</a>\n' for p in ["faulty", *PROJECTS])
            self.send_bytes(200, f"<html><body>{links}</body></html>".encode())
            return
        if len(parts) == 2 and parts[0] == "simple":
            project = parts[1]
            if project.startswith("missing-"):
                self.send_bytes(404, b"not found")
                return
            links = "".join(
                f'<a href="../../files/{f}#sha256={hashlib.sha256(content(f)).hexdigest()}"{attrs}>{f}</a><br/>\n'
                for f, attrs in files_of(project)
            )
            body = f"<!DOCTYPE html><html><body><h1>Links for {project}</h1>\n{links}</body></html>".encode()
            if self.misbehave(mode_for(project), body, "text/html"):
                return
            etag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
            if self.headers.get("If-None-Match") == etag:
                with lock:
                    counts["304 " + path] = counts.get("304 " + path, 0) + 1
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        if len(parts) >= 4 and parts[0] == "m2":
            if any(p.startswith("missing-") for p in parts):
                self.send_bytes(404, b"not found", "text/plain")
                return
            name = parts[-1]
            if name == "maven-metadata.xml":
                artifact, group = parts[-2], ".".join(parts[1:-2])
                body = (f"<?xml version=\"1.0\"?><metadata><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
                        f"<versioning><latest>1.1</latest><release>1.1</release><versions><version>1.0</version>"
                        f"<version>1.1</version></versions></versioning></metadata>").encode()
                if self.misbehave(mode_for(artifact + "-metadata"), body, "text/xml"):
                    return
                self.send_bytes(200, body, "text/xml")
                return
            if name.endswith(".sha1"):
                if mode_for(name[:-5]) == "404":
                    self.send_bytes(404, b"not found", "text/plain")
                    return
                self.send_bytes(200, hashlib.sha1(content(name[:-5])).hexdigest().encode(), "text/plain")
                return
            body = content(name)
            if self.misbehave(mode_for(name), body, "application/java-archive"):
                return
            self.send_bytes(200, body, "application/java-archive")
            return
        if len(parts) == 2 and parts[0] == "npm":
            name = parts[1]
            if name.startswith("missing-"):
                self.send_bytes(404, b'{"error":"not found"}', "application/json")
                return
            file = f"{name}-1.0.0.tgz"
            data = content(file)
            doc = {
                "name": name,
                "dist-tags": {"latest": "1.0.0"},
                "versions": {"1.0.0": {"name": name, "version": "1.0.0", "dist": {
                    "tarball": f"http://127.0.0.1:{self.server.server_port}/files/{file}",
                    "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                    "shasum": hashlib.sha1(data).hexdigest(),
                }}},
            }
            body = json.dumps(doc).encode()
            if self.misbehave(mode_for(name), body, "application/json"):
                return
            self.send_bytes(200, body, "application/json")
            return
        if len(parts) == 2 and parts[0] == "files":
            name = parts[1]
            if name.endswith(".whl.metadata") and name.startswith("meta_"):
                self.send_bytes(200, metadata_of(name.removesuffix(".metadata")), "application/octet-stream")
                return
            body = content(name)
            if self.misbehave(mode_for(name), body, "application/octet-stream"):
                return
            self.send_bytes(200, body, "application/octet-stream")
            return
        self.send_bytes(404, b"not found")


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
