"""HTTP/2 (issue 12): the installed server with --http2, against httpx (http2=True) over TLS
(ALPN) and h2c with prior knowledge, curl --http2 / --http2-prior-knowledge, nghttp (Debian's
nghttp2-client), and the `h2` library for many streams on one connection and hand-made frames."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from conftest import client_env, expected_signal_exit
from test_tls import _client_context, _tls_args, certs  # noqa: F401  (certs: the fixture)

pytestmark = pytest.mark.pronghorn_only  # uvicorn has no HTTP/2

RAW = "apps.raw_app:app"


def _h2c(srv) -> httpx.Client:
    return httpx.Client(http1=False, http2=True, timeout=10, base_url=srv.url)


class H2:
    """One client connection driven by the `h2` library (no flow-control surprises: what it
    receives is acknowledged at once)."""

    def __init__(self, srv, **settings):
        self.sock = socket.create_connection(srv.addr, timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.responses: dict[int, dict] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, method: str = "GET", body: bytes | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "localhost")]
        self.conn.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.responses[sid] = {"status": None, "headers": {}, "body": b"", "ended": False, "reset": None}
        self.flush()
        return sid

    def pump(self, until, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not until() and not self.closed:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                raise AssertionError("timed out waiting on the HTTP/2 connection") from None
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                break
            for event in self.conn.receive_data(data):
                r = self.responses.get(getattr(event, "stream_id", 0))
                if isinstance(event, h2.events.ResponseReceived):
                    r["headers"] = dict(event.headers)
                    r["status"] = int(r["headers"][":status"])
                elif isinstance(event, h2.events.DataReceived):
                    r["body"] += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    r["ended"] = True
                elif isinstance(event, h2.events.StreamReset) and r is not None:
                    r["reset"] = event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.terminated = event
            try:
                self.flush()
            except OSError:
                self.closed = True

    def all_ended(self) -> bool:
        return all(r["ended"] or r["reset"] is not None for r in self.responses.values())

    def close(self) -> None:
        self.sock.close()


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def _frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The whole frames in `data`, as (type, flags, stream ID, payload)."""
    out, at = [], 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        if at + 9 + length > len(data):
            break
        out.append((data[at + 3], data[at + 4], int.from_bytes(data[at + 5:at + 9], "big") & 0x7FFFFFFF,
                    data[at + 9:at + 9 + length]))
        at += 9 + length
    return out


def _goaway_error(data: bytes) -> int | None:
    for kind, _, _, payload in _frames(data):
        if kind == 0x7:
            return int.from_bytes(payload[4:8], "big")
    return None


# -- clients -----------------------------------------------------------------------------------


def test_h2c_prior_knowledge_with_httpx_scope_and_body(server_factory):
    srv = server_factory(RAW, "--http2")
    with _h2c(srv) as client:
        r = client.get("/scope?x=1")
        assert r.http_version == "HTTP/2"
        scope = r.json()
        assert scope["http_version"] == "2"
        assert scope["scheme"] == "http"
        assert scope["path"] == "/scope" and scope["query_string"] == {"__bytes__": "x=1"}
        # :authority becomes the host header, first.
        assert scope["headers"][0] == [{"__bytes__": "host"}, {"__bytes__": f"127.0.0.1:{srv.port}"}]
        body = b"x" * 300_000  # over the 64 KiB window: the app's reads open it
        r = client.post("/echo", content=body)
        assert r.http_version == "HTTP/2" and r.content == body
        r = client.get("/stream?n=200000")
        assert len(r.content) == 200000
    # The access log: one uvicorn-format line per stream.
    srv.wait_for_log(r'"GET /scope\?x=1 HTTP/2" 200 OK', stream="stdout")
    srv.wait_for_log(r'"POST /echo HTTP/2" 200 OK', stream="stdout")


def test_split_cookies_reach_the_app_as_one_header(server_factory):
    srv = server_factory(RAW, "--http2")
    c = H2(srv)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":path", "/scope"), (":scheme", "http"), (":authority", "x"),
                              ("cookie", "a=1"), ("cookie", "b=2")], end_stream=True)
    c.responses[sid] = {"status": None, "headers": {}, "body": b"", "ended": False, "reset": None}
    c.flush()
    c.pump(c.all_ended)
    headers = json.loads(c.responses[sid]["body"])["headers"]
    cookies = [v["__bytes__"] for k, v in headers if k["__bytes__"] == "cookie"]
    assert cookies == ["a=1; b=2"]


def test_http1_still_served_on_the_same_port(server_factory):
    srv = server_factory(RAW, "--http2")
    r = httpx.get(f"{srv.url}/fixed", timeout=10)
    assert r.http_version == "HTTP/1.1" and r.text == "hello, world"


def test_tls_alpn_prefers_h2_and_http1_remains(server_factory, certs):  # noqa: F811
    srv = server_factory(RAW, "--http2", *_tls_args(certs))
    ctx = _client_context(certs)
    url = f"https://localhost:{srv.port}"
    with httpx.Client(http2=True, verify=ctx, timeout=10) as client:
        r = client.get(f"{url}/scope")
        assert r.http_version == "HTTP/2"
        assert r.json()["scheme"] == "https" and r.json()["http_version"] == "2"
    with httpx.Client(http2=False, verify=ctx, timeout=10) as client:
        assert client.get(f"{url}/fixed").http_version == "HTTP/1.1"


def test_tls_without_http2_negotiates_http1(server_factory, certs):  # noqa: F811
    srv = server_factory(RAW, *_tls_args(certs))
    with httpx.Client(http2=True, verify=_client_context(certs), timeout=10) as client:
        assert client.get(f"https://localhost:{srv.port}/fixed").http_version == "HTTP/1.1"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_http2_over_tls_and_prior_knowledge(server_factory, certs):  # noqa: F811
    srv = server_factory(RAW, "--http2", *_tls_args(certs))
    out = subprocess.run(["curl", "-s", "--http2", "--cacert", str(certs / "ca.pem"), "-w", " %{http_version}",
                          f"https://localhost:{srv.port}/fixed"], capture_output=True, text=True, timeout=20,
                         env=client_env())
    assert out.stdout == "hello, world 2", out.stderr
    plain = server_factory(RAW, "--http2")
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-w", " %{http_version}", "--data-binary",
                          "abc", f"{plain.url}/echo"], capture_output=True, text=True, timeout=20, env=client_env())
    assert out.stdout == "abc 2", out.stderr


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
def test_nghttp_many_concurrent_requests(server_factory):
    srv = server_factory(RAW, "--http2")
    out = subprocess.run(["nghttp", "-ns", "-m", "50", f"{srv.url}/fixed"], capture_output=True, text=True,
                         timeout=30, env=client_env())
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("/fixed") >= 50


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load_over_h2c_and_tls_has_no_failure(server_factory, certs):  # noqa: F811
    plain = server_factory(RAW, "--http2", "--no-access-log")
    tls = server_factory(RAW, "--http2", "--no-access-log", *_tls_args(certs))
    for url in (f"{plain.url}/fixed", f"https://127.0.0.1:{tls.port}/fixed", f"{plain.url}/stream?n=300000"):
        out = subprocess.run(["h2load", "-n", "2000" if "fixed" in url else "40", "-c", "4", "-m", "10", url],
                             capture_output=True, text=True, timeout=60, env=client_env())
        assert out.returncode == 0, out.stdout + out.stderr
        done = [line for line in out.stdout.splitlines() if line.startswith("requests:")][0]
        assert " 0 failed, 0 errored, 0 timeout" in done and "succeeded" in done, out.stdout
        assert "2xx, 0 3xx, 0 4xx, 0 5xx" in out.stdout, out.stdout


def test_many_concurrent_streams_on_one_connection(server_factory):
    srv = server_factory(RAW, "--http2")
    c = H2(srv)
    t0 = time.monotonic()
    ids = [c.request("/sleep?s=0.5") for _ in range(100)]
    c.pump(c.all_ended, timeout=15)
    elapsed = time.monotonic() - t0
    assert [c.responses[i]["status"] for i in ids] == [200] * 100
    assert all(c.responses[i]["body"] == b"slept" for i in ids)
    assert elapsed < 5, f"100 streams of 0.5 s took {elapsed:.1f} s: not concurrent"
    c.close()


def test_fastapi_over_h2c(server_factory, fastapi_workdir):
    srv = server_factory("apps.fastapi_app:app", "--http2", env={"PRONGHORN_TEST_WORKDIR": str(fastapi_workdir)})
    with _h2c(srv) as client:
        r = client.get("/items/5?q=x")
        assert r.http_version == "HTTP/2" and r.json()["item_id"] == 5
        r = client.post("/items", json={"name": "a", "price": 1.5})
        assert r.status_code == 200 and r.json()["name"] == "a"
        r = client.get("/stream?n=20")
        assert r.text == "".join(f"line {i}\n" for i in range(20))
        r = client.get("/file")
        assert r.content == bytes(range(256)) * 1024
        r = client.post("/form", files={"f": ("a.bin", b"z" * 200_000)}, data={"k": "v"})
        assert r.json() == {"f": {"filename": "a.bin", "size": 200_000}, "k": "v"}


def test_access_log_format_protocol(server_factory):
    srv = server_factory(RAW, "--http2", "--access-log-format", "%(m)s %(U)s %(H)s %(s)s")
    with _h2c(srv) as client:
        client.get("/fixed")
    srv.wait_for_log(r"GET /fixed HTTP/2 200", stream="stdout")


# -- lifecycle ---------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
def test_graceful_stop_sends_goaway_and_finishes_open_streams(server_factory):
    # (nghttp, not the h2 library: h2 closes its side on GOAWAY and drops the stream's response.)
    srv = server_factory(RAW, "--http2")
    client = subprocess.Popen(["nghttp", "-v", f"{srv.url}/sleep?s=1"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=client_env())
    time.sleep(0.5)  # the stream is open in the app
    srv.send_signal(signal.SIGTERM)
    out, _ = client.communicate(timeout=15)
    assert client.returncode == 0, out
    goaway = out[out.index("recv GOAWAY"):]
    assert "error_code=NO_ERROR" in goaway.splitlines()[1], out
    last_stream_id = int(goaway.split("last_stream_id=")[1].split(",")[0])
    assert last_stream_id >= 1
    # The open stream finished after the GOAWAY: its body came.
    assert "slept" in goaway, out
    assert srv.wait_exit() == expected_signal_exit(signal.SIGTERM)


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
def test_sighup_reload_lets_an_open_stream_finish(server_factory):
    srv = server_factory(RAW, "--http2", "--workers", "2")
    with _h2c(srv) as client:
        before = client.get("/scope").json()
    client = subprocess.Popen(["nghttp", "-v", f"{srv.url}/sleep?s=1.5"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=client_env())
    time.sleep(0.5)
    srv.send_signal(signal.SIGHUP)
    out, _ = client.communicate(timeout=20)
    assert client.returncode == 0, out
    # The old worker's GOAWAY came before the stream's answer, which came all the same.
    assert out.index("recv GOAWAY") < out.rindex("slept"), out
    with _h2c(srv) as client:
        r = client.get("/fixed")
        assert r.http_version == "HTTP/2" and r.text == "hello, world"
    assert before["http_version"] == "2"


def test_idle_connection_closes_after_keep_alive_timeout(server_factory):
    srv = server_factory(RAW, "--http2", "--timeout-keep-alive", "0.5")
    c = H2(srv)
    c.request("/fixed")
    c.pump(c.all_ended)
    t0 = time.monotonic()
    c.pump(lambda: False, timeout=5)
    assert c.closed and time.monotonic() - t0 < 3
    assert c.terminated is not None and c.terminated.error_code == 0


# -- limits and attacks ------------------------------------------------------------------------


def test_rapid_reset_is_goawayed_and_the_server_serves_on(server_factory):
    srv = server_factory(RAW, "--http2")
    c = H2(srv)
    started = time.monotonic()
    for _ in range(2000):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", "GET"), (":path", "/sleep?s=5"), (":scheme", "http"),
                                  (":authority", "x")], end_stream=True)
        c.conn.reset_stream(sid)
    try:
        c.flush()
    except OSError:
        pass
    c.pump(lambda: c.terminated is not None, timeout=10)
    elapsed = time.monotonic() - started
    # nghttp2's reset token bucket (burst: 2 x max concurrent streams, refilled
    # at 33 a second while the slow client, under ASan, still sends) ran dry: GOAWAY.
    assert c.terminated is not None and c.terminated.error_code in (2, 11)
    assert c.terminated.last_stream_id <= 2 * (2 * 100 + 33 * (elapsed + 1)) + 1, (c.terminated, elapsed)
    c.close()
    with _h2c(srv) as client:
        assert client.get("/fixed").text == "hello, world"


def test_continuation_flood_is_goawayed(server_factory):
    srv = server_factory(RAW, "--http2")
    c = H2(srv)
    block = bytes([0x82, 0x84, 0x86, 0x41, 0x01, ord("x")])  # GET / http, :authority x
    data = _frame(0x1, 0x0, 1, block)  # HEADERS without END_HEADERS
    data += b"".join(_frame(0x9, 0x0, 1, b"\x00\x03x-a\x01v") for _ in range(1000))
    c.sock.sendall(data)
    c.pump(lambda: c.terminated is not None, timeout=10)
    assert c.terminated is not None and c.terminated.error_code == 11


@pytest.mark.parametrize("cut", ["no-continuation", "frame-cut-short"])
def test_unfinished_header_block_is_closed_after_the_header_timeout(server_factory, cut):
    """Slowloris: a header block begun and never finished held the connection forever."""
    srv = server_factory(RAW, "--http2", "--timeout-header-read", "1", "--timeout-keep-alive", "30")
    c = H2(srv)
    block = bytes([0x82, 0x84, 0x86, 0x41, 0x01, ord("x")])  # GET / http, :authority x
    if cut == "no-continuation":
        data = _frame(0x1, 0x0, 1, block)  # HEADERS without END_HEADERS
    else:
        data = _frame(0x1, 0x5, 1, block + bytes(200))[:12]  # the frame header and 3 bytes of its block
    c.sock.sendall(data)
    t0 = time.monotonic()
    received = b""
    c.sock.settimeout(8)
    try:
        while data := c.sock.recv(65536):
            received += data
    except OSError:
        pass
    assert time.monotonic() - t0 < 5, "not closed"
    assert _goaway_error(received) == 1, _frames(received)  # PROTOCOL_ERROR


def test_server_resets_of_served_streams_are_rate_limited(server_factory):
    """MadeYouReset (CVE-2025-8671): DATA past content-length: 0 makes the server reset a stream
    it has dispatched; the app's task goes on, so the resets share the rapid-reset budget."""
    srv = server_factory(RAW, "--http2", "--http2-max-concurrent-streams", "32", "--access-log-format",
                         "%(m)s %(U)s %(s)s")
    c = H2(srv)
    # POST /sleep?s=3 http, :authority x, content-length: 0: an app task that outlives its stream.
    block = bytes([0x83, 0x86, 0x04, 10]) + b"/sleep?s=3" + bytes([0x41, 0x01, ord("x"), 0x0F, 0x0D, 0x01]) + b"0"
    # The server's frames are read raw (the h2 client never opened these streams).
    received = b""

    def goaway_error() -> int | None:
        return _goaway_error(received)

    t0 = time.monotonic()
    sent = 0
    c.sock.settimeout(0.001)
    try:
        for sid in range(1, 2 * 1500, 2):
            # Apart, so that the stream is dispatched before the DATA comes (in one read
            # nghttp2 resets it before the app sees it).
            c.sock.sendall(_frame(0x1, 0x4, sid, block))
            time.sleep(0.002)
            c.sock.sendall(_frame(0x0, 0x1, sid, b"x"))
            sent += 1
            try:
                data = c.sock.recv(1 << 20)
                if not data:
                    break
                received += data
            except (socket.timeout, TimeoutError, BlockingIOError):
                pass
            if goaway_error() is not None:
                break
    except OSError:
        pass  # the server closed: its GOAWAY is in what it sent
    elapsed = time.monotonic() - t0
    c.sock.settimeout(5)
    try:
        while goaway_error() is None:
            data = c.sock.recv(1 << 20)
            if not data:
                break
            received += data
    except OSError:
        pass
    assert goaway_error() == 11, (sent, received[:200])  # ENHANCE_YOUR_CALM
    time.sleep(0.5)
    seen = srv.stdout.count("POST /sleep")
    # The budget: a burst of 64 (2 x 32 streams, at least 64), 33 a second, and at most one
    # read's worth of streams (32) dispatched before the reset that spends it. (Before the
    # budget: all 1500 reached the app and no GOAWAY came.)
    assert 0 < seen <= 64 + 33 * (elapsed + 1) + 32, (seen, sent, elapsed)
    c.close()
    with _h2c(srv) as client:
        assert client.get("/fixed").text == "hello, world"


def test_host_differing_from_authority_is_400(server_factory):
    """RFC 9113 §8.3.1: a host header naming another entity than :authority is malformed."""
    srv = server_factory(RAW, "--http2")
    sock = socket.create_connection(srv.addr, timeout=10)
    # (h2 would refuse to send the mismatch itself.)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
        normalize_outbound_headers=False))
    conn.initiate_connection()
    base = [(":method", "GET"), (":path", "/scope"), (":scheme", "http"), (":authority", "example.com")]
    conn.send_headers(1, base + [("host", "other.example")], end_stream=True)
    conn.send_headers(3, base + [("host", "EXAMPLE.com")], end_stream=True)
    sock.sendall(conn.data_to_send())
    status, ended = {}, set()
    deadline = time.monotonic() + 10
    while len(ended) < 2 and time.monotonic() < deadline:
        data = sock.recv(65536)
        assert data, "closed"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status[event.stream_id] = int(dict(event.headers)[":status"])
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
        sock.sendall(conn.data_to_send())
    sock.close()
    assert status == {1: 400, 3: 200}


def test_header_list_over_the_limit_gets_431(server_factory):
    srv = server_factory(RAW, "--http2", "--http2-max-header-list-size", "4096")
    c = H2(srv)
    sid = c.conn.get_next_available_stream_id()
    c.conn.send_headers(sid, [(":method", "GET"), (":path", "/fixed"), (":scheme", "http"), (":authority", "x"),
                              ("x-big", "b" * 5000)], end_stream=True)
    c.responses[sid] = {"status": None, "headers": {}, "body": b"", "ended": False, "reset": None}
    c.flush()
    c.pump(c.all_ended)
    assert c.responses[sid]["status"] == 431


def test_oversized_frame_is_a_frame_size_error(server_factory):
    srv = server_factory(RAW, "--http2")
    c = H2(srv)
    block = bytes([0x83, 0x84, 0x86, 0x41, 0x01, ord("x")])  # POST / http
    c.sock.sendall(_frame(0x1, 0x4, 1, block) + _frame(0x0, 0x0, 1, b"d" * 20000))
    c.pump(lambda: c.terminated is not None, timeout=10)
    assert c.terminated is not None and c.terminated.error_code == 6  # FRAME_SIZE_ERROR


def test_even_stream_id_is_a_protocol_error(server_factory):
    srv = server_factory(RAW, "--http2")
    c = H2(srv)
    block = bytes([0x82, 0x84, 0x86, 0x41, 0x01, ord("x")])
    c.sock.sendall(_frame(0x1, 0x5, 2, block))
    c.pump(lambda: c.terminated is not None, timeout=10)
    assert c.terminated is not None and c.terminated.error_code == 1  # PROTOCOL_ERROR


def test_http2_settings_are_advertised(server_factory):
    srv = server_factory(RAW, "--http2", "--http2-max-concurrent-streams", "7", "--http2-initial-window-size",
                         "100000", "--http2-max-frame-size", "32768")
    c = H2(srv)
    c.request("/fixed")
    c.pump(c.all_ended)
    remote = c.conn.remote_settings
    assert remote.max_concurrent_streams == 7
    assert remote.initial_window_size == 100000
    assert remote.max_frame_size == 32768


def test_static_files_over_h2c(server_factory, tmp_path):
    """The engine's static files are served on HTTP/2 streams as on HTTP/1: body, range, 304."""
    (tmp_path / "a.txt").write_bytes(b"hello static\n")
    srv = server_factory(RAW, "--http2", "--static-path-mount", str(tmp_path))
    with httpx.Client(http1=False, http2=True, base_url=srv.url, timeout=5) as client:
        r = client.get("/static/a.txt")
        assert (r.http_version, r.status_code, r.content) == ("HTTP/2", 200, b"hello static\n")
        part = client.get("/static/a.txt", headers={"Range": "bytes=0-4"})
        assert (part.status_code, part.content, part.headers["content-range"]) == (206, b"hello", "bytes 0-4/13")
        again = client.get("/static/a.txt", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


def test_limit_concurrency_counts_streams(server_factory):
    # --limit-concurrency 2: two slow streams are in the app, so a third stream on the same
    # connection gets 503 (as a third HTTP/1 connection would), and once they finish the
    # connection is served again.
    srv = server_factory(RAW, "--http2", "--limit-concurrency", "2")
    client = H2(srv)
    try:
        slow = [client.request("/sleep?s=1"), client.request("/sleep?s=1")]
        time.sleep(0.3)  # both slow streams are in the app
        third = client.request("/echo")
        client.pump(lambda: client.responses[third]["ended"])
        assert client.responses[third]["status"] == 503
        client.pump(client.all_ended)
        assert [client.responses[sid]["status"] for sid in slow] == [200, 200]
        again = client.request("/echo")
        client.pump(lambda: client.responses[again]["ended"])
        assert client.responses[again]["status"] == 200
    finally:
        client.close()
    assert "Exceeded concurrency limit." in srv.stderr
