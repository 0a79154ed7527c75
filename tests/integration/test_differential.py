"""Differential test: the same apps served by uvicorn and by pronghorn must answer alike.

Every request is sent as raw bytes on a fresh connection to both servers. Status line,
headers (as a lowercased name/value multiset, without date and server) and body must match.
Intended differences are listed per case in ``ignore`` with the reason.

Under PRONGHORN_TEST_SERVER=uvicorn both sides are uvicorn, which checks that the cases
themselves are deterministic.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import pytest

from conftest import SERVER_KIND, ResponseReader, ServerProcess

H = b"Host: testserver\r\n"


@dataclass
class Case:
    id: str
    app: str  # "raw" or "fastapi"
    request: bytes
    method: str = "GET"
    ignore: set[str] = field(default_factory=set)  # header names excluded from the comparison, with a reason
    normalize: Callable[[bytes], object] | None = None  # body -> comparable value


def _req(line: str, headers: bytes = b"", body: bytes = b"") -> bytes:
    return line.encode() + b"\r\n" + H + headers + b"\r\n" + body


def _chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _scope_norm(body: bytes):
    d = json.loads(body)
    # The client port and the listening port necessarily differ between the two servers.
    d.pop("client", None)
    d.pop("server", None)
    # pronghorn offers http.response.pathsend; uvicorn offers no extensions.
    d.pop("extensions", None)
    d.get("__types__", {}).pop("extensions", None)
    d.pop("asgi", None)  # spec_version may legitimately differ
    return d


MULTIPART = (b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
             b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\n"
             b"Content-Type: application/octet-stream\r\n\r\n" + b"\x00\x01" * 1000 + b"\r\n--XyZ--\r\n")

CASES = [
    # ---- raw ASGI app
    Case("raw-get", "raw", _req("GET /fixed HTTP/1.1")),
    Case("raw-query", "raw", _req("GET /fixed?x=1&y=%20&z HTTP/1.1")),
    Case("raw-post-cl", "raw", _req("POST /echo HTTP/1.1", b"Content-Type: text/plain\r\nContent-Length: 11\r\n",
                                    b"hello world")),
    Case("raw-post-chunked", "raw", _req("POST /echo HTTP/1.1", b"Transfer-Encoding: chunked\r\n",
                                         _chunked(b"abc", b"def" * 1000, b"g"))),
    Case("raw-put-empty", "raw", _req("PUT /echo HTTP/1.1", b"Content-Length: 0\r\n")),
    Case("raw-head", "raw", _req("HEAD /fixed HTTP/1.1"), method="HEAD"),
    Case("raw-head-stream", "raw", _req("HEAD /stream?n=1000 HTTP/1.1"), method="HEAD"),
    Case("raw-stream", "raw", _req("GET /stream?n=200000 HTTP/1.1")),
    Case("raw-stream-empty", "raw", _req("GET /stream?n=0 HTTP/1.1")),
    Case("raw-404-encoded", "raw", _req("GET /no%20such/p%C3%A5th HTTP/1.1")),
    Case("raw-dup-headers", "raw", _req("GET /headers HTTP/1.1")),
    Case("raw-redirect", "raw", _req("GET /redirect HTTP/1.1")),
    Case("raw-204", "raw", _req("GET /status?code=204 HTTP/1.1")),
    Case("raw-304", "raw", _req("GET /status?code=304 HTTP/1.1")),
    Case("raw-418", "raw", _req("GET /status?code=418 HTTP/1.1")),
    Case("raw-delete-202", "raw", _req("DELETE /status?code=202 HTTP/1.1")),
    Case("raw-500-raise", "raw", _req("GET /raise-before HTTP/1.1")),
    Case("raw-500-noresponse", "raw", _req("GET /no-response HTTP/1.1")),
    Case("raw-scope-encoded", "raw", _req("GET /scope/caf%C3%A9/%2F?q=%E2%9C%93&a=b+c HTTP/1.1",
                                          b"X-Test: Mixed Case\r\nAccept: */*\r\n"), normalize=_scope_norm),
    Case("raw-scope-post", "raw", _req("POST /scope HTTP/1.1", b"Content-Length: 4\r\n", b"data"),
         normalize=_scope_norm),
    Case("raw-options", "raw", _req("OPTIONS /echo HTTP/1.1", b"Content-Length: 3\r\n", b"opt")),
    Case("raw-upload-chunked", "raw", _req("POST /upload HTTP/1.1", b"Transfer-Encoding: chunked\r\n",
                                           _chunked(*[b"u" * 10000] * 10))),
    Case("raw-connection-close", "raw", _req("GET /fixed HTTP/1.1", b"Connection: close\r\n")),
    Case("raw-http10", "raw", b"GET /fixed HTTP/1.0\r\n\r\n"),
    # Intended difference: pronghorn supports HTTP/1.0 keep-alive and answers
    # "connection: keep-alive"; uvicorn always closes HTTP/1.0 connections ("connection: close").
    Case("raw-http10-keepalive", "raw", b"GET /fixed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
         ignore={"connection"}),
    Case("raw-expect-100", "raw", _req("POST /expect HTTP/1.1", b"Content-Length: 4\r\nExpect: 100-continue\r\n",
                                       b"body")),
    # ---- FastAPI app
    Case("fa-root", "fastapi", _req("GET / HTTP/1.1")),
    Case("fa-path-query", "fastapi", _req("GET /items/42?q=a%20b&limit=3 HTTP/1.1")),
    Case("fa-path-param-encoded", "fastapi", _req("GET /files/a%20b/c%2Fd.txt HTTP/1.1")),
    Case("fa-422-path", "fastapi", _req("GET /items/abc HTTP/1.1")),
    Case("fa-post-json", "fastapi", _req("POST /items HTTP/1.1", b"Content-Type: application/json\r\n"
                                         b"Content-Length: 42\r\n", b'{"name": "x", "price": 2.5, "tags": ["a"]}')),
    Case("fa-post-json-chunked", "fastapi", _req("POST /items HTTP/1.1", b"Content-Type: application/json\r\n"
                                                 b"Transfer-Encoding: chunked\r\n",
                                                 _chunked(b'{"name": "y", ', b'"price": 1}'))),
    Case("fa-422-body", "fastapi", _req("POST /items HTTP/1.1", b"Content-Type: application/json\r\n"
                                        b"Content-Length: 5\r\n", b"{bad}")),
    Case("fa-put", "fastapi", _req("PUT /items/7 HTTP/1.1", b"Content-Type: application/json\r\nContent-Length: 27\r\n",
                                   b'{"name": "saw", "price": 1}')),
    Case("fa-delete-204", "fastapi", _req("DELETE /items/3 HTTP/1.1")),
    Case("fa-http-exception", "fastapi", _req("GET /missing/5 HTTP/1.1")),
    Case("fa-418", "fastapi", _req("GET /teapot HTTP/1.1")),
    Case("fa-404", "fastapi", _req("GET /no/such/route HTTP/1.1")),
    Case("fa-405", "fastapi", _req("POST / HTTP/1.1", b"Content-Length: 0\r\n")),
    Case("fa-stream", "fastapi", _req("GET /stream?n=50 HTTP/1.1")),
    Case("fa-file", "fastapi", _req("GET /file HTTP/1.1")),
    Case("fa-file-range", "fastapi", _req("GET /file HTTP/1.1", b"Range: bytes=100-199\r\n")),
    Case("fa-file-head", "fastapi", _req("HEAD /file HTTP/1.1"), method="HEAD"),
    Case("fa-redirect", "fastapi", _req("GET /redirect HTTP/1.1")),
    Case("fa-sync", "fastapi", _req("GET /sync?x=3 HTTP/1.1")),
    Case("fa-state", "fastapi", _req("GET /state HTTP/1.1")),
    Case("fa-plain", "fastapi", _req("GET /plain HTTP/1.1")),
    Case("fa-500", "fastapi", _req("GET /raise HTTP/1.1")),
    Case("fa-form", "fastapi", _req("POST /form HTTP/1.1", b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
                                    b"Content-Length: %d\r\n" % len(MULTIPART), MULTIPART)),
    Case("fa-head-json", "fastapi", _req("HEAD / HTTP/1.1"), method="HEAD"),
]

EXCLUDED_HEADERS = {"date", "server"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """{(kind, app): ServerProcess} for the reference (uvicorn) and the server under test."""
    workdir = tmp_path_factory.mktemp("diff-work")  # shared, so FileResponse etags match
    logs = tmp_path_factory.mktemp("diff-logs")
    kinds = {"reference": "uvicorn", "candidate": SERVER_KIND}
    apps = {"raw": "apps.raw_app:app", "fastapi": "apps.fastapi_app:app"}
    started = {}
    try:
        for role, kind in kinds.items():
            for name, app in apps.items():
                srv = ServerProcess(app, log_dir=logs, kind=kind, name=f"{role}-{name}",
                                    env={"PRONGHORN_TEST_WORKDIR": str(workdir)})
                started[(role, name)] = srv.start()
        # The FastAPI lifespan (re)writes the static file at startup; touch nothing after this.
        yield started
    finally:
        for srv in started.values():
            if srv.running:
                srv.stop()


def _fetch(srv: ServerProcess, case: Case):
    with srv.connect(timeout=10) as s:
        s.sendall(case.request)
        r = ResponseReader(s, 10).read_response(case.method)
    headers = Counter((k, v) for k, v in r.headers if k not in EXCLUDED_HEADERS | case.ignore)
    # Different servers may frame a streamed body in different chunk sizes; the de-chunked
    # body is compared, and the framing headers themselves are compared above.
    body = case.normalize(r.body) if case.normalize else r.body
    if case.normalize:
        headers = Counter({k: n for k, n in headers.items() if k[0] != "content-length"})
    return (r.version, r.status, r.reason), headers, body


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_response(servers, case):
    ref = _fetch(servers[("reference", case.app)], case)
    got = _fetch(servers[("candidate", case.app)], case)
    assert got[0] == ref[0], f"status line differs: uvicorn={ref[0]} {SERVER_KIND}={got[0]}"
    assert got[1] == ref[1], (f"headers differ:\n  only uvicorn: {dict(ref[1] - got[1])}\n"
                              f"  only {SERVER_KIND}: {dict(got[1] - ref[1])}")
    assert got[2] == ref[2], f"body differs: uvicorn={str(ref[2])[:300]} {SERVER_KIND}={str(got[2])[:300]}"


def test_case_count():
    # The differential list must stay broad.
    assert len(CASES) >= 30
    assert {c.app for c in CASES} == {"raw", "fastapi"}
