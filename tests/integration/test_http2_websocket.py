"""WebSockets over HTTP/2 (RFC 8441 extended CONNECT), against the installed server with --http2:
hand-made WebSocket frames in the DATA of an `h2` library stream, over h2c and TLS; the same
scenarios against hypercorn (the one Python server that has RFC 8441) where what a client
observes must match; and, when the machine has it, headless Chromium opening a wss:// WebSocket
on an origin it already reaches over HTTP/2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from conftest import HERE, client_env
from test_tls import _client_context, _tls_args, certs  # noqa: F401  (certs: the fixture)

pytestmark = pytest.mark.pronghorn_only  # uvicorn has no HTTP/2

RAW = "apps.ws_app:raw"


# -- WebSocket frames ---------------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return ws_frame(8, struct.pack(">H", code) + reason)


def take_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """The whole server frames at the start of `buf` (removed from it), as (opcode, payload)."""
    out = []
    while len(buf) >= 2:
        n, at = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = struct.unpack(">H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = struct.unpack(">Q", buf[2:10])[0], 10
        if len(buf) < at + n:
            break
        out.append((buf[0] & 0x0F, bytes(buf[at:at + n])))
        del buf[:at + n]
    return out


# -- the HTTP/2 client --------------------------------------------------------------------------


class Client:
    """One HTTP/2 connection driven by the `h2` library; what it receives is acknowledged at once."""

    def __init__(self, addr, tls: ssl.SSLContext | None = None):
        sock = socket.create_connection(addr, timeout=10)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.flush()
        self.server_settings: dict[int, int] | None = None
        self.streams: dict[int, dict] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.hold: set[int] = set()  # streams whose window the client keeps closed
        self.pump(lambda: self.server_settings is not None)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def open(self, headers: list[tuple[str, str]], end_stream: bool = False) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.streams[sid] = {"status": None, "headers": {}, "data": bytearray(), "ended": False, "reset": None}
        self.flush()
        return sid

    def websocket(self, path: str, version: str = "13", extra=(), authority: str = "localhost",
                  scheme: str = "http") -> int:
        return self.open([(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", scheme),
                          (":path", path), (":authority", authority), ("sec-websocket-version", version),
                          *extra])

    def send(self, sid: int, data: bytes, end_stream: bool = False) -> None:
        """Sends `data` as the windows and the frame size allow (waiting for WINDOW_UPDATE)."""
        view = memoryview(data)
        while True:
            if view and self.conn.local_flow_control_window(sid) <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0)
            n = min(len(view), self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            last = n == len(view)
            self.conn.send_data(sid, bytes(view[:n]), end_stream=end_stream and last)
            self.flush()
            view = view[n:]
            if last:
                return

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, 8)  # CANCEL
        self.flush()

    def pump(self, until, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not until() and not self.closed:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                raise AssertionError("timed out waiting on the HTTP/2 connection") from None
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            for event in self.conn.receive_data(data):
                s = self.streams.get(getattr(event, "stream_id", None) or 0)
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    self.server_settings = {int(k): v.new_value for k, v in event.changed_settings.items()}
                elif isinstance(event, h2.events.ResponseReceived):
                    s["headers"] = dict(event.headers)
                    s["status"] = int(s["headers"][":status"])
                elif isinstance(event, h2.events.DataReceived):
                    s["data"] += event.data
                    if event.stream_id in self.hold:
                        if event.flow_controlled_length:
                            self.conn.increment_flow_control_window(event.flow_controlled_length)
                    else:
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    s["ended"] = True
                elif isinstance(event, h2.events.StreamReset) and s is not None:
                    s["reset"] = event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.terminated = event
            try:
                self.flush()
            except OSError:
                self.closed = True

    def frames(self, sid: int, count: int = 1, timeout: float = 10) -> list[tuple[int, bytes]]:
        """The next `count` WebSocket frames the server sent on the stream."""
        got: list[tuple[int, bytes]] = []
        s = self.streams[sid]

        def ready():
            got.extend(take_frames(s["data"]))
            return len(got) >= count or s["ended"] or s["reset"] is not None

        self.pump(ready, timeout)
        got.extend(take_frames(s["data"]))
        return got

    def response(self, sid: int, timeout: float = 10) -> dict:
        s = self.streams[sid]
        self.pump(lambda: s["status"] is not None or s["reset"] is not None, timeout)
        return s

    def close(self) -> None:
        self.sock.close()


def read_log(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def wait_log(path: Path, pred, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in read_log(path):
            if pred(entry):
                return entry
        time.sleep(0.05)
    raise AssertionError(f"no matching entry in {read_log(path)}")


ENABLE_CONNECT_PROTOCOL = int(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)


# -- Pronghorn ----------------------------------------------------------------------------------


@pytest.fixture
def ws_log(tmp_path):
    return tmp_path / "ws.jsonl"


@pytest.fixture
def srv(server_factory, ws_log):
    return server_factory(RAW, "--http2", env={"WS_TEST_LOG": str(ws_log)})


def test_settings_offer_extended_connect_and_ws_none_refuses_it(server_factory):
    on = Client(server_factory(RAW, "--http2").addr)
    assert on.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1
    off_srv = server_factory(RAW, "--http2", "--ws", "none")
    off = Client(off_srv.addr)
    assert ENABLE_CONNECT_PROTOCOL not in off.server_settings
    sid = off.websocket("/echo")
    s = off.response(sid)
    # Without the offer, :protocol makes the request malformed (RFC 8441 §3, RFC 9113 §8.1.1):
    # the stream is reset, the connection serves on.
    assert s["status"] is None and s["reset"] == 1  # PROTOCOL_ERROR
    sid = off.open([(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "localhost")],
                   end_stream=True)
    assert off.response(sid)["status"] == 200


def test_echo_text_and_binary_then_close_over_h2c(srv, ws_log):
    c = Client(srv.addr)
    sid = c.websocket("/echo")
    s = c.response(sid)
    assert s["status"] == 200 and not s["ended"]
    assert "sec-websocket-accept" not in s["headers"]
    c.send(sid, ws_frame(1, "ünïcødé".encode()) + ws_frame(2, b"\x00\xff" * 40000))
    assert c.frames(sid, 2) == [(1, "ünïcødé".encode()), (2, b"\x00\xff" * 40000)]
    # A fragmented message, its pieces in separate DATA frames.
    c.send(sid, ws_frame(1, b"frag", fin=False))
    c.send(sid, ws_frame(0, b"ment"))
    assert c.frames(sid) == [(1, b"fragment")]
    c.send(sid, close_frame(1000, b"bye"))
    assert c.frames(sid) == [(8, struct.pack(">H", 1000))]
    c.pump(lambda: c.streams[sid]["ended"])
    entry = wait_log(ws_log, lambda e: e.get("path") == "/echo")
    assert entry["disconnect"]["code"] == 1000 and entry["disconnect"]["reason"] == "bye"
    # Logged as uvicorn logs a WebSocket, and no HTTP line for the CONNECT.
    srv.wait_for_log(r'"WebSocket /echo" \[accepted\]')
    srv.wait_for_log(r"connection closed")
    assert "CONNECT" not in srv.stdout + srv.stderr


def test_scope_is_a_websocket_scope_with_http_version_2(srv):
    c = Client(srv.addr)
    sid = c.websocket("/scope?x=1", extra=[("sec-websocket-protocol", "a, b")])
    (op, payload), close = c.frames(sid, 2)
    scope = json.loads(payload)
    assert scope["type"] == "websocket" and scope["http_version"] == "2" and scope["scheme"] == "ws"
    assert scope["path"] == "/scope" and scope["query_string"] == "x=1"
    assert scope["subprotocols"] == ["a", "b"] and "method" not in scope
    assert ["host", "localhost"] in scope["headers"]
    assert close == (8, struct.pack(">H", 1000))


def test_over_tls_the_scheme_is_wss(server_factory, certs):  # noqa: F811
    srv = server_factory(RAW, "--http2", *_tls_args(certs))
    c = Client(srv.addr, tls=_client_context_h2(certs))
    assert c.server_settings.get(ENABLE_CONNECT_PROTOCOL) == 1
    sid = c.websocket("/scope", scheme="https")
    scope = json.loads(c.frames(sid)[0][1])
    assert scope["scheme"] == "wss" and scope["http_version"] == "2"
    sid = c.websocket("/echo", scheme="https")
    c.send(sid, ws_frame(1, b"over tls"))
    assert c.frames(sid) == [(1, b"over tls")]


def _client_context_h2(certs_dir) -> ssl.SSLContext:
    ctx = _client_context(certs_dir)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def test_subprotocol_extension_and_accept_headers(srv):
    c = Client(srv.addr)
    sid = c.websocket("/subprotocol", extra=[("sec-websocket-protocol", "chat, other"),
                                             ("sec-websocket-extensions", "permessage-deflate")])
    s = c.response(sid)
    assert s["status"] == 200
    assert s["headers"]["sec-websocket-protocol"] == "chat"
    assert s["headers"]["sec-websocket-extensions"].startswith("permessage-deflate")
    assert c.frames(sid) == [(1, b"chat")]
    sid = c.websocket("/accept-headers")
    assert c.response(sid)["headers"]["x-accepted"] == "yes"


def test_denial_and_close_before_accept_are_plain_responses(srv, ws_log):
    c = Client(srv.addr)
    sid = c.websocket("/deny")
    c.pump(lambda: c.streams[sid]["ended"])
    s = c.streams[sid]
    assert s["status"] == 401 and bytes(s["data"]) == b"denied" and s["headers"]["x-denied"] == "1"
    sid = c.websocket("/close-before-accept")
    c.pump(lambda: c.streams[sid]["ended"])
    assert c.streams[sid]["status"] == 403
    srv.wait_for_log(r'"WebSocket /deny" 401')
    srv.wait_for_log(r'"WebSocket /close-before-accept" 403')
    wait_log(ws_log, lambda e: e.get("path") == "/deny")


def test_refusals_are_precise(srv):
    c = Client(srv.addr)
    bad = c.websocket("/echo", version="8")
    plain = c.open([(":method", "CONNECT"), (":authority", "example.com:443")])
    other = c.open([(":method", "CONNECT"), (":protocol", "connect-udp"), (":scheme", "https"),
                    (":path", "/.well-known/masque/udp/h/53/"), (":authority", "localhost")])
    assert c.response(bad)["status"] == 426
    assert c.streams[bad]["headers"]["sec-websocket-version"] == "13"
    assert c.response(plain)["status"] == 405
    assert c.response(other)["status"] == 501


def test_a_reset_mid_message_is_1006_and_the_connection_serves_on(srv, ws_log):
    c = Client(srv.addr)
    sid = c.websocket("/echo")
    assert c.response(sid)["status"] == 200
    c.send(sid, ws_frame(2, b"x" * 5000)[:2000])
    c.reset(sid)
    entry = wait_log(ws_log, lambda e: e.get("path") == "/echo")
    assert entry["disconnect"]["code"] == 1006
    again = c.websocket("/echo")
    c.send(again, ws_frame(1, b"still here"))
    assert c.frames(again) == [(1, b"still here")]


def test_the_client_ending_its_stream_is_the_connection_gone(srv, ws_log):
    c = Client(srv.addr)
    sid = c.websocket("/echo")
    c.send(sid, ws_frame(1, b"last"), end_stream=True)
    assert c.frames(sid) == [(1, b"last")]
    c.pump(lambda: c.streams[sid]["ended"] or c.streams[sid]["reset"] is not None)
    assert wait_log(ws_log, lambda e: e.get("path") == "/echo")["disconnect"]["code"] == 1006


def test_many_websockets_and_requests_share_one_connection(srv):
    c = Client(srv.addr)
    ids = [c.websocket("/echo") for _ in range(10)]
    for i, sid in enumerate(ids):
        c.send(sid, ws_frame(1, f"n{i}".encode()))
    plain = c.open([(":method", "GET"), (":path", "/x"), (":scheme", "http"), (":authority", "localhost")],
                   end_stream=True)
    for i, sid in enumerate(ids):
        assert c.frames(sid) == [(1, f"n{i}".encode())]
    assert c.response(plain)["status"] == 200


def test_a_websocket_whose_client_does_not_read_stalls_only_itself(server_factory):
    srv = server_factory(RAW, "--http2")
    c = Client(srv.addr)
    # The client never opens this stream's window (only the connection's): it closes after 64 KiB.
    sid = c.websocket("/flood?n=50&size=100000")
    c.hold.add(sid)
    assert c.response(sid)["status"] == 200
    c.pump(lambda: len(c.streams[sid]["data"]) >= 65535 - 1000, timeout=10)
    time.sleep(0.3)
    c.pump(lambda: True)
    assert len(c.streams[sid]["data"]) <= 65535
    other = c.websocket("/echo")
    c.send(other, ws_frame(1, b"not stalled"))
    assert c.frames(other) == [(1, b"not stalled")]


def test_pings_go_out_on_the_tunnel_and_a_missing_pong_closes_it(server_factory, ws_log):
    srv = server_factory(RAW, "--http2", "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.5",
                         env={"WS_TEST_LOG": str(ws_log)})
    c = Client(srv.addr)
    sid = c.websocket("/echo")
    (op, payload), = c.frames(sid, 1, timeout=5)
    assert op == 9
    c.send(sid, ws_frame(10, payload))  # the pong
    c.send(sid, ws_frame(1, b"after ping"))
    seen = []
    for _ in range(10):
        for op, payload in c.frames(sid, 1):
            seen.append(op)
            if op == 9:
                c.send(sid, ws_frame(10, payload))
            if (op, payload) == (1, b"after ping"):
                break
        else:
            continue
        break
    assert 1 in seen
    # Pings left unanswered: the server closes (1011, as on HTTP/1) and ends the stream.
    other = c.websocket("/echo")
    frames = []
    deadline = time.monotonic() + 10
    while not any(op == 8 for op, _ in frames) and time.monotonic() < deadline:
        frames += c.frames(other, 1)
    assert (8, struct.pack(">H", 1011) + b"keepalive ping timeout") in frames
    c.pump(lambda: c.streams[other]["ended"] or c.streams[other]["reset"] is not None)
    assert wait_log(ws_log, lambda e: e.get("path") == "/echo" and e["disconnect"]["code"] == 1011)


def test_graceful_stop_closes_tunnelled_websockets_with_1001_then_goaway(server_factory, ws_log):
    srv = server_factory(RAW, "--http2", env={"WS_TEST_LOG": str(ws_log)})
    c = Client(srv.addr)
    sid = c.websocket("/echo")
    assert c.response(sid)["status"] == 200
    srv.send_signal(signal.SIGTERM)
    # From here raw frames: the `h2` library takes the first GOAWAY for the end of the connection
    # and refuses the stop's PING and DATA that follow it.
    buf, data, goaways, answered = b"", bytearray(), [], False
    c.sock.settimeout(10)
    while True:
        chunk = c.sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length = int.from_bytes(buf[:3], "big")
            kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + length], buf[9 + length:]
            if kind == 0x6 and not flags & 0x1:  # PING: acknowledged
                c.sock.sendall(_raw_frame(0x6, 0x1, 0, payload))
            elif kind == 0x7:
                goaways.append(int.from_bytes(payload[4:8], "big"))
            elif kind == 0x0 and stream == sid:
                data += payload
                if not answered and take_frames(data) == [(8, struct.pack(">H", 1001))]:
                    answered = True  # the client answers the close and ends its side
                    c.sock.sendall(_raw_frame(0x0, 0x1, sid, close_frame(1001)))
    assert answered
    assert goaways and set(goaways) == {0}  # NO_ERROR
    assert srv.wait_exit() == 0
    assert wait_log(ws_log, lambda e: e.get("path") == "/echo")["disconnect"]["code"] == 1001


def _raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def test_limit_concurrency_counts_tunnelled_websockets(server_factory):
    srv = server_factory(RAW, "--http2", "--limit-concurrency", "1")
    c = Client(srv.addr)
    first = c.websocket("/echo")
    assert c.response(first)["status"] == 200
    second = c.websocket("/echo")
    # One connection and one WebSocket: the next exchange is over the limit (as on HTTP/1).
    assert c.response(second)["status"] == 503


# -- differential: the same scenarios against hypercorn ----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hypercorn(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("hypercorn")
    port = _free_port()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("LD_PRELOAD", None)
    log = open(log_dir / "hypercorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "hypercorn", RAW, "--bind", f"127.0.0.1:{port}"], cwd=HERE,
                            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError((log_dir / "hypercorn.log").read_text())
            time.sleep(0.05)
    yield ("127.0.0.1", port)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture(scope="module")
def pronghorn_h2(tmp_path_factory):
    from conftest import ServerProcess

    srv = ServerProcess(RAW, ["--http2"], log_dir=tmp_path_factory.mktemp("pronghorn-h2ws"), name="h2ws")
    srv.start()
    yield srv.addr
    srv.stop()


def _scenario_echo(addr):
    c = Client(addr)
    sid = c.websocket("/echo")
    out = [c.response(sid)["status"]]
    for op, payload in [(1, b"text"), (1, b""), (1, "ünïcødé 𝄞".encode()), (2, b"\x00\xff" * 40000)]:
        c.send(sid, ws_frame(op, payload))
        out.append(c.frames(sid))
    c.send(sid, close_frame(1000))
    out.append(c.frames(sid))
    return out


def _scenario_server_close(addr):
    c = Client(addr)
    sid = c.websocket("/close?code=4001&reason=custom")
    out = c.frames(sid)
    c.send(sid, close_frame(4001))
    return out


def _scenario_deny(addr):
    c = Client(addr)
    sid = c.websocket("/deny")
    c.pump(lambda: c.streams[sid]["ended"])
    s = c.streams[sid]
    return s["status"], bytes(s["data"]), s["headers"].get("x-denied")


def _scenario_close_before_accept(addr):
    c = Client(addr)
    sid = c.websocket("/close-before-accept")
    return c.response(sid)["status"]


def _scenario_subprotocol(addr):
    c = Client(addr)
    sid = c.websocket("/subprotocol", extra=[("sec-websocket-protocol", "chat, other")])
    s = c.response(sid)
    return s["status"], s["headers"].get("sec-websocket-protocol"), c.frames(sid)


def _scenario_scope(addr):
    c = Client(addr)
    sid = c.websocket("/scope?q=1", extra=[("sec-websocket-protocol", "a, b")])
    scope = json.loads(c.frames(sid)[0][1])
    # Values that differ by design: the ports, hypercorn's spec version (2.3, Pronghorn's 2.4 as
    # uvicorn's), and the extensions each server offers (Pronghorn adds none for h2c but the
    # denial extension both have).
    return {k: scope[k] for k in ("type", "http_version", "scheme", "path", "raw_path", "query_string",
                                  "root_path", "subprotocols")} | {
        "denial": "websocket.http.response" in scope["extensions"]}


SCENARIOS = {
    "echo": _scenario_echo,
    "server-close": _scenario_server_close,
    "deny": _scenario_deny,
    "close-before-accept": _scenario_close_before_accept,
    "subprotocol": _scenario_subprotocol,
    "scope": _scenario_scope,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_as_hypercorn(name, pronghorn_h2, hypercorn):
    scenario = SCENARIOS[name]
    assert scenario(pronghorn_h2) == scenario(hypercorn)


# -- a real browser ----------------------------------------------------------------------------


def _spki_sha256(cert: Path) -> str:
    import base64
    import hashlib

    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True,
                         check=True, env=client_env()).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True, env=client_env()).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.mark.slow
def test_chromium_opens_wss_over_the_http2_connection_of_its_page(server_factory, certs, tmp_path,
                                                                    ws_log):  # noqa: F811
    """Chromium (since 91) sends a wss:// WebSocket as an RFC 8441 extended CONNECT on an HTTP/2
    connection it already has to the origin, when that connection's SETTINGS offered it; no flag
    is needed. The page comes over HTTP/2, its script opens two WebSockets and reports what the
    scope said (http_version) and the echo."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    srv = server_factory(RAW, "--http2", *_tls_args(certs), env={"WS_TEST_LOG": str(ws_log)})
    spki = _spki_sha256(certs / "server.pem")
    # --ignore-certificate-errors-spki-list trusts exactly the test server's key; it takes effect
    # only with a --user-data-dir. --no-sandbox: CI runs as root. The browser stays open (a
    # DevTools port) until the page has reported, then is stopped.
    proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             f"--user-data-dir={tmp_path / 'profile'}", f"--ignore-certificate-errors-spki-list={spki}",
                             "--remote-debugging-port=0", f"https://localhost:{srv.port}/ws-page"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=client_env())
    try:
        # The page's report, over HTTP/2: its script saw the scope say "2", and the echo.
        m = srv.wait_for_log(r'"GET /done\?(\S*) HTTP/([\d.]+)" 200', stream="stdout", timeout=60)
        assert m.group(1) == "http_version=2&echo=hello%20from%20chromium" and m.group(2) == "2", m.group(0)
        # The page closes its echo WebSocket (1000) after the report.
        assert wait_log(ws_log, lambda e: e.get("path") == "/echo")["disconnect"]["code"] == 1000
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Both WebSockets went on the page's connection (the same client port as its GET): streams of
    # it, not connections of their own.
    page = srv.wait_for_log(r'127\.0\.0\.1:(\d+) - "GET /ws-page HTTP/2" 200', stream="stdout")
    port = page.group(1)
    srv.wait_for_log(rf'127\.0\.0\.1:{port} - "WebSocket /scope" \[accepted\]')
    srv.wait_for_log(rf'127\.0\.0\.1:{port} - "WebSocket /echo" \[accepted\]')
    assert not re.search(r"HTTP/1\.1", srv.stdout), srv.stdout
