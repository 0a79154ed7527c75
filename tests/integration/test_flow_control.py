"""Back-pressure: 1 GiB transfers must not be buffered in the server."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from conftest import ResponseReader

GIB = 1024 ** 3
RSS_BUDGET_KIB = 64 * 1024
CHUNK = 256 * 1024


class RssSampler(threading.Thread):
    def __init__(self, srv, interval=0.05):
        super().__init__(daemon=True)
        self.srv = srv
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop_evt = threading.Event()

    def run(self):
        while not self._stop_evt.is_set():
            try:
                self.peak = max(self.peak, self.srv.rss_kib())
                self.samples += 1
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop_evt.wait(self.interval)

    def stop(self):
        self._stop_evt.set()
        self.join(timeout=5)


def _warm_idle_rss(srv) -> int:
    # Warm up the code paths (so lazily-allocated buffers count as idle), then measure.
    with srv.connect() as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"a" * 1048576)
        ResponseReader(s, 10).read_response()
        s.sendall(b"GET /stream?n=1048576 HTTP/1.1\r\nHost: x\r\n\r\n")
        ResponseReader(s, 10).read_response()
    time.sleep(0.3)
    return srv.rss_kib()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_1gib_upload_rss_bounded(server_factory):
    srv = server_factory("apps.raw_app:app", "--no-access-log")
    idle = _warm_idle_rss(srv)
    sampler = RssSampler(srv)
    sampler.start()
    t0 = time.monotonic()
    piece = b"u" * CHUNK
    with srv.connect(timeout=30) as s:
        s.sendall(b"POST /upload?pause_after=%d&pause=2 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % (GIB // 4, GIB))
        sent = 0
        while sent < GIB:
            s.sendall(piece)
            sent += len(piece)
        r = ResponseReader(s, 30).read_response()
    sampler.stop()
    elapsed = time.monotonic() - t0
    assert r.status == 200
    assert json.loads(r.body)["bytes"] == GIB
    assert sampler.samples > 5
    assert sampler.peak - idle < RSS_BUDGET_KIB, f"RSS grew {(sampler.peak - idle) / 1024:.0f} MiB (idle {idle} KiB)"
    assert elapsed < 60, f"1 GiB upload took {elapsed:.1f}s"


def _count_chunked_payload(s: socket.socket, buf: bytearray, pause_after: int) -> int:
    """Consume a chunked body without keeping it; returns the payload size.

    Sleeps 2 s once pause_after bytes were read: a server without back-pressure would
    buffer the rest of the response in memory during that pause.
    """
    payload = 0
    paused = False

    def fill():
        data = s.recv(1024 * 1024)
        assert data, f"connection closed early after {payload} payload bytes"
        buf.extend(data)

    while True:
        while b"\r\n" not in buf[:64]:
            fill()
        idx = buf.index(b"\r\n")
        size = int(bytes(buf[:idx]).split(b";")[0], 16)
        del buf[:idx + 2]
        if size == 0:
            while len(buf) < 2:
                fill()
            assert bytes(buf[:2]) == b"\r\n"
            return payload
        need = size + 2
        while need:
            if not buf:
                fill()
            take = min(need, len(buf))
            del buf[:take]
            need -= take
        payload += size
        if not paused and payload > pause_after:
            paused = True
            time.sleep(2)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_1gib_download_rss_bounded(server_factory):
    srv = server_factory("apps.raw_app:app", "--no-access-log")
    idle = _warm_idle_rss(srv)
    sampler = RssSampler(srv)
    sampler.start()
    t0 = time.monotonic()
    with srv.connect(timeout=30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        s.sendall(b"GET /stream?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % GIB)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = s.recv(65536)
            assert data
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in head.lower()
        payload = _count_chunked_payload(s, bytearray(rest), pause_after=GIB // 4)
    sampler.stop()
    elapsed = time.monotonic() - t0
    assert payload == GIB
    assert sampler.peak - idle < RSS_BUDGET_KIB, f"RSS grew {(sampler.peak - idle) / 1024:.0f} MiB (idle {idle} KiB)"
    assert elapsed < 60, f"1 GiB download took {elapsed:.1f}s"
