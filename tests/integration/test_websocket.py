"""WebSockets through the ASGI websocket protocol, with real clients (the `websockets` library and
aiohttp), against the installed server: messages, close codes, denial responses, the scope, the
options, logs, FastAPI under several workers, and graceful stop with open WebSockets.

The same tests run against uvicorn (PRONGHORN_TEST_SERVER=uvicorn): the differential check.
Tests of behaviour where Pronghorn chose differently are marked pronghorn_only, with the reason.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import aiohttp
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import IS_UVICORN

RAW = "apps.ws_app:raw"
FASTAPI = "apps.ws_app:app"


def ws_url(srv, path: str) -> str:
    host, port = srv.addr
    return f"ws://{host}:{port}{path}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def read_log(path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def wait_log(path, predicate, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = read_log(path)
        if any(predicate(e) for e in entries):
            return entries
        time.sleep(0.05)
    raise AssertionError(f"no matching record in {read_log(path)}")


@pytest.fixture
def ws_log(tmp_path):
    return tmp_path / "ws.log"


@pytest.fixture
def raw_ws(server_factory, ws_log):
    return server_factory(RAW, env={"WS_TEST_LOG": str(ws_log)})


# ---- messages ------------------------------------------------------------------------------

def test_echo_text_and_binary_with_the_websockets_client(raw_ws):
    async def main():
        async with connect(ws_url(raw_ws, "/echo"), max_size=None) as ws:
            for text in ["hello", "", "héllo wörld ✓ 𝄞", "x" * 70000]:
                await ws.send(text)
                assert await ws.recv() == text
            for data in [b"\x00\x01\x02", b"", bytes(range(256)) * 1000]:
                await ws.send(data)
                assert await ws.recv() == data
            # A fragmented message arrives whole.
            await ws.send(["frag", "ment", "ed"])
            assert await ws.recv() == "fragmented"
    run(main())


def test_echo_with_aiohttp_client(raw_ws):
    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url(raw_ws, "/echo")) as ws:
                await ws.send_str("from aiohttp")
                assert (await ws.receive()).data == "from aiohttp"
                await ws.send_bytes(b"\xff" * 100000)
                assert (await ws.receive()).data == b"\xff" * 100000
                await ws.close(code=4000, message=b"done")
            return ws.close_code
    assert run(main()) == 4000


def test_compression_is_negotiated_and_works(raw_ws):
    async def main():
        async with connect(ws_url(raw_ws, "/echo"), compression="deflate") as ws:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            payload = "compressible " * 5000
            await ws.send(payload)
            assert await ws.recv() == payload
            return extensions
    assert "permessage-deflate" in run(main())


def test_compression_off_with_the_option(server_factory):
    srv = server_factory(RAW, "--ws-per-message-deflate", "false")

    async def main():
        async with connect(ws_url(srv, "/echo"), compression="deflate") as ws:
            await ws.send("x" * 1000)
            assert await ws.recv() == "x" * 1000
            return ws.response.headers.get("Sec-WebSocket-Extensions")
    assert run(main()) is None


def test_client_close_code_and_reason_reach_the_app(raw_ws, ws_log):
    async def main():
        async with connect(ws_url(raw_ws, "/echo")) as ws:
            await ws.send("hi")
            await ws.recv()
            await ws.close(code=4321, reason="bye now")
    run(main())
    entries = wait_log(ws_log, lambda e: e.get("path") == "/echo")
    disconnect = entries[-1]["disconnect"]
    assert disconnect["type"] == "websocket.disconnect"
    assert disconnect["code"] == 4321
    assert disconnect.get("reason", "bye now") == "bye now"


def test_server_close_code_and_reason_reach_the_client(raw_ws, ws_log):
    async def main():
        async with connect(ws_url(raw_ws, "/close?code=4001&reason=going")) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd
    rcvd = run(main())
    assert (rcvd.code, rcvd.reason) == (4001, "going")
    entry = wait_log(ws_log, lambda e: e.get("path") == "/close")[-1]
    assert entry["after"]["type"] == "websocket.disconnect"
    assert entry["after"]["code"] == 4001


def test_scope(raw_ws):
    async def main():
        async with connect(ws_url(raw_ws, "/scope?x=1"), subprotocols=["chat", "superchat"],
                           additional_headers={"X-Test": "yes"}) as ws:
            return json.loads(await ws.recv())
    scope = run(main())
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "x=1"
    assert scope["http_version"] == "1.1"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["subprotocols"] == ["chat", "superchat"]
    assert "websocket.http.response" in scope["extensions"]
    assert "method" not in scope
    headers = dict(scope["headers"])
    assert headers["x-test"] == "yes"
    assert headers["upgrade"].lower() == "websocket"
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"][1] == raw_ws.addr[1]


def test_subprotocol_and_accept_headers(raw_ws):
    async def main():
        async with connect(ws_url(raw_ws, "/subprotocol"), subprotocols=["v2.proto", "v1.proto"]) as ws:
            chosen = await ws.recv()
            negotiated = ws.subprotocol
        async with connect(ws_url(raw_ws, "/accept-headers")) as ws:
            accepted = ws.response.headers.get("x-accepted")
        return chosen, negotiated, accepted
    assert run(main()) == ("v2.proto", "v2.proto", "yes")


# ---- denial and errors ---------------------------------------------------------------------

def test_close_before_accept_is_403(raw_ws, ws_log):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(raw_ws, "/close-before-accept")):
                pass
        return info.value.response
    response = run(main())
    assert response.status_code == 403
    entry = wait_log(ws_log, lambda e: e.get("path") == "/close-before-accept")[-1]
    assert entry["after"] == {"type": "websocket.disconnect", "code": 1006} or entry["after"]["code"] == 1006
    raw_ws.wait_for_log(r'"WebSocket /close-before-accept" 403')


def test_denial_response_extension(raw_ws, ws_log):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(raw_ws, "/deny")):
                pass
        return info.value.response
    response = run(main())
    assert response.status_code == 401
    assert response.headers["x-denied"] == "1"
    assert response.body == b"denied"
    raw_ws.wait_for_log(r'"WebSocket /deny" 401')
    entry = wait_log(ws_log, lambda e: e.get("path") == "/deny")[-1]
    assert entry["after"]["type"] == "websocket.disconnect"


@pytest.mark.parametrize("path", ["/raise-before", "/return-before"])
def test_app_failing_before_accept_gets_500(raw_ws, path):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(raw_ws, path)):
                pass
        return info.value.response.status_code
    assert run(main()) == 500
    if path == "/raise-before":
        raw_ws.wait_for_log("Exception in ASGI application")
    else:
        raw_ws.wait_for_log("ASGI callable returned without completing handshake.")


@pytest.mark.pronghorn_only  # uvicorn drops the TCP connection without a close frame (1006)
@pytest.mark.parametrize("path,code", [("/raise-after", 1011), ("/return-after", 1000)])
def test_app_ending_after_accept_closes_the_websocket(raw_ws, path, code):
    async def main():
        async with connect(ws_url(raw_ws, path)) as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code if info.value.rcvd else None
    assert run(main()) == code


def test_send_after_client_closed_raises_oserror(raw_ws, ws_log):
    async def main():
        async with connect(ws_url(raw_ws, "/send-after-close")) as ws:
            await ws.close()
    run(main())
    entry = wait_log(ws_log, lambda e: e.get("path") == "/send-after-close")[-1]
    assert entry["message"]["type"] == "websocket.disconnect"
    assert entry["outcome"] == "ClientDisconnected"


def test_misuse_raises_runtime_error(raw_ws, ws_log):
    async def main():
        async with connect(ws_url(raw_ws, "/misuse")) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
    run(main())
    entry = wait_log(ws_log, lambda e: e.get("path") == "/misuse")[-1]
    assert entry["outcome"] == "Expected ASGI message 'websocket.send' or 'websocket.close', but got 'websocket.accept'."


def test_message_over_max_size_closes_with_1009(server_factory):
    srv = server_factory(RAW, "--ws-max-size", "1000")

    async def main():
        async with connect(ws_url(srv, "/echo"), compression=None) as ws:
            await ws.send("a" * 1000)
            assert await ws.recv() == "a" * 1000
            await ws.send("a" * 1001)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code
    assert run(main()) == 1009


def test_access_and_connection_log_lines(raw_ws):
    async def main():
        async with connect(ws_url(raw_ws, "/echo?q=1")) as ws:
            await ws.send("x")
            await ws.recv()
    run(main())
    raw_ws.wait_for_log(r'127\.0\.0\.1:\d+ - "WebSocket /echo\?q=1" \[accepted\]')
    raw_ws.wait_for_log(r"connection open")
    if not IS_UVICORN:  # uvicorn's default (websockets-sansio) rarely logs it (docs/architecture.md)
        raw_ws.wait_for_log(r"connection closed")


def test_plain_http_still_served_alongside(raw_ws):
    r = httpx.get(raw_ws.url + "/anything")
    assert r.status_code == 200
    assert r.json()["type"] == "http"


def test_ws_none_serves_upgrades_as_http_with_uvicorns_warnings(server_factory):
    srv = server_factory(RAW, "--ws", "none")
    r = httpx.get(srv.url + "/echo", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                               "Sec-WebSocket-Version": "13"})
    assert r.status_code == 200
    assert r.json()["type"] == "http"
    srv.wait_for_log("Unsupported upgrade request.")
    srv.wait_for_log("No supported WebSocket library detected")


def test_ws_implementation_names_are_accepted(server_factory):
    for name in ("websockets", "wsproto", "websockets-sansio"):
        srv = server_factory(RAW, "--ws", name)

        async def main():
            async with connect(ws_url(srv, "/echo")) as ws:
                await ws.send(name)
                return await ws.recv()
        assert run(main()) == name
        srv.stop()


# ---- FastAPI under several workers ---------------------------------------------------------

@pytest.fixture
def fastapi_ws(server_factory, ws_log):
    # (uvicorn's workers cannot share the port 0 the tests bind: one worker there.)
    return server_factory(FASTAPI, "--workers", "1" if IS_UVICORN else "2", env={"WS_TEST_LOG": str(ws_log)})


def test_fastapi_echo_json_broadcast_and_auth(fastapi_ws):
    async def main():
        async with connect(ws_url(fastapi_ws, "/ws/echo")) as ws:
            await ws.send("fastapi")
            assert await ws.recv() == "fastapi"
        async with connect(ws_url(fastapi_ws, "/ws/json")) as ws:
            await ws.send(json.dumps({"a": [1, 2]}))
            reply = json.loads(await ws.recv())
            assert reply["got"] == {"a": [1, 2]}
        # Broadcast: clients on one worker each see every message sent on that worker.
        clients = [await connect(ws_url(fastapi_ws, "/ws/broadcast")) for _ in range(6)]
        try:
            for c in clients:
                await c.send("ping-from-" + str(id(c)))
            for c in clients:
                seen = set()
                while True:
                    try:
                        seen.add(await asyncio.wait_for(c.recv(), 1.0))
                    except asyncio.TimeoutError:
                        break
                assert "ping-from-" + str(id(c)) in seen
        finally:
            for c in clients:
                await c.close()
        # Auth denial with WebSocketException: 403 before accept (Starlette closes 1008).
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(fastapi_ws, "/ws/auth?token=wrong")):
                pass
        assert info.value.response.status_code == 403
        async with connect(ws_url(fastapi_ws, "/ws/auth?token=secret")) as ws:
            assert await ws.recv() == "welcome"
    run(main())


def test_fastapi_many_concurrent_clients(fastapi_ws):
    async def one(i):
        async with connect(ws_url(fastapi_ws, "/ws/json")) as ws:
            pid = None
            for j in range(20):
                await ws.send(json.dumps([i, j]))
                reply = json.loads(await ws.recv())
                assert reply["got"] == [i, j]
                pid = reply["pid"]
            return pid

    async def main():
        return await asyncio.gather(*(one(i) for i in range(40)))
    pids = run(main())
    assert len(pids) == 40 and all(pids)


# ---- graceful stop -------------------------------------------------------------------------

@pytest.mark.parametrize("workers", ["1", "2"])
def test_graceful_stop_closes_open_websockets_with_1001(server_factory, ws_log, workers):
    if IS_UVICORN and workers != "1":
        pytest.skip("uvicorn's workers cannot share the port 0 the tests bind")
    srv = server_factory(RAW, "--workers", workers, "--timeout-graceful-shutdown", "10",
                         env={"WS_TEST_LOG": str(ws_log)})

    async def main():
        clients = [await connect(ws_url(srv, "/echo")) for _ in range(4)]
        for c in clients:
            await c.send("x")
            await c.recv()
        started = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        codes = []
        for c in clients:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(c.recv(), 8)
            codes.append(info.value.rcvd.code if info.value.rcvd else None)
        return codes, time.monotonic() - started
    codes, elapsed = run(main())
    expected = 1012 if IS_UVICORN else 1001  # uvicorn says 1012 on every shutdown
    assert codes == [expected] * 4
    assert elapsed < 5
    rc = srv.wait_exit(10)
    if not IS_UVICORN:
        assert rc == 0
    entries = wait_log(ws_log, lambda e: e.get("path") == "/echo")
    assert sum(1 for e in entries if e.get("path") == "/echo" and e["disconnect"]["code"] == expected) == 4
    if not IS_UVICORN:
        counts = [int(n) for n in re.findall(r"Closed (\d+) WebSocket\(s\) to stop \(1001\)", srv.stderr)]
        assert sum(counts) == 4, srv.stderr


@pytest.mark.pronghorn_only  # uvicorn's --limit-concurrency counts connections and tasks alike: also 503
def test_limit_concurrency_counts_open_websockets(server_factory):
    srv = server_factory(RAW, "--limit-concurrency", "2")

    async def main():
        a = await connect(ws_url(srv, "/echo"))
        b = await connect(ws_url(srv, "/echo"))
        with pytest.raises(InvalidStatus) as info:
            async with connect(ws_url(srv, "/echo")):
                pass
        status = info.value.response.status_code
        await a.close()
        await asyncio.sleep(0.2)
        async with connect(ws_url(srv, "/echo")) as c:  # a slot is free again
            await c.send("ok")
            assert await c.recv() == "ok"
        await b.close()
        return status
    assert run(main()) == 503


@pytest.mark.pronghorn_only  # uvicorn's multiprocess manager restarts workers on SIGHUP with 1012 too,
# but its workers cannot share the port 0 the tests bind
def test_reload_closes_open_websockets_with_1012_and_serves_new_ones(server_factory, ws_log):
    srv = server_factory(RAW, "--workers", "2", env={"WS_TEST_LOG": str(ws_log)})

    async def main():
        clients = [await connect(ws_url(srv, "/echo")) for _ in range(4)]
        for c in clients:
            await c.send("x")
            await c.recv()
        srv.send_signal(signal.SIGHUP)
        codes = []
        for c in clients:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(c.recv(), 15)
            codes.append(info.value.rcvd.code if info.value.rcvd else None)
        async with connect(ws_url(srv, "/echo")) as ws:
            await ws.send("after reload")
            assert await ws.recv() == "after reload"
        return codes
    assert run(main()) == [1012] * 4


# ---- a real browser ------------------------------------------------------------------------

def test_chromium_exchanges_messages_over_a_websocket(server_factory):
    """Headless Chromium (which always offers permessage-deflate) loads a page whose script
    opens a WebSocket, sends text, binary and a 100 kB text, and writes what came back into the
    page; the test reads the page back through the DevTools protocol (polling until the script
    is done: --dump-dom does not wait for WebSocket traffic)."""
    import re as _re
    import shutil
    import subprocess

    from conftest import client_env

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    srv = server_factory(FASTAPI)
    proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--remote-debugging-port=0", "--user-data-dir=" + str(srv.log_dir / "chromium"),
                             "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=client_env())
    try:
        devtools = None
        deadline = time.monotonic() + 30
        while devtools is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            m = _re.search(r"DevTools listening on ws://([^/]+)/", line)
            if m:
                devtools = m.group(1)
        assert devtools, "chromium did not start its DevTools endpoint"
        target = httpx.put(f"http://{devtools}/json/new?{srv.url}/ws-page", timeout=10).json()

        async def read_page():
            async with connect(target["webSocketDebuggerUrl"], max_size=None) as cdp:
                for attempt in range(200):
                    await cdp.send(json.dumps({"id": attempt, "method": "Runtime.evaluate", "params": {
                        "expression": "document.getElementById('out') && document.getElementById('out').textContent",
                        "returnByValue": True}}))
                    while True:
                        reply = json.loads(await cdp.recv())
                        if reply.get("id") == attempt:
                            break
                    text = reply.get("result", {}).get("result", {}).get("value")
                    if text and text != "pending":
                        return text
                    await asyncio.sleep(0.1)
            return None
        text = run(read_page())
    finally:
        proc.kill()
        proc.wait()
    assert text is not None, "the page's script did not finish"
    lines = text.splitlines()
    assert lines[0].startswith("open permessage-deflate") or IS_UVICORN, lines
    assert lines[1:] == ["text echo: hello from the browser", "binary 250,3,2,1", "text of 100000", "closed 1000"]


# ---- lifecycle limits ----------------------------------------------------------------------

@pytest.mark.pronghorn_only  # uvicorn's single process has no request-limit recycling of its own
def test_limit_max_requests_counts_websockets_and_recycles_with_1012(server_factory):
    srv = server_factory(RAW, "--workers", "1", "--limit-max-requests", "3")

    async def main():
        clients = [await connect(ws_url(srv, "/echo")) for _ in range(3)]
        codes = []
        for c in clients:
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(c.recv(), 15)
            codes.append(info.value.rcvd.code if info.value.rcvd else None)
        async with connect(ws_url(srv, "/echo")) as ws:  # the replacement serves
            await ws.send("new worker")
            assert await ws.recv() == "new worker"
        return codes
    assert run(main()) == [1012] * 3
    srv.wait_for_log(r"Stopping worker \[\d+\] \(")


def test_stop_is_bounded_when_a_client_never_answers_the_close(server_factory):
    """A client that never reads (so never answers the close frame) cannot hold the stop past
    --timeout-graceful-shutdown."""
    import socket as _socket

    srv = server_factory(RAW, "--timeout-graceful-shutdown", "2", "--ws-ping-interval", "0")
    host, port = srv.addr
    sock = _socket.create_connection((host, port), timeout=5)
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    try:
        started = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait_exit(10)
        elapsed = time.monotonic() - started
    finally:
        sock.close()
    assert elapsed < 5, elapsed
    if not IS_UVICORN:
        assert rc == 0


def test_websocket_options_from_the_environment(server_factory):
    srv = server_factory(RAW, env={"PRONGHORN_WS_MAX_SIZE": "100", "UVICORN_WS_MAX_SIZE": "100"})

    async def main():
        async with connect(ws_url(srv, "/echo"), compression=None) as ws:
            await ws.send("a" * 100)
            assert await ws.recv() == "a" * 100
            await ws.send("a" * 101)
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            return info.value.rcvd.code
    assert run(main()) == 1009
