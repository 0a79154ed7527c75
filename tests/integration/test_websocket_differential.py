"""Differential test for WebSockets: the same scenarios against uvicorn (the reference) and the
server under test, with the `websockets` client; what the client observes must match: messages,
close codes and reasons, denial responses, the negotiated subprotocol, the scope.

Intended differences (docs/architecture.md) are normalised away here, each with its reason.
Under PRONGHORN_TEST_SERVER=uvicorn both sides are uvicorn.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import SERVER_KIND, ServerProcess


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("wsdiff-logs")
    started = {}
    try:
        for role, kind in {"reference": "uvicorn", "candidate": SERVER_KIND}.items():
            for name, app, args in [("raw", "apps.ws_app:raw", ()), ("fastapi", "apps.ws_app:app", ()),
                                    ("small", "apps.ws_app:raw", ("--ws-max-size", "1000"))]:
                srv = ServerProcess(app, args, log_dir=logs, kind=kind, name=f"{role}-{name}")
                started[(role, name)] = srv.start()
        yield started
    finally:
        for srv in started.values():
            if srv.running:
                srv.stop()


def _url(srv: ServerProcess, path: str) -> str:
    host, port = srv.addr
    return f"ws://{host}:{port}{path}"


async def _closed(ws) -> tuple:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except ConnectionClosed as exc:
        return ("closed", exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None)


async def _echo(srv):
    out = []
    async with connect(_url(srv, "/echo"), compression=None) as ws:
        for message in ["text", "", "ünïcødé 𝄞", b"\x00\xff" * 40000, ["frag", "ment"]]:
            await ws.send(message)
            out.append(await ws.recv())
    return out


async def _server_close(srv):
    async with connect(_url(srv, "/close?code=4001&reason=bye")) as ws:
        return await _closed(ws)


async def _handshake_error(srv, path):
    try:
        async with connect(_url(srv, path)):
            return "accepted"
    except InvalidStatus as exc:
        r = exc.response
        headers = {k.lower(): v for k, v in r.headers.raw_items()
                   if k.lower() in ("x-denied", "content-type", "content-length", "connection")}
        return (r.status_code, r.body, headers)


async def _subprotocol(srv):
    async with connect(_url(srv, "/subprotocol"), subprotocols=["b", "a"]) as ws:
        return ws.subprotocol, await ws.recv()


async def _scope(srv):
    async with connect(_url(srv, "/scope?x=%20y"), subprotocols=["p"]) as ws:
        scope = json.loads(await ws.recv())
    for key in ("client", "server"):  # ports differ
        scope.pop(key)
    # Pronghorn adds the TLS extension over TLS only; here both offer websocket.http.response.
    scope["headers"] = sorted(h for h in scope["headers"] if h[0] not in ("host", "sec-websocket-key"))
    return scope


async def _too_big(srv):
    async with connect(_url(srv, "/echo"), compression=None) as ws:
        await ws.send("a" * 1000)
        first = await ws.recv()
        await ws.send("a" * 1001)
        # The reason of a protocol-error close is each server's own text (websockets:
        # "frame with 1001 bytes exceeds limit of 1000 bytes"; Pronghorn: "message too big").
        return len(first), (await _closed(ws))[:2]


async def _fastapi_auth(srv):
    denied = await _handshake_error(srv, "/ws/auth?token=no")
    async with connect(_url(srv, "/ws/auth?token=secret")) as ws:
        welcome = await ws.recv()
        closed = await _closed(ws)
    return denied, welcome, closed


async def _fastapi_json(srv):
    async with connect(_url(srv, "/ws/json")) as ws:
        await ws.send(json.dumps({"k": [1, "two", None]}))
        reply = json.loads(await ws.recv())
    reply.pop("pid")
    return reply


SCENARIOS = {
    "echo": ("raw", _echo),
    "server-close": ("raw", _server_close),
    "close-before-accept": ("raw", lambda s: _handshake_error(s, "/close-before-accept")),
    "denial-response": ("raw", lambda s: _handshake_error(s, "/deny")),
    "raise-before-accept": ("raw", lambda s: _handshake_error(s, "/raise-before")),
    "subprotocol": ("raw", _subprotocol),
    "scope": ("raw", _scope),
    "too-big": ("small", _too_big),
    "fastapi-auth": ("fastapi", _fastapi_auth),
    "fastapi-json": ("fastapi", _fastapi_json),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_outcome(servers, name):
    app, scenario = SCENARIOS[name]

    async def both():
        ref = await asyncio.wait_for(scenario(servers[("reference", app)]), 20)
        got = await asyncio.wait_for(scenario(servers[("candidate", app)]), 20)
        return ref, got
    ref, got = asyncio.run(both())
    assert got == ref, f"uvicorn: {ref!r}\n{SERVER_KIND}: {got!r}"


BAD_HANDSHAKES = {
    "no key": b"Sec-WebSocket-Version: 13\r\n",
    "short key": b"Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n",
    "version 12": b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n",
}


def test_refused_handshake_logs_connection_rejected(servers):
    """A handshake the server refuses itself gets the websockets library's INFO line under uvicorn,
    "connection rejected (400 Bad Request)"; Pronghorn logs the same line with its own status
    (426 for another version: RFC 6455 §4.4, documented) besides its access line."""
    import re
    import socket
    import time
    for role in ("reference", "candidate"):
        srv = servers[(role, "raw")]
        offset = len(srv.stderr)
        statuses = []
        for extra in BAD_HANDSHAKES.values():
            with socket.create_connection(srv.addr, timeout=5) as s:
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + extra
                          + b"\r\n")
                statuses.append(int(s.recv(100).split(b" ")[1]))
        deadline = time.monotonic() + 5
        while True:
            lines = re.findall(r"^INFO:     connection rejected \((\d+) [A-Za-z ]+\)$", srv.stderr[offset:], re.M)
            if len(lines) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [int(x) for x in lines] == statuses, (role, statuses, srv.stderr[offset:])
        if srv.kind == "uvicorn":
            assert statuses == [400, 400, 400]
