"""What the server does when the application misbehaves."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import ResponseReader, is_closed, recv_until_closed


def test_raise_before_start_gives_500(server_factory):
    srv = server_factory("apps.raw_app:app")
    r = httpx.get(f"{srv.url}/raise-before", timeout=5)
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    srv.wait_for_log(r"Exception in ASGI application")
    assert "Traceback" in srv.stderr
    assert "raise-before-start marker" in srv.stderr
    # The server keeps serving.
    assert httpx.get(f"{srv.url}/fixed", timeout=5).status_code == 200


def test_raise_before_start_closes_connection(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"GET /raise-before HTTP/1.1\r\nHost: x\r\n\r\n")
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"connection: close" in data.lower()


@pytest.mark.parametrize("path", ["/raise-mid", "/raise-mid-chunked"])
def test_raise_mid_response_closes_connection(server_factory, path):
    srv = server_factory("apps.raw_app:app")
    with srv.connect() as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"partial" in data
    # The response is truncated: no chunked terminator, no 100 bytes of body.
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        assert not body.endswith(b"0\r\n\r\n")
    else:
        assert len(body) < 100
    srv.wait_for_log(r"Exception in ASGI application")
    assert "raise-mid-response marker" in srv.stderr


def test_return_without_response_gives_500(server_factory):
    srv = server_factory("apps.raw_app:app")
    r = httpx.get(f"{srv.url}/no-response", timeout=5)
    assert r.status_code == 500
    srv.wait_for_log(r"ASGI callable returned without (starting response|completing response|sending)")


def _send_after_disconnect(srv, tmp_path) -> dict:
    out = tmp_path / "sad.json"
    with srv.connect() as s:
        s.sendall(f"GET /send-after-disconnect?out={out} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return json.loads(out.read_text())


def test_send_after_disconnect_is_dropped(raw_server, tmp_path):
    """ASGI 2.3, uvicorn's: a send() after the client left returns and the message is dropped."""
    result = _send_after_disconnect(raw_server, tmp_path)
    assert result["raised"] is None, result


@pytest.mark.pronghorn_only
def test_send_after_disconnect_raises_oserror_with_spec_2_4(server_factory, tmp_path):
    srv = server_factory("apps.raw_app:app", "--asgi-spec-version", "2.4")
    result = _send_after_disconnect(srv, tmp_path)
    assert result["raised"] is not None, "send() after disconnect did not raise"
    assert result["is_oserror"], result
    assert "OSError" in result["mro"]
    # The app's own handling of it ends the exchange quietly: no error line.
    time.sleep(0.2)
    assert "Exception in ASGI application" not in srv.stderr


def test_disconnect_event_delivered(raw_server, tmp_path):
    out = tmp_path / "wd.json"
    with raw_server.connect() as s:
        s.sendall(f"POST /wait-disconnect?out={out} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi".encode())
        time.sleep(0.3)
        assert not out.exists()
        closed_at = time.time()
    deadline = time.monotonic() + 5
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    result = json.loads(out.read_text())
    assert result["type"] == "http.disconnect"
    assert result["time"] - closed_at < 2


def test_server_survives_client_abort_mid_download(raw_server):
    for _ in range(3):
        with raw_server.connect() as s:
            s.sendall(b"GET /stream?n=50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1000)
    r = httpx.get(f"{raw_server.url}/fixed", timeout=5)
    assert r.status_code == 200


def test_server_survives_client_abort_mid_upload(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 1000)
    r = httpx.get(f"{raw_server.url}/fixed", timeout=5)
    assert r.status_code == 200


def test_404(raw_server):
    with raw_server.connect() as s:
        s.sendall(b"GET /does-not-exist HTTP/1.1\r\nHost: x\r\n\r\n")
        r = ResponseReader(s).read_response()
        assert r.status == 404
        assert r.reason == "Not Found"
        assert not is_closed(s, timeout=0.3)


@pytest.mark.parametrize("case, message", [
    ("body-before-start", "Expected ASGI message 'http.response.start', but got 'http.response.body'."),
    ("start-twice", "Expected ASGI message 'http.response.body', but got 'http.response.start'."),
    ("unknown-type", "Unexpected ASGI message type 'http.response.bogus' for an HTTP connection."),
])
def test_send_misuse_raises_runtime_error_saying_what_was_wrong(raw_server, case, message):
    r = httpx.get(raw_server.url + f"/misuse?case={case}", timeout=5)
    assert r.status_code == 200
    assert r.text == f"RuntimeError: {message}"


def test_receive_after_the_response_gives_http_disconnect(raw_server):
    with httpx.Client(base_url=raw_server.url, timeout=5) as client:
        assert client.get("/receive-after-response").text == "done"
        # The connection stays open (keep-alive): the disconnect comes from
        # the completed response, not from the client going away.
        deadline = time.monotonic() + 3
        while (log := client.get("/after-response-log").json()) == [] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log == ["http.disconnect"]
