"""Clients that never read: the upstream fill runs at the upstream's speed whatever the
first client does, others are served meanwhile, and the stalled client, detached from
the fill, still gets the complete verified bytes from storage when it reads again."""
import hashlib
import json
import socket
import sys
import time
from pathlib import Path

from conftest import Orchard, http
from test_ssrf import sources

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_server  # noqa: E402

FILE = "huge_a-1.0-py3-none-any.whl"


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the head"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    body = bytearray(rest)
    length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
    while len(body) < length:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError(f"stalled at {len(body)} of {length}")
        assert chunk, f"body cut short at {len(body)} of {length}"
        body += chunk
    return head, bytes(body)


def test_a_client_that_never_reads_does_not_freeze_the_fill(tmp, hostile, bystander):
    o = Orchard(tmp, sources(tmp, "slow", hostile, bystander)).start()
    expected = hashlib.sha256(hostile_server.content(FILE)).hexdigest()
    path = f"/sources/evil/files/huge-a/{FILE}"
    try:
        assert http(f"{o.url}/pypi/simple/huge-a/")[0] == 200
        stalled = socket.socket()  # closed in finally, so a failure does not hold up the drain
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", o.port))
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: orchard\r\n\r\n".encode())
        # it leads the fill: wait until the upstream was asked for the file
        deadline = time.time() + 30
        while not any(FILE in p for p, _ in hostile.seen()):
            assert time.time() < deadline, "the fill never started"
            time.sleep(0.05)
        # a second client for the same file is served in full while the first reads nothing
        status, h, body = http(f"{o.url}{path}", timeout=120)
        assert status == 200 and hashlib.sha256(body).hexdigest() == expected
        assert o.counter("orchard_fill_clients_detached_total") == 1
        assert [p for p, _ in hostile.seen()].count(f"/files/{FILE}") == 1
        # and the stalled client, reading at last, gets every byte, verified
        stalled.settimeout(60)
        head, got = read_response(stalled)
        assert head.startswith(b"HTTP/1.1 200") and hashlib.sha256(got).hexdigest() == expected
    finally:
        stalled.close()
        o.stop()


def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout(tmp, hostile, bystander):
    """ORCHARD_CLIENT_WRITE_TIMEOUT: a connection whose response bytes stay unread (zero
    window) is dropped by the kernel (TCP_USER_TIMEOUT); Orchard keeps serving."""
    env = sources(tmp, "write-timeout", hostile, bystander)
    env["ORCHARD_CLIENT_WRITE_TIMEOUT"] = "2"
    o = Orchard(tmp, env).start()
    path = f"/sources/evil/files/huge-a/{FILE}"
    stalled = socket.socket()
    try:
        assert http(f"{o.url}/pypi/simple/huge-a/")[0] == 200
        assert http(f"{o.url}{path}", timeout=120)[0] == 200  # cached: the next request is a hit
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", o.port))
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: orchard\r\n\r\n".encode())
        time.sleep(12)  # zero-window probes back off; the 2 s user timeout ends them
        assert http(f"{o.admin}/healthz")[0] == 200
        stalled.settimeout(30)
        try:
            read_response(stalled)
            dropped = False
        except (ConnectionResetError, AssertionError):
            dropped = True
        assert dropped, "the stalled connection was still open and delivered the whole body"
    finally:
        stalled.close()
        o.stop()


def test_a_request_stops_waiting_for_a_slow_fill_and_the_fill_goes_on(tmp, hostile, bystander):
    """An upstream that drips a file over 4 s: a second request waits for the first one's
    fill up to ORCHARD_FILL_WAIT_TIMEOUT (1 s here), then answers 504 saying so; the fill
    goes on, the first client gets every byte, and the next request is a hit."""
    import concurrent.futures
    o = Orchard(tmp, dict(sources(tmp, "drip", hostile, bystander), ORCHARD_FILL_WAIT_TIMEOUT="1")).start()
    file = "drip_a-1.0-py3-none-any.whl"
    path = f"/sources/evil/files/drip-a/{file}"
    expected = hashlib.sha256(hostile_server.content(file)).hexdigest()
    try:
        assert http(f"{o.url}/pypi/simple/drip-a/")[0] == 200
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(http, f"{o.url}{path}", timeout=60)
            deadline = time.time() + 30
            while not any(file in p for p, _ in hostile.seen()):
                assert time.time() < deadline, "the fill never started"
                time.sleep(0.05)
            started = time.time()
            status, _, body = http(f"{o.url}{path}", timeout=60)
            waited = time.time() - started
            assert status == 504, (status, body[:300])
            assert "ORCHARD_FILL_WAIT_TIMEOUT" in json.loads(body)["error"]["message"]
            assert not first.done(), f"the fill ended before the wait limit (after {waited:.1f} s)"
            status, _, got = first.result()
        assert status == 200 and hashlib.sha256(got).hexdigest() == expected
        assert o.counter("orchard_fill_waits_timed_out_total") == 1
        status, h, again = http(f"{o.url}{path}")
        assert (status, h["x-orchard-cache"], again) == (200, "hit", got)
        assert [p for p, _ in hostile.seen()].count(f"/files/{file}") == 1
    finally:
        o.stop()
