"""An HTTP/2 conformance battery in the style of h2spec's sections, each case asserting what
RFC 9113 (HTTP/2) and RFC 7541 (HPACK) require of a server: the GOAWAY error code of a
connection error, RST_STREAM and its code for a stream error, or the response.

Frames are built by hand (`frame()`; headers encoded with `hpack`, or raw bytes for malformed
blocks) and the server's frames read back by `Conn`, with short timeouts. The server is the
installed `pronghorn --http2` with h2c prior knowledge on the plain port (one server for the
module) and, for a few cases, TLS with ALPN h2 (one server for that class).

Where RFC 9113 lets a server answer in either of two ways (a stream error may always be
treated as a connection error, §5.4.1; a frame on a closed stream MAY be a connection error,
§5.1), both are accepted and the case says so. Cases already in test_http2.py (an even stream
ID, an oversized DATA frame, the CONTINUATION and rapid-reset floods, a header list over the
limit, host differing from :authority) are not repeated here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
from typing import NamedTuple

import hpack
import pytest

from conftest import UNDER_ASAN, ServerProcess, client_env
from test_tls import _client_context, _tls_args, certs  # noqa: F401  (certs: the fixture)

pytestmark = pytest.mark.pronghorn_only  # uvicorn has no HTTP/2

APP = "apps.h2_conformance_app:app"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# Error codes (§7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, \
    REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)
# SETTINGS parameters (§6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)
MAX_WINDOW = 2**31 - 1
# GET / http, :authority x, from HPACK's static table and a literal without indexing: a block
# that leaves the dynamic table as it was.
STATIC_GET = b"\x82\x84\x86\x01\x01x"

TIMEOUT = 3.0  # for an answer the server owes at once
QUIET = 0.3    # how long "nothing comes" is watched


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"", *, length: int | None = None) -> bytes:
    """One frame; `length` overrides the header's length field (a malformed frame)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream(stream_id: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def priority(stream_id: int, depends_on: int, weight: int = 15, exclusive: bool = False) -> bytes:
    return frame(PRIORITY, 0, stream_id, struct.pack(">IB", depends_on | (exclusive << 31), weight))


def request_fields(path: str = "/fixed", method: str = "GET", authority: str = "localhost",
                   scheme: str = "http", extra=()) -> list[tuple[str, str]]:
    return [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path), *extra]


class Frame(NamedTuple):
    type: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """RST_STREAM's or GOAWAY's error code."""
        return int.from_bytes(self.payload[4:8] if self.type == GOAWAY else self.payload[:4], "big")

    def __repr__(self) -> str:
        names = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY",
                 "WINDOW_UPDATE", "CONTINUATION"]
        kind = names[self.type] if self.type < len(names) else hex(self.type)
        extra = f" code={self.error_code}" if self.type in (GOAWAY, RST_STREAM) else ""
        return f"<{kind} flags={self.flags:#x} stream={self.stream_id} len={len(self.payload)}{extra}>"


class Response(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    frames: list[Frame]  # this stream's frames, in order

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class Closed(Exception):
    pass


class Conn:
    """One HTTP/2 client connection driven by hand: frames out as bytes, frames in one by one.

    Everything read is kept in `received`; HEADERS blocks are decoded as they come, so that the
    HPACK decoder stays in step with the server's encoder."""

    def __init__(self, srv: ServerProcess, *, tls: ssl.SSLContext | None = None, preface: bool = True,
                 handshake: bool = True, client_settings: tuple[tuple[int, int], ...] = (),
                 auto_window: bool = True):
        sock = socket.create_connection(srv.addr, timeout=TIMEOUT)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = b""
        self.received: list[Frame] = []
        self.closed = False
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 20
        self.blocks: dict[int, list[tuple[str, str]]] = {}  # decoded header blocks by frame index
        self.auto_window = auto_window  # answer each DATA frame with WINDOW_UPDATEs at once
        self.server_settings: dict[int, int] = {}
        self.send_window: dict[int, int] = {0: 65535}  # what the server lets us send, by stream
        self._pending_block = b""
        self.next_id = 1
        if preface:
            self.send(PREFACE + settings(*client_settings))
        if handshake:
            first = self.read_frame()
            # §3.4: the server's connection preface is a SETTINGS frame, the first it sends.
            assert first is not None and first.type == SETTINGS and not first.flags & ACK, first
            self.server_settings = {k: v for k, v in struct.iter_unpack(">HI", first.payload)}
            assert self.server_settings.get(INITIAL_WINDOW_SIZE, 65535) == 65535  # (the default)
            self.send(settings(ack=True))
            self.read_until(lambda f: f.type == SETTINGS and f.flags & ACK)

    # -- output ----------------------------------------------------------------------------
    def send(self, *data: bytes) -> None:
        self.sock.sendall(b"".join(data))

    def block(self, fields) -> bytes:
        return self.encoder.encode(fields)

    def headers_frame(self, stream_id: int, fields, *, end_stream: bool = True, end_headers: bool = True,
                      flags: int = 0) -> bytes:
        return frame(HEADERS, flags | (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0),
                     stream_id, self.block(fields))

    def new_stream(self) -> int:
        sid = self.next_id
        self.next_id += 2
        return sid

    def request(self, path: str = "/fixed", method: str = "GET", body: bytes | None = None, extra=(),
                stream_id: int | None = None) -> int:
        sid = self.new_stream() if stream_id is None else stream_id
        out = self.headers_frame(sid, request_fields(path, method, extra=extra), end_stream=body is None)
        if body is not None:
            out += frame(DATA, END_STREAM, sid, body)
        self.send(out)
        return sid

    def send_data(self, stream_id: int, body: bytes, *, end_stream: bool = True, pad: int = 0,
                  timeout: float = 10) -> None:
        """DATA frames of at most 16384 octets (padding included) within the server's windows,
        its WINDOW_UPDATEs read as needed (§6.9: padding counts against the windows too)."""
        deadline = time.monotonic() + timeout
        at = 0
        while at < len(body) or (at == 0 and not body):
            room = min(self.send_window[0], self.send_window.setdefault(stream_id, 65535))
            n = min(16384 - (pad + 1 if pad else 0), len(body) - at, room - (pad + 1 if pad else 0))
            if n <= 0 and body:
                self.read_until(lambda f: f.type == WINDOW_UPDATE, max(0.01, deadline - time.monotonic()))
                continue
            n = max(n, 0)
            last = at + n == len(body)
            payload = (bytes([pad]) + body[at:at + n] + b"\x00" * pad) if pad else body[at:at + n]
            self.send(frame(DATA, (END_STREAM if last and end_stream else 0) | (PADDED if pad else 0), stream_id,
                            payload))
            self.send_window[0] -= len(payload)
            self.send_window[stream_id] -= len(payload)
            at += n
            if not body:
                break

    def ping(self, data: bytes = b"conform!") -> None:
        self.send(frame(PING, 0, 0, data))

    # -- input -----------------------------------------------------------------------------
    def read_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame, None once the server has closed; TimeoutError if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + length:
                    f = Frame(self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF,
                              self.buf[9:9 + length])
                    self.buf = self.buf[9 + length:]
                    self._took(f)
                    return f
            if self.closed:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no frame within {timeout} s; so far: {self.received}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 16)
            except (socket.timeout, TimeoutError):
                raise TimeoutError(f"no frame within {timeout} s; so far: {self.received}") from None
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
            self.buf += data

    def _took(self, f: Frame) -> None:
        self.received.append(f)
        if f.type in (HEADERS, CONTINUATION, PUSH_PROMISE):
            payload = f.payload
            if f.type == HEADERS:
                pad = payload[0] if f.flags & PADDED else 0
                payload = payload[1 if f.flags & PADDED else 0:len(payload) - pad]
                if f.flags & PRIORITY_FLAG:
                    payload = payload[5:]
            self._pending_block += payload
            if f.flags & END_HEADERS:
                self.blocks[len(self.received) - 1] = self.decoder.decode(self._pending_block)
                self._pending_block = b""
        elif f.type == WINDOW_UPDATE and len(f.payload) == 4:
            self.send_window[f.stream_id] = self.send_window.get(f.stream_id, 65535) + (
                int.from_bytes(f.payload, "big") & 0x7FFFFFFF)
        elif f.type == DATA and self.auto_window and len(f.payload) > 0 and not self.closed:
            try:
                self.send(window_update(0, len(f.payload)), window_update(f.stream_id, len(f.payload)))
            except OSError:
                pass

    def read_until(self, pred, timeout: float = TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(max(0.01, deadline - time.monotonic()))
            if f is None:
                raise Closed(f"closed before the awaited frame; received: {self.received}")
            if pred(f):
                return f

    def frames_for(self, stream_id: int) -> list[Frame]:
        return [f for f in self.received if f.stream_id == stream_id]

    def quiet(self, seconds: float = QUIET) -> list[Frame]:
        """Whatever comes within `seconds` (the connection may close meanwhile)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                f = self.read_frame(left)
            except TimeoutError:
                break
            if f is None:
                break
            got.append(f)
        return got

    # -- what RFC 9113 asks ---------------------------------------------------------------
    def response(self, stream_id: int, timeout: float = TIMEOUT) -> Response:
        """Reads until the stream ends; fails on its reset or the connection's end."""
        self.read_until(lambda f: f.stream_id == stream_id and (f.flags & END_STREAM and f.type in (DATA, HEADERS)
                                                               or f.type == RST_STREAM) or f.type == GOAWAY,
                        timeout)
        frames = self.frames_for(stream_id)
        bad = [f for f in self.received if f.type == GOAWAY or (f.type == RST_STREAM and f.stream_id == stream_id)]
        assert not bad, f"stream {stream_id} not answered: {self.received}"
        indexes = [i for i, f in enumerate(self.received) if f.stream_id == stream_id and i in self.blocks]
        head = self.blocks[indexes[0]]
        status = int(dict(head)[":status"])
        body = b"".join(strip_padding(f) for f in frames if f.type == DATA)
        return Response(status, [(k, v) for k, v in head if not k.startswith(":")], body, frames)

    def expect_connection_error(self, *codes: int, timeout: float = TIMEOUT) -> Frame:
        """§5.4.1: GOAWAY with one of `codes`, then the connection closes."""
        f = self.read_until(lambda f: f.type == GOAWAY, timeout)
        assert f.error_code in codes, f"GOAWAY {f.error_code}, expected one of {codes}: {self.received}"
        assert f.stream_id == 0
        self.expect_closed()
        return f

    def expect_closed(self, timeout: float = TIMEOUT) -> None:
        """After a connection error's GOAWAY the server MUST close the TCP connection (§5.4.1)."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            assert time.monotonic() < deadline, f"not closed after {timeout} s: {self.received}"
            try:
                self.read_frame(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                pass

    def expect_stream_error(self, stream_id: int, *codes: int, connection_too: bool = False,
                            timeout: float = TIMEOUT) -> Frame:
        """§5.4.2: RST_STREAM on `stream_id` with one of `codes`. With `connection_too`, a GOAWAY
        with one of them is accepted as well (§5.4.1: an endpoint MAY treat a stream error as a
        connection error)."""
        f = self.read_until(lambda f: (f.type == RST_STREAM and f.stream_id == stream_id) or f.type == GOAWAY,
                            timeout)
        if f.type == GOAWAY:
            assert connection_too, f"GOAWAY where a stream error was expected: {self.received}"
            assert f.error_code in codes, f"GOAWAY {f.error_code}, expected one of {codes}: {self.received}"
            self.expect_closed()
        else:
            assert f.error_code in codes, f"RST_STREAM {f.error_code}, expected one of {codes}: {self.received}"
        return f

    def expect_alive(self) -> None:
        """The connection goes on: a PING is acknowledged, and no GOAWAY came before it."""
        data = os.urandom(8)
        self.ping(data)
        self.read_until(lambda f: f.type == PING and f.flags & ACK and f.payload == data)
        assert not [f for f in self.received if f.type == GOAWAY], self.received

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def strip_padding(f: Frame) -> bytes:
    if not f.flags & PADDED:
        return f.payload
    return f.payload[1:len(f.payload) - f.payload[0]]


# -- servers --------------------------------------------------------------------------------


def _server(tmp_path_factory, name: str, *args: str) -> ServerProcess:
    srv = ServerProcess(APP, ["--http2", "--no-access-log", *args], log_dir=tmp_path_factory.mktemp(name), name=name)
    srv.start()
    return srv


def _stop(srv: ServerProcess) -> None:
    rc = srv.stop()
    assert rc == 0, srv.stderr


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One h2c server for the module: connection errors end only their own connection."""
    s = _server(tmp_path_factory, "h2conf")
    yield s
    _stop(s)


@pytest.fixture
def conn(srv):
    c = Conn(srv)
    yield c
    c.close()


def held_stream(c: Conn, *, end_stream: bool = True, path: str = "/sleep?s=1") -> int:
    """A stream the server keeps open for a while: half-closed (remote) with END_STREAM (the
    app sleeps before answering), open without it (the app waits for the body)."""
    sid = c.new_stream()
    c.send(c.headers_frame(sid, request_fields(path if end_stream else "/echo", "GET" if end_stream else "POST"),
                           end_stream=end_stream))
    return sid


# == 3.4, 3.5 HTTP/2 connection preface ==================================================


class TestPreface:
    def test_server_preface_is_a_settings_frame_and_ours_is_acknowledged(self, srv):
        c = Conn(srv)  # asserts both (Conn's handshake)
        # §6.5.2: a server MUST NOT set SETTINGS_ENABLE_PUSH to 1 (omitted or 0).
        assert c.server_settings.get(ENABLE_PUSH, 0) == 0
        assert c.server_settings.get(MAX_CONCURRENT_STREAMS) == 100
        assert c.response(c.request()).body == b"hello, world"
        c.close()

    def test_preface_sent_one_byte_at_a_time(self, srv):
        c = Conn(srv, preface=False, handshake=False)
        for b in PREFACE:
            c.send(bytes([b]))
            time.sleep(0.001)
        c.send(settings())
        assert c.read_frame().type == SETTINGS
        assert c.response(c.request()).status == 200
        c.close()

    def test_invalid_preface_closes(self, srv):
        # §3.4: an invalid preface is a connection error PROTOCOL_ERROR; the GOAWAY MAY be
        # omitted. On the plain port, which serves HTTP/1 too, bytes that are not the preface
        # are HTTP/1's: the 505 for the "HTTP/2.0" request line, then the close, is the same
        # refusal. (Over TLS, where ALPN chose h2: TestTls.)
        c = Conn(srv, preface=False, handshake=False)
        c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
        deadline = time.monotonic() + TIMEOUT
        c.sock.settimeout(TIMEOUT)
        got = b""
        while time.monotonic() < deadline:
            try:
                data = c.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                break
            got += data
        else:
            pytest.fail(f"not closed: {got!r}")
        assert got == b"" or got[:13] in (b"HTTP/1.1 400 ", b"HTTP/1.1 505 ") or _goaway_code(got) == PROTOCOL_ERROR, \
            got
        c.close()

    def test_preface_not_followed_by_settings_is_a_protocol_error(self, srv):
        # §3.4: the client's preface is the magic followed by a SETTINGS frame.
        c = Conn(srv, preface=False, handshake=False)
        c.send(PREFACE + frame(PING, 0, 0, b"12345678"))
        c.expect_connection_error(PROTOCOL_ERROR)
        c.close()


def _goaway_code(data: bytes) -> int | None:
    at = 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at:at + 3], "big")
        if data[at + 3] == GOAWAY:
            return int.from_bytes(data[at + 13:at + 17], "big")
        at += 9 + length
    return None


# == 4.1 Frame format =====================================================================


class TestFrameFormat:
    @pytest.mark.parametrize("stream_id", [0, 1])
    def test_unknown_frame_type_is_ignored(self, conn, stream_id):
        # §4.1, §5.5: frames of unknown types MUST be discarded (on any stream, even an idle one).
        conn.send(frame(0xFA, 0xFF, stream_id, b"unknown"))
        conn.expect_alive()
        assert conn.response(conn.request()).status == 200

    def test_undefined_flags_are_ignored(self, conn):
        # §4.1: flags with no meaning for the frame type MUST be ignored.
        data = b"flags!!!"
        conn.send(frame(PING, 0xFE, 0, data))  # every flag but ACK
        f = conn.read_until(lambda f: f.type == PING)
        assert f.flags == ACK and f.payload == data

    def test_undefined_flags_on_headers_and_data_are_ignored(self, conn):
        sid = conn.new_stream()
        undefined = 0x02 | 0x10 | 0x40 | 0x80
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False, flags=undefined),
                  frame(DATA, END_STREAM | 0x02 | 0x04 | 0x10 | 0x20, sid, b"body"))
        r = conn.response(sid)
        assert r.status == 200 and r.body == b"body"

    def test_reserved_bit_is_ignored(self, conn):
        # §4.1: the reserved bit of the stream identifier MUST be ignored on receipt.
        data = b"reserved"
        conn.send(frame(PING, 0, 0x80000000, data))
        f = conn.read_until(lambda f: f.type == PING)
        assert f.flags == ACK and f.payload == data
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid | 0x80000000, request_fields()))
        assert conn.response(sid).status == 200


# == 4.2 Frame size =======================================================================


class TestFrameSize:
    def test_data_of_exactly_max_frame_size_is_accepted(self, conn):
        # §4.2: every endpoint MUST accept frames up to 2^14 octets.
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False),
                  frame(DATA, END_STREAM, sid, b"d" * 16384))
        r = conn.response(sid)
        assert r.header("x-body-length") == "16384"

    @pytest.mark.parametrize("kind", ["DATA", "HEADERS", "CONTINUATION", "PING", "SETTINGS", "unknown"])
    def test_frame_one_over_max_frame_size_is_a_frame_size_error(self, conn, kind):
        # §4.2: FRAME_SIZE_ERROR for a frame over SETTINGS_MAX_FRAME_SIZE (16384 here): a
        # connection error for frames that carry a field block or alter the connection (SETTINGS,
        # stream 0); for DATA a stream error would do (nghttp2 ends the connection). (Oversized
        # by far: test_http2.py's test_oversized_frame_is_a_frame_size_error.)
        big = b"\x00" * 16385
        if kind == "DATA":
            sid = held_stream(conn, end_stream=False)
            conn.send(frame(DATA, 0, sid, big))
            conn.expect_stream_error(sid, FRAME_SIZE_ERROR, connection_too=True)
            return
        if kind == "HEADERS":
            block = conn.block(request_fields())
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1,
                            bytes([255]) + block + b"\x00" * (16385 - 1 - len(block))))
        elif kind == "CONTINUATION":
            conn.send(frame(HEADERS, END_STREAM, 1, conn.block(request_fields())),
                      frame(CONTINUATION, END_HEADERS, 1, big))
        elif kind == "PING":
            conn.send(frame(PING, 0, 0, big))
        elif kind == "SETTINGS":
            conn.send(frame(SETTINGS, 0, 0, b"\x00" * 16386))  # (a multiple of 6, over the limit)
        else:
            conn.send(frame(0xFA, 0, 0, big))
        conn.expect_connection_error(FRAME_SIZE_ERROR)

    @pytest.mark.parametrize("limit", [16384, 20000])
    def test_server_frames_respect_the_clients_max_frame_size(self, srv, limit):
        c = Conn(srv, client_settings=((MAX_FRAME_SIZE, limit), (INITIAL_WINDOW_SIZE, 1 << 20)))
        c.send(window_update(0, 1 << 20))
        r = c.response(c.request("/length?n=100000"))
        assert len(r.body) == 100000
        assert max(len(f.payload) for f in r.frames) <= limit
        c.close()


# == 4.3 Header compression ===============================================================


class TestHeaderCompression:
    @pytest.mark.parametrize("block", [
        pytest.param(b"\x80", id="index-0"),
        pytest.param(b"\x82\xbe", id="index-beyond-tables"),  # 62: the empty dynamic table's first
        pytest.param(b"\x82\x86\x84\x0f\x55\x01x", id="literal-name-index-beyond-tables"),
        pytest.param(b"\x82\x86\x84\x01\x82\x1f\xff", id="huffman-padding-over-7-bits"),
        pytest.param(b"\x82\x86\x84\x01\x81\x18", id="huffman-padding-of-zeros"),
        pytest.param(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", id="integer-overflow"),
        pytest.param(b"\x82\x86\x84\x41\x83\xff\xff\xff", id="huffman-eos"),
        pytest.param(b"\x82\x86\x84\x41\x81", id="string-cut-short"),
        pytest.param(b"\x82\x86\x84\x3f\xe2\x1f", id="table-size-update-after-a-field"),
        pytest.param(b"\x3f\xe2\x1f\x82\x86\x84", id="table-size-update-beyond-the-limit"),
    ])
    def test_invalid_field_block_is_a_compression_error(self, conn, block):
        # §4.3: a decoding error in a field block MUST be a connection error COMPRESSION_ERROR.
        # RFC 7541 §4.2, §6.3: a table size update must start the block and stay within
        # SETTINGS_HEADER_TABLE_SIZE (4096, the server's default).
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
        conn.expect_connection_error(COMPRESSION_ERROR)

    def test_table_size_updates_within_the_limit_are_accepted(self, conn):
        # Two updates at the start of a block (RFC 7541 §4.2: the smallest, then the final size).
        block = b"\x20\x3f\xe1\x1f" + conn.block(request_fields())  # 0, then 4096
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
        assert conn.response(1).status == 200

    def test_dynamic_table_entries_are_kept_across_streams(self, conn):
        fields = request_fields(extra=[("x-custom", "a" * 100)])
        first = conn.request("/fixed", extra=fields[4:])
        assert conn.response(first).status == 200
        second = conn.request("/fixed", extra=fields[4:])  # hpack now refers to the dynamic table
        assert conn.response(second).status == 200

    def test_field_block_split_over_continuation_frames(self, conn):
        block = conn.block(request_fields(extra=[("x-long", "v" * 3000)]))
        conn.send(frame(HEADERS, END_STREAM, 1, block[:10]), frame(CONTINUATION, 0, 1, block[10:20]),
                  frame(CONTINUATION, END_HEADERS, 1, block[20:]))
        assert conn.response(1).status == 200

    @pytest.mark.parametrize("between", ["PRIORITY", "HEADERS-other-stream", "DATA", "PING", "unknown"])
    def test_frame_interleaved_in_a_field_block_is_a_protocol_error(self, conn, between):
        # §4.3, §6.2, §6.10: a field block is a contiguous sequence of frames; any other frame
        # (§5.5: even an unknown type) or a frame on another stream is a connection error
        # PROTOCOL_ERROR.
        block = conn.block(request_fields())
        inter = {"PRIORITY": priority(1, 0), "HEADERS-other-stream": frame(HEADERS, END_HEADERS, 3, STATIC_GET),
                 "DATA": frame(DATA, 0, 1, b"x"), "PING": frame(PING, 0, 0, b"12345678"),
                 "unknown": frame(0xFA, 0, 1, b"x")}[between]
        conn.send(frame(HEADERS, END_STREAM, 1, block[:3]), inter, frame(CONTINUATION, END_HEADERS, 1, block[3:]))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_client_header_table_size_zero_is_honoured(self, srv):
        # §6.5.2: SETTINGS_HEADER_TABLE_SIZE 0: the server's encoder may use no dynamic table.
        c = Conn(srv, client_settings=((HEADER_TABLE_SIZE, 0),))
        c.decoder.max_allowed_table_size = 0
        c.decoder.header_table_size = 0
        for _ in range(3):
            r = c.response(c.request("/fixed"))
            assert r.status == 200 and r.header("content-length") == "12"
        c.close()


# == 5.1 Stream states ====================================================================


class TestStreamStates:
    @pytest.mark.parametrize("kind", ["DATA", "RST_STREAM", "WINDOW_UPDATE", "CONTINUATION"])
    def test_frame_on_idle_stream_is_a_protocol_error(self, conn, kind):
        # §5.1 idle: any frame but HEADERS or PRIORITY is a connection error PROTOCOL_ERROR.
        conn.send({"DATA": frame(DATA, 0, 1, b"x"), "RST_STREAM": rst_stream(1),
                   "WINDOW_UPDATE": window_update(1, 100),
                   "CONTINUATION": frame(CONTINUATION, END_HEADERS, 1, STATIC_GET)}[kind])
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_priority_on_idle_stream_is_accepted(self, conn):
        conn.send(priority(5, 0))
        conn.expect_alive()
        # (The PRIORITY did not open stream 5: a lower ID may still open a stream.)
        assert conn.response(conn.request(stream_id=3)).status == 200

    @pytest.mark.parametrize("kind", ["DATA", "HEADERS"])
    def test_frame_on_half_closed_remote_stream_is_stream_closed(self, conn, kind):
        # §5.1 half-closed (remote): frames other than WINDOW_UPDATE, PRIORITY, RST_STREAM are a
        # stream error STREAM_CLOSED; nghttp2 makes it a connection error (allowed, §5.4.1).
        sid = held_stream(conn)
        conn.send(frame(DATA, 0, sid, b"late") if kind == "DATA" else frame(HEADERS, END_HEADERS | END_STREAM, sid,
                                                                               STATIC_GET))
        conn.expect_stream_error(sid, STREAM_CLOSED, connection_too=True)

    def test_continuation_on_half_closed_remote_stream_is_an_error(self, conn):
        # A CONTINUATION with no field block open is a connection error PROTOCOL_ERROR (§6.10);
        # STREAM_CLOSED (§5.1) is accepted as well.
        sid = held_stream(conn)
        conn.send(frame(CONTINUATION, END_HEADERS, sid, STATIC_GET))
        conn.expect_stream_error(sid, PROTOCOL_ERROR, STREAM_CLOSED, connection_too=True)

    @pytest.mark.parametrize("kind", ["WINDOW_UPDATE", "PRIORITY"])
    def test_window_update_and_priority_on_half_closed_remote_are_allowed(self, conn, kind):
        sid = held_stream(conn, path="/sleep?s=0.1")
        conn.send(window_update(sid, 1000) if kind == "WINDOW_UPDATE" else priority(sid, 0))
        r = conn.response(sid)
        assert r.status == 200 and r.body == b"slept"

    def test_rst_stream_on_half_closed_remote_closes_only_that_stream(self, conn):
        sid = held_stream(conn, path="/sleep?s=0.3")
        conn.send(rst_stream(sid, CANCEL))
        other = conn.request()
        assert conn.response(other).status == 200
        time.sleep(0.5)
        conn.expect_alive()
        # §6.4: after receiving RST_STREAM the server MUST NOT send frames for the stream
        # (but PRIORITY); nor does it answer the reset with one of its own (§5.4.2).
        assert [f for f in conn.frames_for(sid)] == [], conn.received

    @pytest.mark.parametrize("kind", ["DATA", "HEADERS", "WINDOW_UPDATE", "PRIORITY", "RST_STREAM"])
    @pytest.mark.parametrize("closed_by", ["client-reset", "end-stream-both-ways"])
    def test_frame_on_closed_stream(self, conn, kind, closed_by):
        # §5.1 closed: a server MAY treat any frame but PRIORITY as a connection error
        # STREAM_CLOSED. WINDOW_UPDATE and RST_STREAM may come for a while after the close
        # and MUST NOT be errors; PRIORITY is allowed always. nghttp2 keeps no closed streams
        # (no_closed_streams): it cannot tell the client's misbehaviour from frames in flight
        # after its own RST_STREAM, and discards them all (DATA still counted for the
        # connection window), which §5.1 permits too. Either way the stream is not served again.
        if closed_by == "client-reset":
            sid = held_stream(conn, path="/sleep?s=0.3")
            conn.send(rst_stream(sid, CANCEL))
        else:
            sid = conn.request()
            conn.response(sid)
        conn.send({"DATA": frame(DATA, 0, sid, b"late"), "HEADERS": frame(HEADERS, END_HEADERS | END_STREAM, sid,
                                                                          STATIC_GET),
                   "WINDOW_UPDATE": window_update(sid, 1000), "PRIORITY": priority(sid, 0),
                   "RST_STREAM": rst_stream(sid, CANCEL)}[kind])
        data = os.urandom(8)
        conn.ping(data)
        f = conn.read_until(lambda f: f.type == GOAWAY or (f.type == PING and f.payload == data)
                            or (f.stream_id == sid and f.type in (HEADERS, RST_STREAM)))
        if f.type == GOAWAY:
            assert kind in ("DATA", "HEADERS") and f.error_code in (STREAM_CLOSED, PROTOCOL_ERROR), conn.received
        else:
            # An answer on the stream would be HEADERS; RST_STREAM(STREAM_CLOSED) is allowed.
            assert f.type == PING or (f.type == RST_STREAM and f.error_code == STREAM_CLOSED), conn.received
            assert len([f for f in conn.frames_for(sid) if f.type == HEADERS]) == (closed_by != "client-reset")
            assert conn.response(conn.request()).status == 200


# == 5.1.1 Stream identifiers, 5.1.2 Stream concurrency ===================================


class TestStreamIdentifiers:
    # (An even stream ID: test_http2.py's test_even_stream_id_is_a_protocol_error.)

    def test_lower_stream_id_than_a_previous_one_is_a_protocol_error(self, conn):
        # §5.1.1: a new stream's identifier MUST be greater than all the client opened; an
        # unexpected identifier is a connection error PROTOCOL_ERROR. Stream 3 was skipped
        # (closed at once when 5 opened), so HEADERS on it cannot be a late frame of a stream.
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, STATIC_GET))
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, STATIC_GET))
        conn.expect_connection_error(PROTOCOL_ERROR)
        assert not [f for f in conn.received if f.stream_id == 3]

    def test_skipped_stream_ids_are_allowed(self, conn):
        # §5.1.1: an endpoint may skip identifiers.
        for sid in (1, 7, 101):
            assert conn.response(conn.request(stream_id=sid)).status == 200

    def test_the_highest_stream_ids_are_served(self, conn):
        # 2^31-1 is the last identifier a client can open (§5.1.1: then it needs a new
        # connection); it is served, and the connection stays usable.
        for sid in (MAX_WINDOW - 2, MAX_WINDOW):
            assert conn.response(conn.request(stream_id=sid)).status == 200
        conn.expect_alive()

    def test_stream_id_zero_for_headers_is_a_protocol_error(self, conn):
        # §6.2: HEADERS on stream 0 is a connection error PROTOCOL_ERROR.
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM, 0, STATIC_GET))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_streams_over_max_concurrent_streams_are_refused(self, conn):
        # §5.1.2: a HEADERS frame over SETTINGS_MAX_CONCURRENT_STREAMS (100) is a stream error
        # PROTOCOL_ERROR or REFUSED_STREAM; nghttp2 answers PROTOCOL_ERROR with GOAWAY once the
        # client has acknowledged the setting (a stream error may be a connection error).
        ids = [held_stream(conn, end_stream=False) for _ in range(100)]
        conn.expect_alive()
        over = held_stream(conn, end_stream=False)
        conn.expect_stream_error(over, REFUSED_STREAM, PROTOCOL_ERROR, connection_too=True)
        assert not [f for f in conn.received if f.stream_id in ids and f.type == RST_STREAM]

    def test_closed_streams_free_their_concurrency_slots(self, conn):
        for _ in range(3):
            ids = [conn.request() for _ in range(100)]
            for sid in ids:
                assert conn.response(sid).status == 200


# == 5.3 Priority, 5.4 Error handling, 5.5 Extending HTTP/2 =================================


class TestPriorityAndErrors:
    def test_headers_depending_on_itself_is_a_protocol_error(self, conn):
        # §5.3.1: a stream cannot depend on itself: stream error PROTOCOL_ERROR (nghttp2: a
        # connection error, allowed by §5.4.1).
        payload = struct.pack(">IB", 1, 15) + STATIC_GET
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, payload))
        conn.expect_stream_error(1, PROTOCOL_ERROR, connection_too=True)

    @pytest.mark.parametrize("state", ["idle", "half-closed"])
    def test_priority_depending_on_itself_is_a_protocol_error(self, conn, state):
        sid = held_stream(conn) if state == "half-closed" else 1
        conn.send(priority(sid, sid))
        conn.expect_stream_error(sid, PROTOCOL_ERROR, connection_too=True)

    def test_headers_with_priority_and_padding_is_served(self, conn):
        payload = bytes([4]) + struct.pack(">IB", 0x80000000, 200) + STATIC_GET + b"\x00" * 4
        conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG | PADDED, 1, payload))
        assert conn.response(1).status == 404  # GET / is not a route of the app: answered all the same

    def test_priority_depending_on_an_unknown_stream_is_accepted(self, conn):
        conn.send(priority(1, 99, exclusive=True))
        assert conn.response(conn.request()).status == 200

    def test_connection_error_sends_goaway_with_the_last_stream_then_closes(self, conn):
        # §5.4.1: GOAWAY with the last stream the server received, then the TCP close.
        sid = conn.request()
        conn.response(sid)
        conn.send(frame(PING, 0, 0, b"short"))
        f = conn.expect_connection_error(FRAME_SIZE_ERROR)
        assert int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF == sid

    def test_unknown_extension_frame_is_ignored_on_an_open_stream(self, conn):
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False),
                  frame(0xFA, 0, sid, b"extension"), frame(DATA, END_STREAM, sid, b"abc"))
        assert conn.response(sid).body == b"abc"

    def test_unknown_setting_and_error_codes_are_ignored(self, conn):
        # §5.5: unknown values in extensible fields MUST be ignored (a setting, an error code).
        conn.send(settings((0xFA, 1), (0x4242, 0xFFFFFFFF)))
        conn.read_until(lambda f: f.type == SETTINGS and f.flags & ACK)
        sid = held_stream(conn)
        conn.send(rst_stream(sid, 0xDEAD))
        conn.expect_alive()


# == 6.1 DATA, 6.2 HEADERS, 6.3 PRIORITY, 6.4 RST_STREAM =====================================


class TestFrameDefinitions:
    def test_data_on_stream_zero_is_a_protocol_error(self, conn):
        conn.send(frame(DATA, 0, 0, b"x"))
        conn.expect_connection_error(PROTOCOL_ERROR)

    @pytest.mark.parametrize("kind", ["DATA", "HEADERS"])
    @pytest.mark.parametrize("pad", [5, 6, 255])
    def test_padding_as_long_as_the_payload_is_a_protocol_error(self, conn, kind, pad):
        # §6.1, §6.2: Pad Length >= the payload's length is a connection error PROTOCOL_ERROR.
        if kind == "DATA":
            sid = held_stream(conn, end_stream=False)
            conn.send(frame(DATA, PADDED, sid, bytes([pad]) + b"abcd"))  # payload 5: pad 5+ leaves < 0 data
        else:
            conn.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, bytes([pad]) + b"\x82\x84\x86\x01"))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_padded_data_and_headers_are_accepted(self, conn):
        sid = conn.new_stream()
        block = conn.block(request_fields("/echo", "POST"))
        conn.send(frame(HEADERS, END_HEADERS | PADDED, sid, bytes([10]) + block + b"\x00" * 10),
                  frame(DATA, PADDED, sid, bytes([3]) + b"abc" + b"\x00" * 3),
                  frame(DATA, PADDED | END_STREAM, sid, bytes([0]) + b"def"))
        assert conn.response(sid).body == b"abcdef"

    def test_priority_on_stream_zero_is_a_protocol_error(self, conn):
        conn.send(frame(PRIORITY, 0, 0, struct.pack(">IB", 1, 15)))
        conn.expect_connection_error(PROTOCOL_ERROR)

    @pytest.mark.parametrize("length", [4, 6])
    def test_priority_of_wrong_length_is_a_frame_size_error(self, conn, length):
        # §6.3: a stream error FRAME_SIZE_ERROR (nghttp2: a connection error, §5.4.1).
        sid = held_stream(conn)
        conn.send(frame(PRIORITY, 0, sid, b"\x00" * length))
        conn.expect_stream_error(sid, FRAME_SIZE_ERROR, connection_too=True)

    def test_rst_stream_on_stream_zero_is_a_protocol_error(self, conn):
        conn.send(rst_stream(0))
        conn.expect_connection_error(PROTOCOL_ERROR)

    @pytest.mark.parametrize("length", [3, 5])
    def test_rst_stream_of_wrong_length_is_a_frame_size_error(self, conn, length):
        # §6.4: a connection error FRAME_SIZE_ERROR.
        sid = held_stream(conn)
        conn.send(frame(RST_STREAM, 0, sid, b"\x00" * length))
        conn.expect_connection_error(FRAME_SIZE_ERROR)


# == 6.5 SETTINGS =========================================================================


class TestSettings:
    def test_settings_are_acknowledged_in_order(self, conn):
        # §6.5.3: each SETTINGS frame is acknowledged, in the order received, with an empty ACK.
        conn.send(settings((MAX_CONCURRENT_STREAMS, 10)), settings(), settings((ENABLE_PUSH, 0)))
        for _ in range(3):
            f = conn.read_until(lambda f: f.type == SETTINGS)
            assert f.flags == ACK and f.payload == b"" and f.stream_id == 0
        conn.expect_alive()

    def test_settings_ack_with_payload_is_a_frame_size_error(self, conn):
        conn.send(frame(SETTINGS, ACK, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 100)))
        conn.expect_connection_error(FRAME_SIZE_ERROR)

    def test_settings_on_a_stream_is_a_protocol_error(self, conn):
        conn.send(frame(SETTINGS, 0, 1, b""))
        conn.expect_connection_error(PROTOCOL_ERROR)

    @pytest.mark.parametrize("length", [3, 7, 11])
    def test_settings_length_not_a_multiple_of_6_is_a_frame_size_error(self, conn, length):
        conn.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64\x00\x03\x00\x00\x00\x64"[:length]))
        conn.expect_connection_error(FRAME_SIZE_ERROR)

    @pytest.mark.parametrize("setting,value,code", [
        pytest.param(ENABLE_PUSH, 2, PROTOCOL_ERROR, id="enable-push-2"),
        pytest.param(INITIAL_WINDOW_SIZE, 2**31, FLOW_CONTROL_ERROR, id="initial-window-2^31"),
        pytest.param(INITIAL_WINDOW_SIZE, 0xFFFFFFFF, FLOW_CONTROL_ERROR, id="initial-window-2^32-1"),
        pytest.param(MAX_FRAME_SIZE, 16383, PROTOCOL_ERROR, id="max-frame-size-16383"),
        pytest.param(MAX_FRAME_SIZE, 2**24, PROTOCOL_ERROR, id="max-frame-size-2^24"),
    ])
    def test_setting_out_of_range_is_a_connection_error(self, conn, setting, value, code):
        # §6.5.2.
        conn.send(settings((setting, value)))
        conn.expect_connection_error(code)

    @pytest.mark.parametrize("setting,value", [
        (ENABLE_PUSH, 0), (ENABLE_PUSH, 1), (INITIAL_WINDOW_SIZE, MAX_WINDOW), (MAX_FRAME_SIZE, 16384),
        (MAX_FRAME_SIZE, 2**24 - 1), (HEADER_TABLE_SIZE, 0), (HEADER_TABLE_SIZE, 2**32 - 1),
        (MAX_CONCURRENT_STREAMS, 0), (MAX_HEADER_LIST_SIZE, 1), (0xFA, 7)])
    def test_setting_in_range_or_unknown_is_accepted(self, conn, setting, value):
        conn.send(settings((setting, value)))
        conn.read_until(lambda f: f.type == SETTINGS and f.flags & ACK)
        conn.expect_alive()

    def test_values_in_one_frame_are_applied_in_order(self, srv):
        # §6.5.3: values are processed in the order they appear: the last window (1) counts.
        c = Conn(srv, client_settings=((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1)), auto_window=False)
        sid = c.request("/length?n=100")
        f = c.read_until(lambda f: f.type == DATA and f.stream_id == sid)
        assert len(f.payload) == 1
        c.close()


# == 6.7 PING, 6.8 GOAWAY =================================================================


class TestPingGoaway:
    def test_ping_is_echoed_with_ack(self, conn):
        data = bytes(range(8))
        conn.ping(data)
        f = conn.read_until(lambda f: f.type == PING)
        assert (f.flags, f.stream_id, f.payload) == (ACK, 0, data)

    def test_ping_ack_is_not_answered(self, conn):
        # §6.7: an endpoint MUST NOT respond to a PING with ACK.
        conn.send(frame(PING, ACK, 0, b"unasked!"))
        conn.expect_alive()
        assert [f.payload for f in conn.received if f.type == PING and f.payload == b"unasked!"] == []

    def test_ping_on_a_stream_is_a_protocol_error(self, conn):
        conn.send(frame(PING, 0, 1, b"12345678"))
        conn.expect_connection_error(PROTOCOL_ERROR)

    @pytest.mark.parametrize("length", [0, 7, 9])
    def test_ping_of_wrong_length_is_a_frame_size_error(self, conn, length):
        conn.send(frame(PING, 0, 0, b"p" * length))
        conn.expect_connection_error(FRAME_SIZE_ERROR)

    def test_goaway_on_a_stream_is_a_protocol_error(self, conn):
        conn.send(frame(GOAWAY, 0, 1, struct.pack(">II", 0, NO_ERROR)))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_open_streams_finish_after_the_clients_goaway(self, conn):
        # §6.8: the client's GOAWAY concerns streams the server would start; the client's own
        # open streams are still answered.
        sid = held_stream(conn, path="/sleep?s=0.2")
        conn.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR)))
        r = conn.response(sid)
        assert r.body == b"slept"


# == 6.9 WINDOW_UPDATE, 6.9.1 flow-control window, 6.9.2 initial window size ==================


class TestWindowUpdate:
    def test_zero_increment_on_the_connection_is_a_protocol_error(self, conn):
        conn.send(window_update(0, 0))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_zero_increment_on_a_stream_is_a_stream_error(self, conn):
        # §6.9: a stream error PROTOCOL_ERROR (a connection error allowed, §5.4.1).
        sid = held_stream(conn)
        conn.send(window_update(sid, 0))
        conn.expect_stream_error(sid, PROTOCOL_ERROR, connection_too=True)

    def test_connection_window_over_2_31_minus_1_is_a_flow_control_error(self, conn):
        # §6.9.1: for the connection, GOAWAY FLOW_CONTROL_ERROR. (65535 + (2^31 - 65535) = 2^31.)
        conn.send(window_update(0, MAX_WINDOW - 65535), window_update(0, 1))
        conn.expect_connection_error(FLOW_CONTROL_ERROR)

    def test_stream_window_over_2_31_minus_1_is_a_flow_control_error(self, conn):
        # §6.9.1: for a stream, RST_STREAM FLOW_CONTROL_ERROR; the connection goes on.
        sid = held_stream(conn)
        conn.send(window_update(sid, MAX_WINDOW - 65535), window_update(sid, 1))
        conn.expect_stream_error(sid, FLOW_CONTROL_ERROR)
        conn.expect_alive()

    def test_window_up_to_exactly_2_31_minus_1_is_accepted(self, conn):
        sid = held_stream(conn, path="/sleep?s=0.1")
        conn.send(window_update(0, MAX_WINDOW - 65535), window_update(sid, MAX_WINDOW - 65535))
        assert conn.response(sid).body == b"slept"

    @pytest.mark.parametrize("length", [3, 5])
    def test_window_update_of_wrong_length_is_a_frame_size_error(self, conn, length):
        conn.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x01\x00"[:length]))
        conn.expect_connection_error(FRAME_SIZE_ERROR)

    def test_window_update_reserved_bit_is_ignored(self, conn):
        conn.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x80000000 | 100)))
        conn.expect_alive()

    def test_initial_window_of_1_gives_a_first_data_frame_of_1_byte(self, srv):
        # §6.9.1: the server MUST NOT send more than the window allows.
        c = Conn(srv, client_settings=((INITIAL_WINDOW_SIZE, 1),), auto_window=False)
        sid = c.request("/length?n=100")
        f = c.read_until(lambda f: f.type == DATA and f.stream_id == sid)
        assert len(f.payload) == 1 and not f.flags & END_STREAM
        assert not [f for f in c.quiet() if f.type == DATA]
        c.send(window_update(sid, 99))
        got = c.read_until(lambda f: f.type == DATA and f.stream_id == sid)
        assert len(got.payload) == 99
        c.close()

    def test_window_update_on_half_closed_remote_lets_the_response_flow(self, srv):
        c = Conn(srv, client_settings=((INITIAL_WINDOW_SIZE, 0),), auto_window=False)
        sid = c.request("/length?n=3000")
        head = c.read_until(lambda f: f.stream_id == sid)
        assert head.type == HEADERS and not head.flags & END_STREAM
        assert not [f for f in c.quiet() if f.type == DATA]
        c.send(window_update(sid, 3000))
        body = b""
        while len(body) < 3000:
            body += c.read_until(lambda f: f.type == DATA and f.stream_id == sid).payload
        assert body == b"l" * 3000
        c.close()

    def test_initial_window_change_applies_to_open_streams(self, srv):
        # §6.9.2: a new SETTINGS_INITIAL_WINDOW_SIZE changes every open stream's window by the
        # difference.
        c = Conn(srv, client_settings=((INITIAL_WINDOW_SIZE, 0),), auto_window=False)
        sid = c.request("/length?n=1000")
        c.read_until(lambda f: f.type == HEADERS and f.stream_id == sid)
        c.send(settings((INITIAL_WINDOW_SIZE, 100)))
        f = c.read_until(lambda f: f.type == DATA and f.stream_id == sid)
        assert len(f.payload) == 100
        c.close()

    def test_initial_window_change_can_make_a_window_negative(self, srv):
        # §6.9.2: a window may go negative; the server MUST NOT send until WINDOW_UPDATEs make
        # it positive again.
        c = Conn(srv, client_settings=((INITIAL_WINDOW_SIZE, 100),), auto_window=False)
        sid = c.request("/length?n=1000")
        assert len(c.read_until(lambda f: f.type == DATA and f.stream_id == sid).payload) == 100  # window 0
        c.send(settings((INITIAL_WINDOW_SIZE, 50)))  # window -50
        c.read_until(lambda f: f.type == SETTINGS and f.flags & ACK)
        c.send(window_update(sid, 50))  # window 0
        assert not [f for f in c.quiet() if f.type == DATA]
        c.send(window_update(sid, 10))  # window 10
        assert len(c.read_until(lambda f: f.type == DATA and f.stream_id == sid).payload) == 10
        c.close()

    def test_initial_window_change_overflowing_an_open_stream_is_a_flow_control_error(self, srv):
        # §6.9.2: a change that makes any window exceed 2^31-1 is a connection error
        # FLOW_CONTROL_ERROR.
        c = Conn(srv)
        sid = held_stream(c)
        c.send(window_update(sid, MAX_WINDOW - 65535))  # the stream's window: 2^31-1
        c.expect_alive()
        c.send(settings((INITIAL_WINDOW_SIZE, 65536)))
        c.expect_connection_error(FLOW_CONTROL_ERROR)
        c.close()


# == 6.10 CONTINUATION ====================================================================


class TestContinuation:
    def test_continuation_after_a_complete_header_block_is_a_protocol_error(self, conn):
        sid = held_stream(conn)
        conn.send(frame(CONTINUATION, END_HEADERS, sid, b""))
        conn.expect_connection_error(PROTOCOL_ERROR, STREAM_CLOSED)

    def test_continuation_on_another_stream_is_a_protocol_error(self, conn):
        block = conn.block(request_fields())
        conn.send(frame(HEADERS, END_STREAM, 1, block[:3]), frame(CONTINUATION, END_HEADERS, 3, block[3:]))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_continuation_on_stream_zero_is_a_protocol_error(self, conn):
        block = conn.block(request_fields())
        conn.send(frame(HEADERS, END_STREAM, 1, block[:3]), frame(CONTINUATION, END_HEADERS, 0, block[3:]))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_empty_continuation_frames_complete_a_block(self, conn):
        block = conn.block(request_fields())
        conn.send(frame(HEADERS, END_STREAM, 1, block), frame(CONTINUATION, 0, 1, b""),
                  frame(CONTINUATION, END_HEADERS, 1, b""))
        assert conn.response(1).status == 200


# == 8.1 HTTP message exchanges, 8.2 fields, 8.3 pseudo-headers ============================

GET = request_fields()
MALFORMED_REQUESTS = {
    # §8.2.1: field names MUST be lower case; no NUL, CR, LF in values; names are tokens.
    "uppercase-name": GET + [("X-Upper", "1")],
    "uppercase-pseudo-header": [(":METHOD", "GET")] + GET[1:],
    "space-in-name": GET + [("x bad", "1")],
    "colon-in-name": GET + [("x:bad", "1")],
    "empty-name": GET + [("", "1")],
    "nul-in-value": GET + [("x-bad", "a\x00b")],
    "cr-in-value": GET + [("x-bad", "a\rb")],
    "lf-in-value": GET + [("x-bad", "a\nb")],
    "leading-space-in-value": GET + [("x-bad", " a")],
    # §8.2.2: connection-specific fields are malformed; TE may only be "trailers".
    "connection": GET + [("connection", "keep-alive")],
    "keep-alive": GET + [("keep-alive", "timeout=5")],
    "proxy-connection": GET + [("proxy-connection", "keep-alive")],
    "transfer-encoding": GET + [("transfer-encoding", "chunked")],
    "upgrade": GET + [("upgrade", "h2c")],
    "te-gzip": GET + [("te", "gzip")],
    "te-trailers-and-gzip": GET + [("te", "trailers, gzip")],
    # §8.3: pseudo-headers: only those defined, each once, before the regular fields, and
    # the request's (:status is a response's); :method, :scheme, :path required, :path not empty.
    "missing-method": GET[1:],
    "missing-scheme": [GET[0]] + GET[2:],
    "missing-path": GET[:3],
    "empty-path": GET[:3] + [(":path", "")],
    "duplicate-method": GET + [(":method", "GET")],
    "duplicate-path": GET + [(":path", "/fixed")],
    "duplicate-scheme": GET + [(":scheme", "http")],
    "unknown-pseudo-header": GET + [(":foo", "bar")],
    "status-in-request": GET + [(":status", "200")],
    "pseudo-header-after-regular": GET[:3] + [("x-a", "1"), GET[3]],
    # §8.5: CONNECT has :method and :authority only.
    "connect-without-authority": [(":method", "CONNECT")],
    "connect-with-path": [(":method", "CONNECT"), (":authority", "example.com:443"), (":path", "/")],
    "connect-with-scheme": [(":method", "CONNECT"), (":authority", "example.com:443"), (":scheme", "https")],
}


class TestHttpMessages:
    @pytest.mark.parametrize("name", list(MALFORMED_REQUESTS))
    def test_malformed_request_is_a_stream_error(self, conn, name):
        # §8.1.1: a malformed request is a stream error PROTOCOL_ERROR; the connection goes on
        # and the app never sees the request.
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, MALFORMED_REQUESTS[name]))
        conn.expect_stream_error(sid, PROTOCOL_ERROR)
        assert not [f for f in conn.frames_for(sid) if f.type == HEADERS]
        assert conn.response(conn.request()).status == 200

    def test_te_trailers_is_accepted(self, conn):
        assert conn.response(conn.request(extra=[("te", "trailers")])).status == 200

    @pytest.mark.parametrize("declared,sent", [(3, 4), (5, 4), (0, 1), (10, 0)])
    def test_content_length_not_matching_data_is_a_stream_error(self, conn, declared, sent):
        # §8.1.1: content-length differing from the sum of the DATA payloads is malformed.
        sid = conn.new_stream()
        out = conn.headers_frame(sid, request_fields("/echo", "POST", extra=[("content-length", str(declared))]),
                                 end_stream=sent == 0)
        if sent:
            out += frame(DATA, END_STREAM, sid, b"x" * sent)
        conn.send(out)
        conn.expect_stream_error(sid, PROTOCOL_ERROR)
        conn.expect_alive()

    @pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-content-length"])
    def test_request_body_reaches_the_app(self, conn, with_length):
        body = os.urandom(100_000)  # over the 64 KiB stream window: the app's reads open it
        sid = conn.new_stream()
        extra = [("content-length", str(len(body)))] if with_length else []
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST", extra=extra), end_stream=False))
        conn.send_data(sid, body)
        r = conn.response(sid, timeout=10)
        assert r.body == body and r.header("x-body-length") == str(len(body))
        assert r.header("x-content-length") == (str(len(body)) if with_length else "none")

    def test_trailers_are_accepted_and_the_request_served(self, conn):
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False),
                  frame(DATA, 0, sid, b"part"),
                  conn.headers_frame(sid, [("x-checksum", "abc"), ("x-more", "1")], end_stream=True))
        r = conn.response(sid)
        assert r.status == 200 and r.body == b"part"

    def test_trailers_right_after_the_head_are_accepted(self, conn):
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False),
                  conn.headers_frame(sid, [("x-checksum", "abc")], end_stream=True))
        assert conn.response(sid).body == b""

    @pytest.mark.parametrize("trailer", [[(":path", "/x")], [("X-Upper", "1")], [("connection", "close")]],
                             ids=["pseudo-header", "uppercase", "connection-specific"])
    def test_malformed_trailers_are_a_stream_error(self, conn, trailer):
        # §8.1: trailers MUST NOT include pseudo-headers; §8.2 applies to them as to the head.
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False),
                  frame(DATA, 0, sid, b"part"), conn.headers_frame(sid, trailer, end_stream=True))
        conn.expect_stream_error(sid, PROTOCOL_ERROR)

    def test_second_header_block_without_end_stream_is_a_stream_error(self, conn):
        # §8.1: a HEADERS frame after the request head that does not end the stream is malformed.
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False),
                  conn.headers_frame(sid, [("x-trailer", "1")], end_stream=False))
        conn.expect_stream_error(sid, PROTOCOL_ERROR)

    def test_host_without_authority_is_served(self, conn):
        # §8.3.1: a request may carry host instead of :authority.
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/fixed"),
                                           ("host", "example.com")]))
        assert conn.response(sid).status == 200

    @pytest.mark.parametrize("stream_id", [0, 1])
    def test_push_promise_from_a_client_is_a_protocol_error(self, conn, stream_id):
        # §8.4: a server MUST treat the receipt of PUSH_PROMISE as a connection error
        # PROTOCOL_ERROR.
        if stream_id:
            held_stream(conn)
        conn.send(frame(PUSH_PROMISE, END_HEADERS, stream_id, struct.pack(">I", 2) + STATIC_GET))
        conn.expect_connection_error(PROTOCOL_ERROR)

    def test_connect_is_answered_not_served(self, conn):
        # §8.5: a well-formed CONNECT; the server is no proxy (405, as over HTTP/1).
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, [(":method", "CONNECT"), (":authority", "example.com:443")],
                                     end_stream=False))
        assert conn.response(sid).status == 405


# == Responses ============================================================================


class TestResponses:
    def test_connection_specific_response_headers_are_not_sent(self, conn):
        # §8.2.2: connection-specific fields MUST NOT be sent: an app's are dropped.
        r = conn.response(conn.request("/conn-headers"))
        names = [k for k, _ in r.headers]
        for name in ("connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"):
            assert name not in names, r.headers
        assert r.header("x-kept") == "yes" and r.body == b"ok"
        assert all(k == k.lower() for k in names)

    def test_head_response_has_no_data(self, conn):
        # RFC 9110 §9.3.2: no content; HEADERS ends the stream, with the GET's content-length.
        r = conn.response(conn.request("/fixed", "HEAD"))
        assert r.status == 200 and r.header("content-length") == "12"
        assert [f.type for f in r.frames] == [HEADERS] and r.frames[0].flags & END_STREAM

    @pytest.mark.parametrize("code", [204, 304])
    def test_204_and_304_have_no_data(self, conn, code):
        r = conn.response(conn.request(f"/status?code={code}"))
        assert r.status == code
        assert [f.type for f in r.frames] == [HEADERS] and r.frames[0].flags & END_STREAM

    @pytest.mark.parametrize("n", [0, 1, 16384, 100_000])
    def test_content_length_matches_the_data_sent(self, conn, n):
        r = conn.response(conn.request(f"/length?n={n}"), timeout=10)
        assert r.header("content-length") == str(n) and len(r.body) == n

    @pytest.mark.parametrize("declared,sent", [(5000, 3000), (3000, 5000)], ids=["shorter", "longer"])
    def test_body_not_matching_the_apps_content_length_is_reset(self, conn, declared, sent):
        # §8.1.1: a response whose DATA differs from its content-length is malformed: the
        # stream is reset (INTERNAL_ERROR) rather than ended, never more than declared sent.
        sid = conn.request(f"/length?n={sent}&declared={declared}")
        f = conn.read_until(lambda f: f.stream_id == sid and (f.type == RST_STREAM or f.flags & END_STREAM))
        assert f.type == RST_STREAM and f.error_code == INTERNAL_ERROR, conn.frames_for(sid)
        got = sum(len(d.payload) for d in conn.frames_for(sid) if d.type == DATA)
        assert got <= min(declared, sent)
        conn.expect_alive()

    def test_response_without_content_length_ends_with_end_stream(self, conn):
        r = conn.response(conn.request("/stream?n=50000"), timeout=10)
        assert r.header("content-length") is None and len(r.body) == 50000
        assert r.frames[-1].flags & END_STREAM

    def test_status_and_header_names_are_well_formed(self, conn):
        sid = conn.request("/fixed")
        r = conn.response(sid)
        head = conn.blocks[[i for i, f in enumerate(conn.received) if f.stream_id == sid and i in conn.blocks][0]]
        assert head[0][0] == ":status" and [k for k, _ in head].count(":status") == 1
        assert all(k == k.lower() for k, _ in head)
        assert r.header("content-type") == "text/plain"


# == Flow control in practice (RFC 9113 §5.2, §6.9) ========================================


def _progress(c: Conn, key: str) -> dict:
    sid = c.request(f"/progress?key={key}")
    c.send(window_update(sid, 65535))  # (with a zero initial window, this stream's own opening)
    return json.loads(c.response(sid).body)


class TestFlowControl:
    def test_zero_window_held_forever_bounds_the_server_and_spares_other_streams(self, srv):
        # The client never opens the stream's window: the app's send() waits (the server frames
        # nothing and buffers a bounded amount), its memory stays flat, and the connection's other
        # streams are served. (After 60 s of it the stream is reset: tests/cpp/http2.)
        c = Conn(srv, client_settings=((INITIAL_WINDOW_SIZE, 0),), auto_window=False)
        c.send(window_update(0, 1 << 30))  # only the stream's own window is held closed
        key = os.urandom(4).hex()
        held = c.request(f"/infinite?key={key}")
        c.read_until(lambda f: f.type == HEADERS and f.stream_id == held)
        time.sleep(0.3)
        rss = srv.rss_kib()
        first = _progress(c, key)["sent"]
        time.sleep(0.5)
        assert _progress(c, key)["sent"] == first, "send() did not wait for the window"
        # What the app could hand over: the stream's buffer bound (64 KiB) and a piece.
        assert first <= 128 * 1024, first
        assert not [f for f in c.frames_for(held) if f.type == DATA]
        # Other streams of the connection are served meanwhile, body and all.
        other = c.request("/length?n=200000")
        c.send(window_update(other, 200000))
        assert len(c.response(other, timeout=10).body) == 200000
        if not UNDER_ASAN:
            assert srv.rss_kib() - rss < 8 * 1024, (rss, srv.rss_kib())
        # Opening the window lets the response flow again.
        c.send(window_update(held, 100000))
        got = 0
        while got < 100000:
            got += len(c.read_until(lambda f: f.type == DATA and f.stream_id == held).payload)
        assert _progress(c, key)["sent"] > first
        c.close()
        # The client's close reaches the app (its send loop ends).
        probe = Conn(srv)
        deadline = time.monotonic() + 5
        while not _progress(probe, key)["ended"]:
            assert time.monotonic() < deadline, "the app never learnt that the client left"
            time.sleep(0.05)
        probe.close()

    def test_connection_window_refills_as_bodies_are_consumed(self, conn):
        # 10 x 30 000 octets on one connection, over 4 times its 65 535-octet window: possible
        # only because the server gives the connection window back (WINDOW_UPDATE on stream 0).
        for _ in range(10):
            body = os.urandom(30_000)
            sid = conn.new_stream()
            conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False))
            conn.send_data(sid, body)
            assert conn.response(sid).body == body
        assert [f for f in conn.received if f.type == WINDOW_UPDATE and f.stream_id == 0]

    def test_padding_counts_and_is_given_back(self, conn):
        # §6.1, §6.9: padding counts against the windows; the server gives it back as well.
        for _ in range(3):
            body = os.urandom(40_000)
            sid = conn.new_stream()
            conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False))
            conn.send_data(sid, body, pad=200)
            assert conn.response(sid).body == body

    def test_data_discarded_after_an_early_response_is_given_back(self, conn):
        # The app answers without reading the body: the server ends the stream (RST_STREAM
        # NO_ERROR, §8.1) while the client's DATA is in flight. That DATA is discarded but still
        # counts for the connection window (§6.9), which the server must give back, or the
        # connection's later uploads would stall.
        for _ in range(3):
            sid = conn.new_stream()
            conn.send(conn.headers_frame(sid, request_fields("/fixed", "POST"), end_stream=False))
            assert conn.response(sid).body == b"hello, world"
            conn.send_data(sid, b"z" * 60_000)  # within the windows, all after the response
        body = os.urandom(60_000)
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False))
        conn.send_data(sid, body)
        assert conn.response(sid).body == body

    def test_stream_window_opens_only_as_the_app_reads(self, conn):
        # The server's 64 KiB stream window bounds what a stream may send before its app reads.
        sid = conn.new_stream()
        conn.send(conn.headers_frame(sid, request_fields("/echo", "POST"), end_stream=False))
        conn.send_data(sid, b"a" * 65535, end_stream=False)
        assert conn.send_window[sid] <= 65535  # (any WINDOW_UPDATE came as the app read)
        conn.send_data(sid, b"b" * 100_000)
        assert len(conn.response(sid).body) == 165535


# == Floods and misuse ====================================================================


class TestFloods:
    @pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
    def test_flood_from_a_client_that_does_not_read_is_bounded(self, srv, kind):
        # A client that sends PINGs (or SETTINGS) and never reads their acknowledgements: the
        # server stops reading it once its output backs up (or ends it: ENHANCE_YOUR_CALM), so
        # its memory stays bounded, and other connections are served meanwhile.
        c = Conn(srv)
        rss = srv.rss_kib()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        one = frame(PING, 0, 0, b"floodfld") if kind == "PING" else settings()
        chunk = one * 4096
        sent = 0
        c.sock.settimeout(0.5)
        try:
            while sent < 64 * 1024 * 1024:
                c.sock.sendall(chunk)
                sent += len(chunk)
        except (TimeoutError, socket.timeout, OSError):
            pass
        assert sent < 64 * 1024 * 1024, "the server read a flood it could not answer"
        if not UNDER_ASAN:
            assert srv.rss_kib() - rss < 32 * 1024, (rss, srv.rss_kib())
        other = Conn(srv)
        assert other.response(other.request()).status == 200
        other.close()
        c.close()

    def test_ping_burst_from_a_reading_client_is_answered(self, conn):
        conn.send(b"".join(frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(1000)))
        acks = 0
        while acks < 1000:
            f = conn.read_until(lambda f: f.type in (PING, GOAWAY))
            assert f.type == PING, conn.received[-5:]
            acks += 1
        conn.expect_alive()

    def test_empty_data_frame_flood_is_cheap_or_refused(self, conn):
        # Empty DATA frames without END_STREAM (CVE-2019-9518): 200 000 of them cost the server
        # only their parsing (nghttp2 keeps no state for them), or it may end the connection
        # (ENHANCE_YOUR_CALM). Either way it answers the PING that follows them.
        sid = held_stream(conn, end_stream=False)
        conn.send(frame(DATA, 0, sid, b"") * 200_000)
        data = os.urandom(8)
        conn.ping(data)
        f = conn.read_until(lambda f: f.type == GOAWAY or (f.type == PING and f.payload == data), timeout=10)
        assert f.type == PING or f.error_code == ENHANCE_YOUR_CALM, conn.received[-3:]
        if f.type == PING:
            conn.send_data(sid, b"end")
            assert conn.response(sid).body == b"end"

    def test_settings_with_many_entries_is_refused(self, conn):
        # nghttp2 accepts at most 32 entries in one SETTINGS frame: beyond, ENHANCE_YOUR_CALM.
        conn.send(settings(*[(MAX_CONCURRENT_STREAMS, 100)] * 100))
        conn.expect_connection_error(ENHANCE_YOUR_CALM)



# == Over TLS with ALPN h2 ================================================================


@pytest.fixture(scope="class")
def tls_srv(tmp_path_factory, certs):  # noqa: F811
    s = _server(tmp_path_factory, "h2conf-tls", *_tls_args(certs))
    yield s
    _stop(s)


@pytest.fixture(scope="class")
def ctx(certs):  # noqa: F811
    ctx = _client_context(certs)
    ctx.set_alpn_protocols(["h2"])
    return ctx


class TestTls:
    def test_alpn_h2_then_the_server_preface_and_a_request(self, tls_srv, ctx):
        c = Conn(tls_srv, tls=ctx)
        r = c.response(c.request("/echo", "POST", body=b"over tls"))
        assert r.body == b"over tls"
        c.close()

    @pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 24 + settings(),
                                         b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"], ids=["http1", "zeros", "wrong-magic"])
    def test_invalid_preface_is_a_protocol_error(self, tls_srv, ctx, garbage):
        # §3.4: where ALPN chose h2 there is no HTTP/1 fallback: GOAWAY(PROTOCOL_ERROR), which
        # MAY be omitted, then the close.
        c = Conn(tls_srv, tls=ctx, preface=False, handshake=False)
        c.send(garbage)
        frames = []
        while (f := c.read_frame()) is not None:
            frames.append(f)
        assert [f.type for f in frames] in ([SETTINGS, GOAWAY], [GOAWAY], [SETTINGS], []), frames
        assert all(f.error_code == PROTOCOL_ERROR for f in frames if f.type == GOAWAY)
        c.close()

    def test_connection_error_over_tls(self, tls_srv, ctx):
        c = Conn(tls_srv, tls=ctx)
        c.send(frame(DATA, 0, 1, b"idle"))
        c.expect_connection_error(PROTOCOL_ERROR)
        c.close()

    def test_stream_error_over_tls_leaves_the_connection_usable(self, tls_srv, ctx):
        c = Conn(tls_srv, tls=ctx)
        sid = c.new_stream()
        c.send(c.headers_frame(sid, GET + [("connection", "close")]))
        c.expect_stream_error(sid, PROTOCOL_ERROR)
        r = c.response(c.request(extra=[("te", "trailers")]))
        assert r.status == 200
        c.close()

    def test_scheme_https_and_large_bodies_over_tls(self, tls_srv, ctx):
        c = Conn(tls_srv, tls=ctx)
        body = os.urandom(200_000)
        sid = c.new_stream()
        c.send(c.headers_frame(sid, request_fields("/echo", "POST", scheme="https"), end_stream=False))
        c.send_data(sid, body)
        assert c.response(sid, timeout=10).body == body
        c.close()


# == Real clients: nghttp and h2load ======================================================


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) is not installed")
def test_nghttp_upload_with_trailers(srv, tmp_path):
    body = tmp_path / "body"
    body.write_bytes(os.urandom(300_000))
    out = subprocess.run(["nghttp", "-v", "-d", str(body), "--trailer", "x-checksum: 1", f"{srv.url}/echo"],
                         capture_output=True, timeout=20, env=client_env())
    assert out.returncode == 0, out.stderr
    assert b"x-checksum: 1" in out.stdout  # (nghttp -v shows the trailer it sent)
    assert b"x-body-length: 300000" in out.stdout, out.stdout[-2000:]


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load_uploads_have_no_failure(srv, tmp_path):
    body = tmp_path / "body"
    body.write_bytes(os.urandom(100_000))
    out = subprocess.run(["h2load", "-n", "200", "-c", "4", "-m", "10", "-d", str(body), f"{srv.url}/echo"],
                         capture_output=True, text=True, timeout=60, env=client_env())
    assert out.returncode == 0, out.stdout + out.stderr
    done = [line for line in out.stdout.splitlines() if line.startswith("requests:")][0]
    assert "200 succeeded, 0 failed, 0 errored, 0 timeout" in done, out.stdout
    assert "200 2xx" in out.stdout, out.stdout
