"""Malformed and hostile input: 4xx responses, request smuggling, limits, slow clients."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from conftest import IS_UVICORN, ResponseReader, is_closed, recv_until_closed


def _expect_error_and_close(srv, data: bytes, status: int = 400, timeout: float = 5.0) -> bytes:
    with srv.connect(timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = recv_until_closed(s, timeout)
    assert resp.startswith(f"HTTP/1.1 {status} ".encode()), resp[:300]
    head = resp.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nconnection: close" in head, head
    # The server still serves the next client.
    r = httpx.get(f"{srv.url}/fixed", timeout=5)
    assert r.status_code == 200
    return resp


BAD_REQUESTS = {
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    "no_version": b"GET /\r\n\r\n",
    "bad_version": b"GET / HTTP/1.x\r\nHost: x\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "header_no_colon": b"GET / HTTP/1.1\r\nHost: x\r\nBadHeader\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "bad_header_name_char": b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Name: y\r\n\r\n",
    "nul_in_header_value": b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    "bad_content_length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "negative_content_length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "bad_chunk_size": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_missing_crlf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_400(raw_server, name):
    if IS_UVICORN and name in UVICORN_LENIENT:
        pytest.skip("uvicorn/httptools accepts this; pronghorn must not")
    _expect_error_and_close(raw_server, BAD_REQUESTS[name])


# Request smuggling: every ambiguous framing is rejected with 400 and the connection is closed,
# so a smuggled second request can never be interpreted. The trailing "GET /smuggled" would
# produce a 404 if the server misparsed the framing.
SMUGGLE = {
    "cl_and_te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "te_and_cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n"
                 b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    "duplicate_cl_different": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\n"
                              b"helloGET /smuggled HTTP/1.1\r\n\r\n",
    "cl_list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 30\r\n\r\nhelloGET /smuggled HTTP/1.1\r\n\r\n",
    "cl_plus_sign": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
    "cl_hex": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
    "te_not_chunked_last": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                           b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "te_unknown": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n0\r\n\r\n",
    "te_obfuscated_space": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te_obfuscated_xchunked": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n"
                              b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "te_vertical_tab": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "te_chunked_twice": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "bare_lf_in_headers": b"POST /echo HTTP/1.1\r\nHost: x\nContent-Length: 5\r\n\r\nhello",
    "bare_cr_in_header": b"GET / HTTP/1.1\r\nHost: x\rX-Injected: 1\r\n\r\n",
    "chunk_size_overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"ffffffffffffffffff1\r\nhello\r\n0\r\n\r\n",
    "chunk_size_negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk_bare_lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    "http10_te_chunked": b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    "null_in_chunk_ext": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x00\r\nhello\r\n0\r\n\r\n",
    "space_in_method": b"G ET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "leading_space_header": b"GET / HTTP/1.1\r\n Host: x\r\nContent-Length: 0\r\n\r\n",
}

# Cases where llhttp/httptools (uvicorn's parser) is lenient; pronghorn must still reject them.
UVICORN_LENIENT = {"no_version", "te_obfuscated_xchunked", "te_not_chunked_last", "te_unknown", "http10_te_chunked",
                   "te_chunked_twice", "bare_lf_in_headers", "chunk_bare_lf", "leading_space_header",
                   "cl_plus_sign"}


@pytest.mark.parametrize("name", list(SMUGGLE))
def test_smuggling_rejected(raw_server, name):
    if IS_UVICORN and name in UVICORN_LENIENT:
        pytest.skip("uvicorn/httptools accepts this framing; pronghorn must not")
    resp = _expect_error_and_close(raw_server, SMUGGLE[name])
    assert b"404" not in resp and b"smuggled" not in resp


# Found accepted by a hostile-client battery (issue 14): each gets 400 before the app runs.
STRICT = {
    "cl_trailing_comma": b"POST /strict HTTP/1.1\r\nHost: x\r\nContent-Length: 3,\r\n\r\nabc",
    "cl_leading_comma": b"POST /strict HTTP/1.1\r\nHost: x\r\nContent-Length: ,3\r\n\r\nabc",
    "chunk_size_then_space": b"POST /strict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5 \r\nhello\r\n0\r\n\r\n",
    "trailer_without_colon": b"POST /strict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\nX-Trailer\r\n\r\n",
    "host_space": b"GET /strict HTTP/1.1\r\nHost: a b\r\n\r\n",
    "host_userinfo_path": b"GET /strict HTTP/1.1\r\nHost: a@b/c\r\n\r\n",
    "host_list": b"GET /strict HTTP/1.1\r\nHost: a, b\r\n\r\n",
    "host_tab": b"GET /strict HTTP/1.1\r\nHost: a\tb\r\n\r\n",
    "host_slash": b"GET /strict HTTP/1.1\r\nHost: a/b\r\n\r\n",
}


@pytest.mark.pronghorn_only
@pytest.mark.parametrize("name", list(STRICT))
def test_strict_framing_and_host_400(raw_server, name):
    _expect_error_and_close(raw_server, STRICT[name])
    time.sleep(0.3)  # the access log is written in batches
    assert "/strict" not in raw_server.stdout, "the app was called"
    assert "Invalid HTTP request received" in raw_server.stderr


@pytest.mark.pronghorn_only
def test_connect_405(raw_server):
    resp = _expect_error_and_close(raw_server, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                                   status=405)
    assert b"Method Not Allowed" in resp
    assert b"\r\nallow: GET, HEAD, POST" in resp  # RFC 9110 §15.5.6


@pytest.mark.pronghorn_only
def test_head_of_bare_crs_answered_at_once(raw_server):
    t0 = time.monotonic()
    _expect_error_and_close(raw_server, b"GET /strict HTTP/1.1\rHost: x\r\r", timeout=3)
    assert time.monotonic() - t0 < 2.0  # not the 10 s header timeout


@pytest.mark.pronghorn_only
@pytest.mark.parametrize("data", [b"\0" * 24, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"], ids=["nuls", "tls_hello"])
def test_binary_without_newline_answered_at_once(raw_server, data):
    # No newline ever comes: the method's bytes alone show the request is bad
    # (httptools answers these at once too), not the 10 s header timeout.
    t0 = time.monotonic()
    _expect_error_and_close(raw_server, data, timeout=3)
    assert time.monotonic() - t0 < 2.0


@pytest.mark.pronghorn_only
def test_http2_request_line_505(raw_server):
    _expect_error_and_close(raw_server, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", status=505)


@pytest.mark.pronghorn_only
def test_http2_preface_rejected(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        resp = recv_until_closed(s)
    assert resp.startswith(b"HTTP/1.1 505 ") or resp.startswith(b"HTTP/1.1 400 ") or resp == b""


@pytest.mark.pronghorn_only
def test_request_line_too_long_414(raw_server):
    _expect_error_and_close(raw_server, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", status=414)


@pytest.mark.pronghorn_only
def test_request_line_at_limit_ok(raw_server):
    # "GET " + path + " HTTP/1.1" is exactly 8192 bytes: accepted.
    path = b"/" + b"a" * (8192 - len(b"GET ") - len(b" HTTP/1.1") - 1)
    line = b"GET " + path + b" HTTP/1.1"
    assert len(line) == 8192
    with raw_server.connect() as s:
        s.sendall(line + b"\r\nHost: x\r\n\r\n")
        r = ResponseReader(s).read_response()
    assert r.status == 404


@pytest.mark.pronghorn_only
def test_limit_request_line_option(server_factory):
    srv = server_factory("apps.raw_app:app", "--limit-request-line", "100")
    _expect_error_and_close(srv, b"GET /" + b"a" * 120 + b" HTTP/1.1\r\nHost: x\r\n\r\n", status=414)
    r = httpx.get(f"{srv.url}/" + "a" * 50, timeout=5)
    assert r.status_code == 404


@pytest.mark.pronghorn_only
def test_request_head_too_big_431(raw_server):
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))  # ~70 KB, 70 fields
    _expect_error_and_close(raw_server, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", status=431)


@pytest.mark.pronghorn_only
def test_too_many_header_fields_431(raw_server):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
    _expect_error_and_close(raw_server, b"GET / HTTP/1.1\r\n" + headers + b"\r\n", status=431)


@pytest.mark.pronghorn_only
def test_header_fields_at_limit_ok(raw_server):
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(99))
    with raw_server.connect() as s:
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert ResponseReader(s).read_response().status == 200


@pytest.mark.pronghorn_only
def test_limit_request_fields_and_head_options(server_factory):
    # (the head limit may not be below the request-line limit, so lower both)
    srv = server_factory("apps.raw_app:app", "--limit-request-fields", "5", "--limit-request-line", "1024",
                         "--limit-request-head", "2048")
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(6))
    _expect_error_and_close(srv, b"GET /fixed HTTP/1.1\r\n" + headers + b"\r\n", status=431)
    _expect_error_and_close(srv, b"GET /fixed HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 3000 + b"\r\n\r\n",
                            status=431)
    r = httpx.get(f"{srv.url}/fixed", timeout=5)  # httpx sends 5 headers
    assert r.status_code == 200


def test_limit_concurrency_503(server_factory):
    limit = 2
    srv = server_factory("apps.raw_app:app", "--limit-concurrency", str(limit))
    # One slow request is always within the limit.
    first = srv.connect(timeout=10)
    first.sendall(b"GET /sleep?s=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.3)
    # More concurrent slow requests: beyond the limit they are answered 503 at once.
    # (uvicorn counts open connections too, so it may reject earlier than pronghorn; both
    # must reject at least one and admit at most limit - 1 of these.)
    extras = []
    for _ in range(3):
        s = srv.connect(timeout=10)
        s.sendall(b"GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        extras.append(s)
        time.sleep(0.1)
    statuses = []
    for s in extras:
        statuses.append(ResponseReader(s, 10).read_response().status)
        s.close()
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1, statuses
    assert statuses.count(200) <= limit - 1, statuses
    assert ResponseReader(first, 10).read_response().status == 200
    first.close()
    time.sleep(0.3)
    assert httpx.get(f"{srv.url}/fixed", timeout=5).status_code == 200


@pytest.mark.pronghorn_only
def test_header_read_timeout_slowloris(server_factory):
    srv = server_factory("apps.raw_app:app", "--timeout-header-read", "1")
    with srv.connect(timeout=10) as s:
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        # Trickle a header byte every 0.3 s: still must be cut off ~1 s after the request started.
        data = b""
        closed = False
        for _ in range(20):
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            s.settimeout(0.3)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
        elapsed = time.monotonic() - t0
    assert closed or data, "slowloris connection never cut off"
    assert elapsed < 3.5, elapsed
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data


@pytest.mark.pronghorn_only
def test_header_read_timeout_default_10s_not_before(raw_server):
    with raw_server.connect(timeout=5) as s:
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n")
        assert not is_closed(s, timeout=2.5)
        s.sendall(b"\r\n")
        assert ResponseReader(s).read_response().status == 200


@pytest.mark.pronghorn_only  # uvicorn never times out a connection that sends nothing
def test_idle_connection_without_request_closed_eventually(server_factory):
    # A connection that never sends anything must not be held forever.
    srv = server_factory("apps.raw_app:app", "--timeout-keep-alive", "1", "--timeout-header-read", "1")
    with srv.connect(timeout=10) as s:
        t0 = time.monotonic()
        assert is_closed(s, timeout=8)
        assert time.monotonic() - t0 < 6


def test_many_concurrent_connections(raw_server):
    results = []

    def worker():
        try:
            with httpx.Client(timeout=10) as c:
                for _ in range(5):
                    results.append(c.get(f"{raw_server.url}/fixed").status_code)
        except Exception as e:  # noqa: BLE001
            results.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [200] * 100
