"""Listener options (--uds, --fd, --host, --backlog) and event loops."""

from __future__ import annotations

import os
import socket
import stat

import httpx
import pytest

from conftest import IS_UVICORN


def test_uds(server_factory, tmp_path):
    path = tmp_path / "pronghorn.sock"
    srv = server_factory("apps.raw_app:app", "--uds", str(path), port=None)
    assert srv.bound == str(path), srv.stderr
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, timeout=5) as c:
        r = c.get("http://localhost/fixed")
        assert r.status_code == 200 and r.text == "hello, world"
        r = c.post("http://localhost/echo", content=b"over uds")
        assert r.content == b"over uds"
        scope = c.get("http://localhost/scope").json()
    # ASGI: for unix sockets, client/server are None or a (path, None)-like pair; never a bogus IP.
    assert scope["client"] in (None, ["", 0]) or scope["client"][0] != "127.0.0.1"
    srv.stop()
    assert srv.returncode == 0
    assert not path.exists(), "unix socket file left behind"


def test_fd(server_factory):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    try:
        srv = server_factory("apps.raw_app:app", "--fd", str(fd), port=None, pass_fds=(fd,))
        r = httpx.get(f"http://127.0.0.1:{port}/fixed", timeout=5)
        assert r.status_code == 200 and r.text == "hello, world"
        scope = httpx.get(f"http://127.0.0.1:{port}/scope", timeout=5).json()
        assert scope["server"] == ["127.0.0.1", port]
    finally:
        sock.close()


def test_fd_unix_socket(server_factory, tmp_path):
    path = str(tmp_path / "fd.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    fd = sock.fileno()
    try:
        server_factory("apps.raw_app:app", "--fd", str(fd), port=None, pass_fds=(fd,))
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=5) as c:
            assert c.get("http://localhost/fixed").text == "hello, world"
    finally:
        sock.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "auto"])
def test_loop(server_factory, loop):
    srv = server_factory("apps.raw_app:app", "--loop", loop)
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{srv.url}/fixed").text == "hello, world"
        assert c.post(f"{srv.url}/echo", content=b"x" * 300000).content == b"x" * 300000
        assert c.get(f"{srv.url}/sleep?s=0.1").text == "slept"
        r = c.get(f"{srv.url}/stream?n=1000000")
        assert len(r.content) == 1000000


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_loop_fastapi(server_factory, tmp_path, loop):
    srv = server_factory("apps.fastapi_app:app", "--loop", loop, env={"PRONGHORN_TEST_WORKDIR": str(tmp_path)})
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{srv.url}/").json() == {"hello": "world"}
        assert c.get(f"{srv.url}/state").json()["db"] == "fake-db-connection"
        assert c.get(f"{srv.url}/sync?x=2").json() == {"sync": True, "x": 6}


def test_host_explicit(server_factory):
    srv = server_factory("apps.raw_app:app", host="127.0.0.1")
    assert srv.host == "127.0.0.1"
    assert httpx.get(f"{srv.url}/fixed", timeout=5).status_code == 200


def test_backlog_option_accepted(server_factory):
    srv = server_factory("apps.raw_app:app", "--backlog", "16")
    assert httpx.get(f"{srv.url}/fixed", timeout=5).status_code == 200


def test_port_in_use_fails(server_factory, tmp_path):
    from conftest import ServerProcess

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        p = ServerProcess("apps.raw_app:app", log_dir=tmp_path, port=port, name="inuse")
        p.start(wait=False)
        rc = p.wait_exit(timeout=15)
        assert rc != 0
        assert "address already in use" in p.stderr.lower() or "errno 98" in p.stderr.lower(), p.stderr
    finally:
        blocker.close()
