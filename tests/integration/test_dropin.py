"""Drop-in behaviour that real apps found different from uvicorn (issue 14, points 1-9).

Every test here that is not marked pronghorn_only asserts uvicorn's behaviour and passes
under PRONGHORN_TEST_SERVER=uvicorn too.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import HERE, IS_UVICORN, ResponseReader, server_command

APP = "apps.dropin_app:app"


def _wait_file(path: Path, timeout: float = 5.0) -> dict | list:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} was not written within {timeout}s")
        time.sleep(0.02)
    return json.loads(path.read_text())


# -- 1. several receive() calls waiting at once ----------------------------------------------

@pytest.mark.parametrize("method", ["GET", "POST"])
def test_several_receivers_wait_at_once(server_factory, tmp_path, method):
    """Two tasks wait in receive() (sse-starlette's disconnect watcher and the app's own
    is_disconnected()): no error, the body reaches the receivers once and in order, and
    every waiter gets http.disconnect when the client leaves."""
    srv = server_factory(APP)
    out = tmp_path / "watched.json"
    body = b"".join(b"part-%04d;" % i for i in range(2000))
    with srv.connect() as s:
        head = f"{method} /stream-watched?out={out}&watchers=2 HTTP/1.1\r\nHost: x\r\n"
        if method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n")
        if method == "POST":
            for i in range(0, len(body), 4096):  # in pieces, so that it arrives in several messages
                s.sendall(body[i:i + 4096])
                time.sleep(0.002)
        reader = ResponseReader(s)
        _version, status, _reason, _headers = reader.read_head()
        assert status == 200
        while reader.buf.count(b"tick") < 3:
            reader._fill()
    result = _wait_file(out)
    received = result["watchers"]
    assert len(received) == 2
    for messages in received:
        assert messages[-1][0] == "http.disconnect", messages
    # Each body byte reached one receiver, in order.
    assert result["body"].encode("latin-1") == (body if method == "POST" else b"")
    assert "receive() called while another" not in srv.stderr
    assert "Exception in ASGI application" not in srv.stderr


def test_polling_is_disconnected_does_not_pile_up_waiters(server_factory):
    """Starlette's is_disconnected() cancels a receive() at once; polled on every event of a
    stream while a watcher waits, the cancelled waiters must not accumulate."""
    srv = server_factory(APP)
    r = httpx.get(f"{srv.url}/poll-disconnected", params={"n": 3000}, timeout=30)
    assert r.status_code == 200
    assert int(r.text) < 100, f"{r.text} Futures alive after 3000 polls"


# -- 2. the head goes out at http.response.start ---------------------------------------------

def test_head_is_sent_before_a_late_first_body(server_factory):
    srv = server_factory(APP)
    with srv.connect() as s:
        t0 = time.monotonic()
        s.sendall(b"GET /slow-head?delay=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(s, timeout=5)
        _version, status, _reason, _headers = reader.read_head()
        head_after = time.monotonic() - t0
        assert status == 200
        assert head_after < 1.0, f"head came after {head_after:.2f}s"
        resp_body = b""
        while b"late body" not in reader.buf + resp_body:
            reader._fill()
        assert time.monotonic() - t0 >= 1.9


def test_error_after_start_sends_the_head_then_closes(server_factory):
    """As uvicorn: the 200 head is out, the body is cut (curl: 'transfer closed with 100 bytes
    remaining'), and the error is logged."""
    srv = server_factory(APP)
    with srv.connect() as s:
        s.sendall(b"GET /raise-after-start HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        s.settimeout(5)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert b"content-length: 100\r\n" in data.lower()
    assert data.endswith(b"\r\n\r\n"), data  # nothing of the body
    srv.wait_for_log(r"Exception in ASGI application")


def test_httpx_read_timeout_shorter_than_the_first_event(server_factory):
    srv = server_factory(APP)
    with httpx.Client(timeout=httpx.Timeout(5.0, read=1.5)) as client:
        t0 = time.monotonic()
        with client.stream("GET", f"{srv.url}/slow-head?delay=3") as r:
            assert r.status_code == 200
            assert time.monotonic() - t0 < 1.0
            with pytest.raises(httpx.ReadTimeout):
                r.read()


# -- 3. ASGI 2.3: Starlette listens for disconnects; nothing logged when a client leaves -----

def test_starlette_stream_closed_at_once_when_the_client_leaves(server_factory, tmp_path):
    srv = server_factory(APP)
    out = tmp_path / "closed.json"
    with srv.connect() as s:
        s.sendall(f"GET /st/stream?out={out} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reader = ResponseReader(s)
        reader.read_head()
        while reader.buf.count(b"chunk") < 2:
            reader._fill()
        left_at = time.time()
    closed = _wait_file(out, timeout=5)
    assert closed["closed_at"] - left_at < 0.7, closed["closed_at"] - left_at
    time.sleep(0.3)
    assert "ERROR" not in srv.stderr, srv.stderr
    assert "Traceback" not in srv.stderr, srv.stderr


def test_many_clients_leaving_streams_log_nothing(server_factory):
    srv = server_factory(APP)
    for _ in range(20):
        with srv.connect() as s:
            s.sendall(b"GET /st/sse HTTP/1.1\r\nHost: x\r\n\r\n")
            reader = ResponseReader(s)
            reader.read_head()
            while b"event 0" not in reader.buf:
                reader._fill()
    time.sleep(0.5)
    assert "ERROR" not in srv.stderr, srv.stderr
    assert "Traceback" not in srv.stderr, srv.stderr


def test_an_apps_own_oserror_in_a_stream_is_an_app_error(server_factory):
    """The app's FileNotFoundError is not mistaken for a client disconnect."""
    srv = server_factory(APP)
    with srv.connect() as s:
        s.sendall(b"GET /st/stream-fnf HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        while s.recv(65536):
            pass
    srv.wait_for_log(r"Exception in ASGI application")
    assert "FileNotFoundError" in srv.stderr
    assert "ClientDisconnect" not in srv.stderr


# -- 4. FileResponse behind GZipMiddleware is compressed, as under uvicorn ----------------------

def test_gzip_middleware_compresses_file_responses(server_factory, tmp_path):
    f = tmp_path / "page.txt"
    text = "".join(f"line {i} of a compressible text file\n" for i in range(600)).encode()
    f.write_bytes(text)
    srv = server_factory(APP)
    r = httpx.get(f"{srv.url}/st/file", params={"path": str(f)}, headers={"accept-encoding": "gzip"}, timeout=10)
    assert r.status_code == 200
    assert r.headers.get("content-encoding") == "gzip"
    assert "accept-encoding" in r.headers.get("vary", "").lower()
    assert r.content == text  # httpx decompressed it
    assert int(r.headers.get("content-length", len(gzip.compress(text)))) < len(text) // 4


# -- 5. a graceful stop does not wait for open streams -----------------------------------------

@pytest.mark.pronghorn_only
@pytest.mark.parametrize("workers", [1, 2])
def test_stop_with_an_open_event_stream(server_factory, workers):
    args = ["--workers", str(workers)] if workers > 1 else []
    srv = server_factory(APP, *args)
    with srv.connect() as s:
        s.sendall(b"GET /st/sse HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(s)
        reader.read_head()
        while b"event 1" not in reader.buf:
            reader._fill()
        t0 = time.monotonic()
        rc = srv.stop(signal.SIGINT, timeout=10)
        took = time.monotonic() - t0
        assert rc == 0, srv.stderr
        assert took < 4.0, f"stop took {took:.1f}s"
        s.settimeout(3)
        while True:  # the stream ends (the client sees the close)
            try:
                if not s.recv(65536):
                    break
            except ConnectionResetError:
                break
    assert "Closed 1 streaming response(s) to stop." in srv.stderr
    assert "ERROR" not in srv.stderr, srv.stderr


@pytest.mark.pronghorn_only
def test_graceful_streams_timeout_is_capped_by_the_graceful_timeout(server_factory):
    srv = server_factory(APP, "--timeout-graceful-streams", "30", "--timeout-graceful-shutdown", "1")
    with srv.connect() as s:
        s.sendall(b"GET /st/sse HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(s)
        reader.read_head()
        t0 = time.monotonic()
        assert srv.stop(signal.SIGINT, timeout=10) == 0
        assert time.monotonic() - t0 < 3.0


def test_stop_waits_for_a_response_of_known_length(server_factory):
    """Only streams of unknown length are ended early: a request in flight is answered."""
    srv = server_factory(APP)
    with srv.connect() as s:
        s.sendall(b"GET /slow?delay=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        srv.send_signal(signal.SIGINT)
        resp = ResponseReader(s, timeout=5).read_response()
        assert resp.status == 200 and resp.body == b"slow done"
    assert srv.wait_exit(10) == 0


# -- 6. tasks the app leaves running are cleaned up at exit ------------------------------------

def test_tasks_left_running_are_cancelled_at_exit(server_factory, tmp_path):
    srv = server_factory(APP)
    out = tmp_path / "finally.json"
    r = httpx.get(f"{srv.url}/background", params={"out": str(out)}, timeout=5)
    assert r.text == "started"
    assert srv.stop(signal.SIGINT) == 0
    assert _wait_file(out, timeout=1) == {"finally_ran": True}
    assert "Task was destroyed but it is pending" not in srv.stderr


def test_forced_exit_is_clean_and_truthful(server_factory):
    """SIGTERM, then SIGINT while a request is in flight: a forced exit, with no warning
    about a destroyed lifespan task and no false 'lifespan unsupported' line."""
    srv = server_factory(APP)
    with srv.connect() as s:
        s.sendall(b"GET /slow?delay=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        srv.send_signal(signal.SIGTERM)
        srv.wait_for_log(r"Waiting for connections to close", timeout=5)
        srv.send_signal(signal.SIGINT)
        srv.wait_exit(10)
    err = srv.stderr
    assert "Task was destroyed but it is pending" not in err, err
    assert "appears unsupported" not in err, err


# -- 7/8. the access log -----------------------------------------------------------------------

@pytest.mark.parametrize("target,logged", [
    ("/meta/%7Efoo", "/meta/~foo"),
    ("/a%20b?x=%20&y=1", "/a%20b?x=%20&y=1"),
    ("/caf%C3%A9", "/caf%C3%A9"),
    ("/caf%c3%a9/x%2Fy", "/caf%C3%A9/x/y"),
    ("http://example.com/?x=1", "/?x=1"),
    ("/q?", "/q"),
    ("/bad%ff", "/bad%EF%BF%BD"),
])
def test_access_log_path_is_uvicorns(server_factory, target, logged):
    srv = server_factory(APP)
    with srv.connect() as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode())
        ResponseReader(s).read_response()
    m = srv.wait_for_log(r'"GET (\S+) HTTP/1\.1" 404', stream="stdout")
    assert m.group(1) == logged


def test_access_log_path_has_the_root_path(server_factory):
    srv = server_factory(APP, "--root-path", "/prefix")
    httpx.get(f"{srv.url}/state", timeout=5)
    m = srv.wait_for_log(r'"GET (\S+) HTTP/1\.1" 404', stream="stdout")
    assert m.group(1) == "/prefix/state"


def test_access_line_comes_before_a_later_traceback(tmp_path):
    """stdout and stderr on one file (as on a terminal): the access line of a response that
    started comes before the traceback of the error that followed it."""
    log = tmp_path / "both.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(server_command() + [APP, "--port", "0"], cwd=HERE, stdout=f, stderr=f,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    try:
        deadline = time.monotonic() + 20
        port = None
        while port is None and time.monotonic() < deadline:
            m = re.search(r"running on http://127\.0\.0\.1:(\d+)", log.read_text())
            port = int(m.group(1)) if m else None
            time.sleep(0.05)
        assert port, log.read_text()
        for path in ("/raise-after-start", "/raise-after-start", "/raise-after-start", "/short-body"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                s.settimeout(5)
                while s.recv(65536):
                    pass
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
    text = log.read_text()
    positions = [m.start() for m in re.finditer(r'"GET /raise-after-start HTTP/1\.1" 200', text)]
    errors = [m.start() for m in re.finditer(r"Exception in ASGI application", text)]
    # Three from /raise-after-start, a fourth from /short-body (send() raises there, as in uvicorn).
    assert len(positions) == 3 and len(errors) == 4, text
    for access, error in zip(positions, errors):
        assert access < error, text
    # The same for a line of the server's own (uvicorn: "Response content shorter than Content-Length").
    access = text.index('"GET /short-body HTTP/1.1" 200')
    assert access < text.index("Response content shorter than Content-Length"), text


# -- 9. an upgrade that nothing serves -------------------------------------------------------

def test_unsupported_upgrade_is_logged(server_factory):
    srv = server_factory(APP)
    with srv.connect() as s:
        # An upgrade to something other than WebSocket (h2c is not served over HTTP/1).
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        resp = ResponseReader(s).read_response()
    assert resp.status == 404  # served as plain HTTP, as uvicorn serves it
    srv.wait_for_log(r"WARNING:  Unsupported upgrade request\.")
