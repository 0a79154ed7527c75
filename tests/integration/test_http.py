"""HTTP/1.1 protocol behaviour over real clients: raw sockets, httpx and curl."""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
import subprocess
import time
from email.utils import parsedate_to_datetime

import httpx
import pytest

from conftest import IS_UVICORN, ResponseReader, is_closed, raw_request, recv_until_closed

CURL = shutil.which("curl")
# The sanitizer run preloads ASan for the server; curl hangs with it preloaded.
CURL_ENV = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
needs_curl = pytest.mark.skipif(CURL is None, reason="curl not installed")


def test_keep_alive_reuses_connection(raw_server):
    with raw_server.connect() as s:
        reader = ResponseReader(s)
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        r1 = reader.read_response()
        assert r1.status == 200 and r1.body == b"hello, world"
        assert (r1.header("connection") or "").lower() != "close"
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        r2 = reader.read_response()
        assert r2.status == 200 and r2.body == b"hello"
        # Same client port on the server side: ask the scope.
        s.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
        r3 = reader.read_response()
        assert json.loads(r3.body)["client"][1] == s.getsockname()[1]


def test_connection_close_request_header(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n" in data.lower()
    assert data.endswith(b"hello, world")


def test_http10_closes_by_default(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"GET /fixed HTTP/1.0\r\n\r\n")
        data = recv_until_closed(s)
    assert re.match(rb"HTTP/1\.[01] 200 OK\r\n", data)
    assert data.endswith(b"hello, world")


@pytest.mark.pronghorn_only  # uvicorn always closes HTTP/1.0 connections
def test_http10_keep_alive(raw_server):
    with raw_server.connect() as s:
        reader = ResponseReader(s)
        s.sendall(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r1 = reader.read_response()
        assert r1.status == 200 and r1.body == b"hello, world"
        s.sendall(b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (r1.header("connection") or "").lower() == "keep-alive"
        r2 = reader.read_response()
        assert r2.status == 200


@pytest.mark.pronghorn_only  # uvicorn sends chunked encoding to HTTP/1.0 clients (RFC 9112 7.1 violation)
def test_http10_streaming_response_is_close_delimited(raw_server):
    # HTTP/1.0 cannot use chunked encoding: body runs until close.
    with raw_server.connect() as s:
        s.sendall(b"GET /stream?n=100000 HTTP/1.0\r\n\r\n")
        data = recv_until_closed(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"x" * 100000


def test_pipelining_in_order(raw_server):
    with raw_server.connect() as s:
        reqs = (b"GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nsecond"
                b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        s.sendall(reqs)
        reader = ResponseReader(s)
        bodies = [reader.read_response().body for _ in range(3)]
    assert bodies == [b"slept", b"second", b"hello, world"]


def test_unread_request_bodies_are_skipped(raw_server):
    # /fixed never reads its body: the server must discard it before parsing the next request.
    inner = b"GET /smuggled HTTP/1.1\r\n\r\n"
    with raw_server.connect() as s:
        s.sendall(b"POST /fixed HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(inner), inner)
                  + b"POST /fixed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
                  + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nlast")
        reader = ResponseReader(s)
        responses = [reader.read_response() for _ in range(3)]
    assert [(r.status, r.body) for r in responses] == [(200, b"hello, world"), (200, b"hello, world"),
                                                        (200, b"last")]


def test_pipelining_byte_by_byte(raw_server):
    reqs = (b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    with raw_server.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(reqs)):
            s.send(reqs[i:i + 1])
        reader = ResponseReader(s)
        assert reader.read_response().body == b"hello, world"
        assert reader.read_response().body == b"abc"


def test_chunked_upload_raw(raw_server):
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in [b"hello ", b"chunked", b" world" * 1000])
    r = raw_request(raw_server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + body + b"0\r\nX-Trailer: ignored\r\n\r\n")
    assert r.status == 200
    assert r.body == b"hello chunked" + b" world" * 1000


def test_chunked_upload_with_extensions(raw_server):
    r = raw_request(raw_server, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5;name=value\r\nhello\r\n0\r\n\r\n")
    assert r.status == 200 and r.body == b"hello"


def test_chunked_upload_httpx_generator(raw_server):
    def gen():
        for i in range(50):
            yield bytes([65 + i % 26]) * 10000

    r = httpx.post(f"{raw_server.url}/upload", content=gen(), timeout=10)
    assert r.status_code == 200
    assert r.json()["bytes"] == 500000


def test_large_content_length_upload(raw_server):
    data = bytes(range(256)) * 8192  # 2 MiB
    r = httpx.post(f"{raw_server.url}/echo", content=data, timeout=10)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["x-body-length"] == str(len(data))


def test_streaming_download(raw_server):
    n = 5 * 1024 * 1024 + 123
    total = 0
    with httpx.stream("GET", f"{raw_server.url}/stream?n={n}", timeout=10) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in r.headers
        for chunk in r.iter_raw():
            total += len(chunk)
    assert total == n


def test_empty_streaming_response(raw_server):
    r = httpx.get(f"{raw_server.url}/stream?n=0", timeout=5)
    assert r.status_code == 200 and r.content == b""


def test_head_has_headers_no_body(raw_server):
    with raw_server.connect() as s:
        reader = ResponseReader(s)
        s.sendall(b"HEAD /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        r = reader.read_response("HEAD")
        assert r.status == 200
        assert r.header("content-length") == "12"
        # The next response on the same connection must come right after the head: no body bytes.
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        r2 = reader.read_response()
        assert r2.status == 200 and r2.body == b"hello, world"


def test_head_streaming(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"HEAD /stream?n=100000 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(s)
        r = reader.read_response("HEAD")
        assert r.status == 200
        r2 = reader.read_response()
        assert r2.body == b"hello, world"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(raw_server, code):
    with raw_server.connect() as s:
        s.sendall(f"GET /status?code={code} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                  + b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(s)
        r = reader.read_response()
        assert r.status == code
        assert r.header("transfer-encoding") is None
        assert reader.read_response().body == b"hello, world"


def test_expect_100_continue_sent_only_on_receive(raw_server):
    with raw_server.connect(timeout=5) as s:
        s.sendall(b"POST /expect?delay=1.0 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        s.settimeout(0.6)
        with pytest.raises(socket.timeout):
            early = s.recv(65536)
            pytest.fail(f"server sent {early!r} before the app called receive()")
        s.settimeout(5)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
        assert buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), buf
        rest = buf[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        s.sendall(b"hello")
        reader = ResponseReader(s)
        reader.buf = rest
        r = reader.read_response()
        assert r.status == 200
        assert json.loads(r.body) == {"bytes": 5, "body": "hello"}


def test_expect_100_continue_not_sent_when_app_does_not_read(raw_server):
    with raw_server.connect(timeout=5) as s:
        s.sendall(b"POST /fixed HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        reader = ResponseReader(s)
        version, status, reason, headers = reader.read_head()
        assert status == 200, "got an interim response although the app never called receive()"


def test_expect_100_continue_curl(raw_server):
    if CURL is None:
        pytest.skip("curl not installed")
    r = subprocess.run([CURL, "-sS", "-m", "10", "-H", "Expect: 100-continue", "--expect100-timeout", "5",
                        "--data-binary", "x" * 2000, "-w", "\n%{http_code}", f"{raw_server.url}/expect"], env=CURL_ENV,
                       capture_output=True, timeout=15)
    body, _, code = r.stdout.rpartition(b"\n")
    assert code == b"200"
    assert json.loads(body)["bytes"] == 2000


def test_server_and_date_headers(raw_server):
    r = httpx.get(f"{raw_server.url}/fixed", timeout=5)
    expected = "uvicorn" if IS_UVICORN else "pronghorn"
    assert r.headers["server"] == expected
    date = parsedate_to_datetime(r.headers["date"])
    assert abs(date.timestamp() - time.time()) < 5
    assert r.headers["date"].endswith(" GMT")


@pytest.mark.parametrize("code", [200, 413, 414, 416, 422, 299])
def test_reason_phrase_is_pythons(raw_server, code):
    """Status lines carry the running Python's http.HTTPStatus phrase, as uvicorn's do
    (Python 3.13 renamed 413, 414, 416 and 422 to RFC 9110's names); none for a code it lacks."""
    import http

    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    r = raw_request(raw_server, f"GET /status?code={code} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert r.status == code
    assert r.reason == phrase


def test_date_header_advances(raw_server):
    """The Date header is cached by the server (formatted once a second), never left stale:
    two responses on one kept-alive connection 2.2 s apart carry dates 2-3 s apart, each
    within a second and a half of the clock."""
    with httpx.Client(timeout=5) as client:
        r1 = client.get(f"{raw_server.url}/fixed")
        t1 = time.time()
        time.sleep(2.2)
        r2 = client.get(f"{raw_server.url}/fixed")
        t2 = time.time()
    d1 = parsedate_to_datetime(r1.headers["date"]).timestamp()
    d2 = parsedate_to_datetime(r2.headers["date"]).timestamp()
    assert 2 <= d2 - d1 <= 3
    assert abs(d1 - t1) < 1.5 and abs(d2 - t2) < 1.5


def test_repeated_response_headers_preserved(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
        r = ResponseReader(s).read_response()
    assert r.header_list("set-cookie") == ["a=1", "b=2"]
    assert r.header("x-mixed-case") == "Value"


def test_app_header_injection_blocked(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = recv_until_closed(s, timeout=5)
        except AssertionError:
            data = b""  # kept open after an error response is not what we check here
    assert b"x-injected" not in data.lower()
    assert httpx.get(f"{raw_server.url}/fixed", timeout=5).status_code == 200


def test_custom_headers_and_switches(server_factory):
    srv = server_factory("apps.raw_app:app", "--header", "x-one:1", "--header", "X-Two: two words",
                         "--no-server-header", "--no-date-header")
    r = httpx.get(f"{srv.url}/fixed", timeout=5)
    assert r.headers["x-one"] == "1"
    assert r.headers["x-two"].strip() == "two words"
    assert "server" not in r.headers
    assert "date" not in r.headers


def test_header_overrides_server(server_factory):
    srv = server_factory("apps.raw_app:app", "--header", "server:custom")
    r = httpx.get(f"{srv.url}/fixed", timeout=5)
    assert r.headers.get_list("server") == ["custom"]


ACCESS_RE = re.compile(r'^INFO:     127\.0\.0\.1:(\d+) - "(\S+) (\S+) HTTP/(1\.[01])" (\d{3}) (.*)$', re.M)


def test_access_log_format(server_factory):
    srv = server_factory("apps.raw_app:app")
    with srv.connect() as s:
        reader = ResponseReader(s)
        s.sendall(b"GET /fixed?x=1&y=%20z HTTP/1.1\r\nHost: x\r\n\r\n")
        reader.read_response()
        s.sendall(b"POST /status?code=404 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        reader.read_response()
        port = s.getsockname()[1]
    srv.wait_for_log(r"404 Not Found", stream="stdout")
    lines = ACCESS_RE.findall(srv.stdout)
    assert lines[0] == (str(port), "GET", "/fixed?x=1&y=%20z", "1.1", "200", "OK"), srv.stdout
    assert lines[1] == (str(port), "POST", "/status?code=404", "1.1", "404", "Not Found"), srv.stdout
    assert len(lines) == 2
    # The access log goes to stdout, not stderr.
    assert not ACCESS_RE.search(srv.stderr)


def test_no_access_log(server_factory):
    srv = server_factory("apps.raw_app:app", "--no-access-log")
    assert httpx.get(f"{srv.url}/fixed", timeout=5).status_code == 200
    assert httpx.get(f"{srv.url}/fixed", timeout=5).status_code == 200
    time.sleep(0.3)
    assert not ACCESS_RE.search(srv.stdout + srv.stderr)


def test_log_level_warning_hides_info(server_factory):
    srv = server_factory("apps.raw_app:app", "--log-level", "warning", wait=False)
    # "running on" is INFO and so is not printed: wait for the port by polling instead.
    time.sleep(2.0)
    assert srv.running
    assert "Started server process" not in srv.stderr
    assert "INFO:" not in srv.stderr


@needs_curl
def test_curl_get(raw_server):
    r = subprocess.run([CURL, "-sS", "-m", "10", "-i", f"{raw_server.url}/fixed"], env=CURL_ENV, capture_output=True, timeout=15)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
    assert r.stdout.endswith(b"\r\n\r\nhello, world")


@needs_curl
def test_curl_chunked_upload(raw_server):
    r = subprocess.run([CURL, "-sS", "-m", "10", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                        f"{raw_server.url}/upload"], env=CURL_ENV, input=b"z" * 300000, capture_output=True, timeout=15)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["bytes"] == 300000


@needs_curl
def test_curl_keepalive_two_urls(raw_server):
    r = subprocess.run([CURL, "-sS", "-m", "10", "-v", f"{raw_server.url}/fixed", f"{raw_server.url}/fixed"], env=CURL_ENV,
                       capture_output=True, timeout=15)
    assert r.returncode == 0
    assert r.stdout == b"hello, world" * 2
    assert re.search(rb"Re-using existing|reusing connection", r.stderr, re.I), r.stderr.decode()


@needs_curl
def test_curl_head(raw_server):
    r = subprocess.run([CURL, "-sS", "-m", "10", "-I", f"{raw_server.url}/fixed"], env=CURL_ENV, capture_output=True, timeout=15)
    assert r.returncode == 0, r.stderr
    assert b"content-length: 12" in r.stdout.lower()
    assert not r.stdout.rstrip().endswith(b"hello, world")


def test_keep_alive_timeout_closes_idle(server_factory):
    srv = server_factory("apps.raw_app:app", "--timeout-keep-alive", "1")
    with srv.connect() as s:
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        ResponseReader(s).read_response()
        t0 = time.monotonic()
        assert is_closed(s, timeout=5)
        elapsed = time.monotonic() - t0
    assert 0.5 < elapsed < 3.5, elapsed


def test_default_keep_alive_timeout_is_5s(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        ResponseReader(s).read_response()
        t0 = time.monotonic()
        assert not is_closed(s, timeout=3.5), "closed before the 5 s keep-alive timeout"
        assert is_closed(s, timeout=4)
        elapsed = time.monotonic() - t0
    assert 4 < elapsed < 7.5, elapsed


def test_ipv6_loopback(server_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", 0))
    except OSError:
        pytest.skip("::1 not available")
    srv = server_factory("apps.raw_app:app", host="::1")
    assert srv.host == "::1", srv.bound
    r = httpx.get(f"{srv.url}/scope", timeout=5)
    assert r.json()["client"][0] == "::1"
    assert r.json()["server"][0] == "::1"
