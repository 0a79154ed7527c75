"""The ASGI HTTP connection scope the server builds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import httpx
import pytest

from conftest import IS_UVICORN, ResponseReader


def _scope(srv, raw: bytes) -> dict:
    with srv.connect() as s:
        s.sendall(raw)
        r = ResponseReader(s).read_response()
        assert r.status == 200, r
        d = json.loads(r.body)
        d["__sock__"] = s.getsockname()
    return d


def _b(x):
    assert isinstance(x, dict) and "__bytes__" in x, f"expected bytes, got {x!r}"
    return x["__bytes__"].encode("latin-1")


def test_scope_keys_and_types(raw_server):
    d = _scope(raw_server, b"GET /scope?a=1&b=%20 HTTP/1.1\r\nHost: example.com:1234\r\nX-Custom-Header: Val\r\n\r\n")
    required = {"type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "query_string",
                "root_path", "headers", "client", "server"}
    assert required <= set(d["__types__"]), d["__types__"]
    assert d["type"] == "http"
    assert d["asgi"]["version"] == "3.0"
    # uvicorn's: Starlette listens for http.disconnect, and a send after the client left is dropped.
    assert d["asgi"]["spec_version"] == "2.3"
    assert "extensions" not in d["__types__"]  # uvicorn's scope has none; pathsend is an option
    assert d["http_version"] == "1.1"
    assert d["method"] == "GET"
    assert d["scheme"] == "http"
    assert d["root_path"] == ""
    assert d["__types__"]["raw_path"] == "bytes"
    assert d["__types__"]["query_string"] == "bytes"
    assert d["__types__"]["path"] == "str"
    assert d["__types__"]["headers"] in ("list", "tuple")
    assert d["__header_types__"] == ["bytes,bytes"]
    assert _b(d["query_string"]) == b"a=1&b=%20"
    assert d["client"] == ["127.0.0.1", d["__sock__"][1]]
    assert d["__types__"]["client"] in ("list", "tuple")
    assert d["server"] == ["127.0.0.1", raw_server.port]
    assert d["__has_state__"] is True


def test_headers_lowercased_in_order(raw_server):
    d = _scope(raw_server, b"GET /scope HTTP/1.1\r\nHost: h\r\nX-Custom-Header: Mixed Case Value\r\n"
                           b"Accept: a\r\nAccept: b\r\nX-Empty:\r\nX-Spaces:   padded\r\n\r\n")
    headers = [(_b(k), _b(v)) for k, v in d["headers"]]
    assert headers == [(b"host", b"h"), (b"x-custom-header", b"Mixed Case Value"), (b"accept", b"a"),
                       (b"accept", b"b"), (b"x-empty", b""), (b"x-spaces", b"padded")]


def test_obs_text_header_value_passed_as_bytes(raw_server):
    d = _scope(raw_server, b"GET /scope HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9 \xff\r\n\r\n")
    headers = [(_b(k), _b(v)) for k, v in d["headers"]]
    assert (b"x-latin", b"caf\xe9 \xff") in headers


@pytest.mark.pronghorn_only  # httptools keeps trailing whitespace in header values
def test_header_value_trailing_whitespace_stripped(raw_server):
    d = _scope(raw_server, b"GET /scope HTTP/1.1\r\nHost: h\r\nX-Spaces: \t padded \t \r\n\r\n")
    headers = [(_b(k), _b(v)) for k, v in d["headers"]]
    assert headers[1] == (b"x-spaces", b"padded")


def test_path_percent_decoded_raw_path_not(raw_server):
    d = _scope(raw_server, b"GET /scope/caf%C3%A9/a%20b/%2F/x+y?q=%C3%A9&r=a+b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert d["path"] == "/scope/caf\u00e9/a b///x+y"
    assert _b(d["raw_path"]) == b"/scope/caf%C3%A9/a%20b/%2F/x+y"
    assert _b(d["query_string"]) == b"q=%C3%A9&r=a+b"


def test_empty_query_string(raw_server):
    d = _scope(raw_server, b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _b(d["query_string"]) == b""
    assert _b(d["raw_path"]) == b"/scope"


def test_http10_scope(raw_server):
    d = _scope(raw_server, b"GET /scope HTTP/1.0\r\n\r\n")
    assert d["http_version"] == "1.0"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"])
def test_methods(raw_server, method):
    d = _scope(raw_server, f"{method} /scope HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".encode())
    assert d["method"] == method
    assert d["__body_length__"] == 3


def test_absolute_form_target(raw_server):
    d = _scope(raw_server, b"GET http://example.com/scope?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert d["path"] == "/scope"
    assert _b(d["query_string"]) == b"x=1"


def test_root_path_option(server_factory):
    srv = server_factory("apps.raw_app:app", "--root-path", "/api/v1")
    d = _scope(srv, b"GET /scope?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert d["root_path"] == "/api/v1"
    # Per the ASGI spec (and uvicorn >= 0.26) path and raw_path include root_path.
    assert d["path"] == "/api/v1/scope"
    assert _b(d["raw_path"]) == b"/api/v1/scope"
    assert _b(d["query_string"]) == b"x=1"


def test_root_path_fastapi(server_factory, tmp_path):
    srv = server_factory("apps.fastapi_app:app", "--root-path", "/prefix", env={"PRONGHORN_TEST_WORKDIR": str(tmp_path)})
    r = httpx.get(f"{srv.url}/root-path", timeout=5)
    assert r.status_code == 200
    assert r.json()["root_path"] == "/prefix"
    assert r.json()["url"].endswith("/prefix/root-path")


def test_lifespan_state_shallow_copy(server_factory):
    srv = server_factory("apps.raw_app:app")
    r1 = httpx.get(f"{srv.url}/state", timeout=5).json()
    r2 = httpx.get(f"{srv.url}/state", timeout=5).json()
    r3 = httpx.get(f"{srv.url}/state", timeout=5).json()
    assert r1 == {"started_by": "raw-app", "hits": 0, "per_request_seen": False}
    # Keys added to one request's state do not leak (copy) but the shared list is shared (shallow).
    assert r2 == {"started_by": "raw-app", "hits": 1, "per_request_seen": False}
    assert r3["hits"] == 2 and r3["per_request_seen"] is False


@pytest.mark.pronghorn_only
def test_pathsend_extension_offered_only_with_the_option(server_factory):
    srv = server_factory("apps.raw_app:app", "--asgi-pathsend")
    d = _scope(srv, b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "http.response.pathsend" in d.get("extensions", {}), d.get("extensions")


@pytest.mark.pronghorn_only
def test_asgi_spec_version_option(server_factory):
    srv = server_factory("apps.raw_app:app", "--asgi-spec-version", "2.4")
    d = _scope(srv, b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert d["asgi"]["spec_version"] == "2.4"


def test_pathsend_or_fallback_serves_file(raw_server, tmp_path):
    f = tmp_path / "blob.bin"
    data = bytes(range(256)) * 4000 + b"tail"
    f.write_bytes(data)
    r = httpx.get(f"{raw_server.url}/pathsend", params={"path": str(f)}, timeout=10)
    assert r.status_code == 200
    assert r.content == data


@pytest.mark.pronghorn_only
def test_pathsend_goes_through_sendfile(server_factory, tmp_path):
    """http.response.pathsend is sent from the file by sendfile(2), not read into memory and
    written: every byte of the body is accounted for by sendfile calls (strace -f sees the send
    thread too), and the bytes on the wire are the file's."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    srv = server_factory("apps.raw_app:app", "--asgi-pathsend")
    f = tmp_path / "blob.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    f.write_bytes(data)
    trace = tmp_path / "strace.txt"
    tracer = subprocess.Popen(["strace", "-f", "-e", "trace=sendfile", "-o", str(trace), "-p", str(srv.proc.pid)],
                              stderr=subprocess.PIPE, text=True)
    try:
        # strace says "Process N attached" once it is tracing; the request must come after.
        line = tracer.stderr.readline()
        if "attached" not in line:
            pytest.skip(f"strace cannot trace here: {line.strip()}")
        r = httpx.get(f"{srv.url}/pathsend", params={"path": str(f)}, timeout=30)
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    assert r.status_code == 200
    assert r.content == data
    # A call interrupted by another thread's line ends on a "<... sendfile resumed>" line.
    sent = [int(m.group(1)) for m in re.finditer(r"sendfile.*\) = (\d+)$", trace.read_text(), re.M)]
    assert sent, trace.read_text()[-2000:]
    assert sum(sent) == len(data)


PROXY_REQ = (b"GET /scope HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n"
             b"X-Forwarded-Proto: https\r\n\r\n")


def test_proxy_headers_trusted_from_loopback(raw_server):
    d = _scope(raw_server, PROXY_REQ)
    # 10.0.0.1 is the nearest hop but is not trusted itself, so it is the client.
    assert d["client"][0] == "10.0.0.1"
    assert d["scheme"] == "https"


def test_proxy_headers_trust_all(server_factory):
    srv = server_factory("apps.raw_app:app", "--forwarded-allow-ips", "*")
    d = _scope(srv, PROXY_REQ)
    assert d["client"][0] == "203.0.113.7"
    assert d["scheme"] == "https"


def test_proxy_headers_untrusted_peer(server_factory):
    srv = server_factory("apps.raw_app:app", "--forwarded-allow-ips", "10.1.2.3")
    d = _scope(srv, PROXY_REQ)
    assert d["client"] == ["127.0.0.1", d["__sock__"][1]]
    assert d["scheme"] == "http"


def test_no_proxy_headers(server_factory):
    srv = server_factory("apps.raw_app:app", "--no-proxy-headers")
    d = _scope(srv, PROXY_REQ)
    assert d["client"][0] == "127.0.0.1"
    assert d["scheme"] == "http"


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_access_log_names_the_forwarded_client(server_factory, trusted):
    """As uvicorn (whose access log reads the scope's client): the access line of a request from a
    trusted proxy names the X-Forwarded-For client, with port 0, over HTTP/1.1, HTTP/2 and for a
    WebSocket handshake; from an untrusted peer, the peer."""
    import asyncio

    import httpx
    from websockets.asyncio.client import connect
    allow = "127.0.0.1" if trusted else "10.1.2.3"
    srv = server_factory("apps.raw_app:app", "--forwarded-allow-ips", allow, "--http2")
    ws_srv = server_factory("apps.ws_app:raw", "--forwarded-allow-ips", allow)
    headers = {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        assert c.get("/fixed", headers=headers).status_code == 200
    with httpx.Client(base_url=srv.url, http1=False, http2=True, timeout=5) as c:
        assert c.get("/fixed?h2", headers=headers).http_version == "HTTP/2"

    async def ws():
        async with connect(f"ws://127.0.0.1:{ws_srv.port}/echo", additional_headers=headers) as conn:
            await conn.send("x")
            assert await conn.recv() == "x"

    asyncio.run(ws())
    who = r"203\.0\.113\.7:0" if trusted else r"127\.0\.0\.1:[1-9]\d*"
    srv.wait_for_log(rf'{who} - "GET /fixed HTTP/1\.1" 200', timeout=5, stream="stdout")
    srv.wait_for_log(rf'{who} - "GET /fixed\?h2 HTTP/2" 200', timeout=5, stream="stdout")
    ws_srv.wait_for_log(rf'{who} - "WebSocket /echo" \[accepted\]', timeout=5)
