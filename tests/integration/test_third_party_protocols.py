"""Real third-party apps over the newer protocols, served by Pronghorn and by uvicorn (and
hypercorn for HTTP/2) side by side with the same options, and compared as clients see them:
WebSockets (FastAPI, Litestar, Quart; ws and wss; the `websockets` and aiohttp clients; --workers),
Server-Sent Events over HTTPS/1.1, h2 and h2c (sse-starlette), the Django admin over HTTPS and
behind a TLS-terminating proxy, datasette over HTTP/1.1 and HTTP/2.

The reference is uvicorn for HTTP/1.1 and WebSockets, hypercorn for HTTP/2 (uvicorn serves no
HTTP/2 by default). The candidate is the server under test (PRONGHORN_TEST_SERVER). Intended
differences are normalised where they are compared, each with its reason; the list is in
docs/architecture.md ("Differences from uvicorn").
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import HERE, IS_UVICORN, SERVER_KIND, ServerProcess, client_env
from test_http2_real import Peer
from test_third_party import (CSRF_INPUT_RE, DJANGO_APP, DJANGO_PASSWORD, DJANGO_USER, SSE_APP, _log_problems,
                              _sse_events, _wait_event_line)
from test_tls import _client_context, _tls_args, certs  # noqa: F401  (certs: the fixture)

KINDS = {"reference": "uvicorn", "candidate": SERVER_KIND}
ROLES = list(KINDS)
CHAT_APP = "third_party.fastapi_chat_app:app"


def _start_pair(app: str, args, log_dir: Path, name: str, env=None) -> dict[str, ServerProcess]:
    servers = {}
    try:
        for role, kind in KINDS.items():
            servers[role] = ServerProcess(app, list(args), log_dir=log_dir, kind=kind, name=f"{name}-{role}",
                                          env=env(role) if callable(env) else env).start(wait=False)
        for srv in servers.values():
            srv.wait_ready()
    except BaseException:
        for srv in servers.values():
            srv.kill()
        raise
    return servers


def _stop_pair(servers: dict[str, ServerProcess]) -> None:
    problems = []
    for role, srv in servers.items():
        if not srv.running:
            srv._close_files()
            continue
        try:
            rc = srv.stop(signal.SIGINT, timeout=10)
        except AssertionError as e:
            problems.append(f"{role}: {e}")
            continue
        if rc != 0:
            problems.append(f"{role} ({srv.kind}) exited {rc} after SIGINT\n{srv.stderr}")
    assert not problems, "\n".join(problems)


PEER_ADDR_RE = re.compile(r"(127\.0\.0\.1|\[::1\]|::1):\d+")


def _log_lines(text: str, since: int = 0) -> list[str]:
    """Server log lines from offset SINCE, client ports blanked, start/stop chatter dropped."""
    skip = ("Started server process", "Waiting for application", "Application startup", "running on",
            "Started parent process", "Shutting down", "Finished server process", "Application shutdown",
            "Waiting for ", "Stopping parent")
    return [PEER_ADDR_RE.sub(r"\1:PORT", line) for line in text[since:].splitlines()
            if line.strip() and not any(s in line for s in skip)]


# ==========================================================================================
# FastAPI WebSockets: a chat with broadcast, JSON, WebSocketDisconnect, auth denial
# ==========================================================================================


@pytest.fixture(scope="module")
def chat_servers(tmp_path_factory, certs):  # noqa: F811
    """Plain and TLS pairs (the same app and options on both servers)."""
    work = tmp_path_factory.mktemp("chat")
    pairs = {}
    try:
        for scheme, args in (("ws", []), ("wss", _tls_args(certs))):
            pairs[scheme] = _start_pair(CHAT_APP, args, work, f"chat-{scheme}",
                                        env=lambda role, s=scheme: {"PRONGHORN_TEST_CHAT_LOG": str(work / f"{s}-{role}")})
        yield pairs
    finally:
        for pair in pairs.values():
            _stop_pair(pair)


def _ws_url(srv: ServerProcess, scheme: str, path: str) -> str:
    host = "localhost" if scheme == "wss" else "127.0.0.1"
    return f"{scheme}://{host}:{srv.port}{path}"


class _Client:
    """The same few operations over the websockets library and aiohttp's client."""

    def __init__(self, lib: str, ssl_ctx):
        self.lib, self.ssl_ctx = lib, ssl_ctx
        self.session = None

    async def __aenter__(self):
        if self.lib == "aiohttp":
            self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc):
        if self.session:
            await self.session.close()

    async def open(self, url: str):
        """A connection, or ("denied", status) when the handshake is refused."""
        if self.lib == "websockets":
            try:
                return await ws_connect(url, ssl=self.ssl_ctx if url.startswith("wss") else None)
            except InvalidStatus as exc:
                return ("denied", exc.response.status_code)
        try:
            return await self.session.ws_connect(url, ssl=self.ssl_ctx if url.startswith("wss") else True)
        except aiohttp.WSServerHandshakeError as exc:
            return ("denied", exc.status)

    async def send_json(self, ws, obj) -> None:
        if self.lib == "websockets":
            await ws.send(json.dumps(obj))
        else:
            await ws.send_json(obj)

    async def recv(self, ws):
        """A JSON message, or ("closed", code, reason) when the server closes."""
        if self.lib == "websockets":
            try:
                return json.loads(await asyncio.wait_for(ws.recv(), 5))
            except ConnectionClosed as exc:
                return ("closed", exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None)
        msg = await asyncio.wait_for(ws.receive(), 5)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            await ws.close()
            return ("closed", ws.close_code, msg.extra or "")
        return ("unexpected", msg.type.name, msg.data)

    async def close(self, ws, code: int = 1000) -> None:
        await ws.close(code=code)


def _strip_pid(msg):
    if isinstance(msg, dict):
        return {k: v for k, v in msg.items() if k != "pid"}
    return msg


async def _chat_transcript(srv: ServerProcess, scheme: str, lib: str, ctx) -> list:
    room = uuid.uuid4().hex[:8]
    url = lambda name, token="letmein": _ws_url(srv, scheme, f"/chat/{room}?token={token}&name={name}")  # noqa: E731
    out = []
    async with _Client(lib, ctx) as c:
        out.append(("no token", await c.open(_ws_url(srv, scheme, f"/chat/{room}?name=x"))))
        out.append(("bad token", await c.open(url("x", "wrong"))))
        alice = await c.open(url("alice"))
        out.append(("alice", await c.recv(alice)))
        bob = await c.open(url("bob"))
        out.append(("alice", await c.recv(alice)))
        out.append(("bob", await c.recv(bob)))
        await c.send_json(alice, {"text": "hello, ünïcødé 𝄞"})
        out.append(("alice", await c.recv(alice)))
        out.append(("bob", await c.recv(bob)))
        await c.send_json(bob, {"text": "x" * 70000})  # above 64 KiB: a 64-bit frame length
        out.append(("alice", _strip_pid(await c.recv(alice))["text"] == "x" * 70000))
        out.append(("bob", _strip_pid(await c.recv(bob))["text"] == "x" * 70000))
        await c.send_json(bob, {"cmd": "kick"})
        out.append(("bob", await c.recv(bob)))
        # bob was removed before the close: alice hears nothing about him; she leaves by closing
        # herself (1001), which the app sees as WebSocketDisconnect(1001).
        carol = await c.open(url("carol"))
        out.append(("alice", await c.recv(alice)))
        out.append(("carol", await c.recv(carol)))
        await c.close(alice, 1001)
        out.append(("carol", await c.recv(carol)))
        await c.send_json(carol, {"cmd": "bye"})
        out.append(("carol", await c.recv(carol)))
    return room, [(who, _strip_pid(m)) for who, m in out]


def _events(srv: ServerProcess, scheme: str, ctx, ident: str) -> list[str]:
    base = f"https://localhost:{srv.port}" if scheme == "wss" else srv.url
    return httpx.get(f"{base}/events", params={"id": ident}, verify=ctx, timeout=5).json()["lines"]


@pytest.mark.parametrize("lib", ["websockets", "aiohttp"])
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_fastapi_chat_same_transcript(chat_servers, certs, scheme, lib):  # noqa: F811
    ctx = _client_context(certs)
    pair = chat_servers[scheme]
    offsets = {role: len(srv.stderr) for role, srv in pair.items()}
    got, rooms = {}, {}
    for role, srv in pair.items():
        rooms[role], got[role] = asyncio.run(_chat_transcript(srv, scheme, lib, ctx))
    ref = got["reference"]
    assert ref[0] == ("no token", ("denied", 403)) and ref[1] == ("bad token", ("denied", 403)), ref
    assert ("bob", ("closed", 4001, "kicked")) in ref and ("carol", ("closed", 1000, "")) in ref, ref
    assert ("carol", {"event": "leave", "name": "alice"}) in ref, ref
    assert got["candidate"] == ref
    # alice closed with 1001 while the app waited in receive_json(): WebSocketDisconnect(1001).
    for role, srv in pair.items():
        assert f"alice disconnect 1001 {rooms[role]}" in _events(srv, scheme, ctx, "alice"), role
    time.sleep(0.3)  # the last close's log lines
    logs = {role: _log_lines(srv.stderr, offsets[role]) for role, srv in pair.items()}
    # Paths carry the room (random per run): blank it.
    # "connection closed": uvicorn's websockets-sansio logs it only when the library itself sees
    # the end of the stream (rarely); Pronghorn for every WebSocket (docs/architecture.md).
    logs = {role: [re.sub(r"/chat/[0-9a-f]{8}", "/chat/ROOM", line) for line in lines
                   if not line.endswith("connection closed")] for role, lines in logs.items()}
    assert sorted(logs["candidate"]) == sorted(logs["reference"]), (
        f"log lines differ\n--- uvicorn\n" + "\n".join(logs["reference"]) + f"\n--- {SERVER_KIND}\n"
        + "\n".join(logs["candidate"]))
    assert any("[accepted]" in line for line in logs["reference"])
    assert logs["reference"].count("INFO:     connection rejected (403 Forbidden)") == 2, logs["reference"]


async def _slow_socket(srv: ServerProcess, ident: str, scheme: str = "ws", ctx=None):
    ws = await ws_connect(_ws_url(srv, scheme, f"/slow?id={ident}"), ssl=ctx if scheme == "wss" else None)
    assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"n": 0}
    return ws


def _app_saw(srv: ServerProcess, scheme: str, ctx, ident: str, what: str, timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _events(srv, scheme, ctx, ident)
        if any(line.split()[1] == what for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_fastapi_client_leaving_reaches_the_app(chat_servers, certs, scheme, how):  # noqa: F811
    """The client closes (1000) or drops the TCP connection: the app's receive() raises
    WebSocketDisconnect at once (here while it is sending every 0.1 s), nothing is logged as an error."""
    ctx = _client_context(certs)
    codes = {}
    for role, srv in chat_servers[scheme].items():
        ident = uuid.uuid4().hex[:10]
        offset = len(srv.stderr)

        async def run():
            ws = await _slow_socket(srv, ident, scheme, ctx)
            await asyncio.sleep(0.25)
            t0 = time.monotonic()
            if how == "close":
                await ws.close(1000)
            else:
                ws.transport.abort()
            return t0

        t0 = asyncio.run(run())
        lines = _app_saw(srv, scheme, ctx, ident, "closed")
        elapsed = time.monotonic() - t0
        assert [line.split()[1] for line in lines][-1:] == ["closed"], (role, lines, srv.stderr[offset:])
        assert elapsed < 1.5, (role, elapsed)
        codes[role] = [line.split()[2] for line in lines if line.split()[1] == "disconnect"]
        time.sleep(0.1)
        assert not _log_problems(srv.stderr[offset:]), srv.stderr[offset:]
    if how == "close":
        assert codes["candidate"] == codes["reference"], codes
    else:
        # Documented: a connection lost without a close frame gives the app 1006 (uvicorn's
        # websockets-sansio says 1005 once the handshake is complete). Neither sends on after it.
        assert codes["reference"] in (["1005"], ["1006"]), codes
        assert codes["candidate"] == (codes["reference"] if IS_UVICORN else ["1006"]), codes


@pytest.mark.slow  # two servers of two workers each, a rolling restart: ~15 s
@pytest.mark.parametrize("role", ROLES)
def test_fastapi_websockets_under_workers(tmp_path, certs, role):  # noqa: F811
    """--workers 2 over wss: a dozen chat connections, each served (its own join and its own message
    broadcast back), the 1008 denial as 403; then SIGHUP replaces the workers: open sockets get
    1012 (service restart) and new connections are served by the new workers."""
    kind = KINDS[role]
    ctx = _client_context(certs)
    srv = ServerProcess(CHAT_APP, ["--workers", "2", *_tls_args(certs)], log_dir=tmp_path, kind=kind,
                        name=f"workers-{role}", env={"PRONGHORN_TEST_CHAT_LOG": str(tmp_path / "chat.log")})
    srv.start()
    # uvicorn's parent logs "running on" before its workers listen: wait for both to be ready.
    deadline = time.monotonic() + 20
    while srv.stderr.count("Application startup complete.") < 2:
        assert time.monotonic() < deadline and srv.running, srv.stderr
        time.sleep(0.05)
    try:
        async def chat_round():
            pids = set()
            async with _Client("websockets", ctx) as c:
                assert await c.open(_ws_url(srv, "wss", "/chat/r?token=no")) == ("denied", 403)
                for i in range(12):
                    ws = await c.open(_ws_url(srv, "wss", f"/chat/{uuid.uuid4().hex[:6]}?token=letmein&name=u{i}"))
                    join = await c.recv(ws)
                    assert join["event"] == "join" and join["name"] == f"u{i}", join
                    pids.add(join["pid"])
                    await c.send_json(ws, {"text": f"m{i}"})
                    assert await c.recv(ws) == {"from": f"u{i}", "text": f"m{i}"}
                    await c.send_json(ws, {"cmd": "bye"})
                    assert await c.recv(ws) == ("closed", 1000, "")
            return pids

        pids_before = asyncio.run(chat_round())
        assert os.getpid() not in pids_before and srv.pid not in pids_before  # served by workers

        async def sighup_with_open_sockets():
            sockets = [await _slow_socket(srv, f"hup{i}", "wss", ctx) for i in range(3)]
            srv.send_signal(signal.SIGHUP)
            codes = []
            for ws in sockets:
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                except ConnectionClosed as exc:
                    codes.append(exc.rcvd.code if exc.rcvd else None)
            return codes

        t0 = time.monotonic()
        codes = asyncio.run(sighup_with_open_sockets())
        assert codes == [1012] * 3, (kind, codes, srv.stderr[-3000:])
        assert time.monotonic() - t0 < 10
        deadline = time.monotonic() + 15
        while True:  # the replacements serve
            try:
                pids_after = asyncio.run(chat_round())
                break
            except (OSError, AssertionError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert not pids_after & pids_before, (pids_before, pids_after)
    finally:
        rc = srv.stop(signal.SIGINT, timeout=15) if srv.running else srv.returncode
    assert rc == 0, srv.stderr[-3000:]
    assert "Traceback" not in srv.stderr, srv.stderr


@pytest.mark.parametrize("role", ROLES)
def test_fastapi_graceful_stop_with_open_websockets(tmp_path, role):
    """SIGTERM with open WebSockets: each gets a close frame, the app a WebSocketDisconnect, and
    the server is gone within a few seconds. uvicorn sends 1012 (service restart) on every
    shutdown; Pronghorn 1001 (going away) on a stop, 1012 only when workers are replaced
    (documented)."""
    kind = KINDS[role]
    srv = ServerProcess(CHAT_APP, [], log_dir=tmp_path, kind=kind, name=f"stop-{role}",
                        env={"PRONGHORN_TEST_CHAT_LOG": str(tmp_path / "chat.log")})
    srv.start()
    try:
        async def run():
            sockets = [await _slow_socket(srv, f"stop{i}") for i in range(3)]
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            codes = []
            for ws in sockets:
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                except ConnectionClosed as exc:
                    codes.append(exc.rcvd.code if exc.rcvd else None)
            return codes, time.monotonic() - t0

        codes, elapsed = asyncio.run(run())
        rc = srv.wait_exit(10)
    finally:
        srv.kill()
    expected = 1012 if kind == "uvicorn" else 1001
    assert codes == [expected] * 3, (kind, codes, srv.stderr)
    assert elapsed < 5, elapsed
    from conftest import expected_signal_exit
    assert rc == (-signal.SIGTERM if kind == "uvicorn" else expected_signal_exit(signal.SIGTERM)), (rc, srv.stderr)
    seen = (tmp_path / "chat.log").read_text().splitlines()
    for i in range(3):
        assert f"stop{i} closed" in seen, seen
        assert any(line.startswith(f"stop{i} disconnect ") for line in seen), seen
    assert "Traceback" not in srv.stderr, srv.stderr


# ==========================================================================================
# Litestar and Quart WebSockets
# ==========================================================================================


@pytest.fixture(scope="module")
def ws_framework_servers(tmp_path_factory, certs):  # noqa: F811
    work = tmp_path_factory.mktemp("wsfw")
    pairs = {}
    try:
        for name, app in (("litestar", "third_party.litestar_app:app"), ("quart", "third_party.quart_app:app")):
            pairs[name] = _start_pair(app, _tls_args(certs), work, f"wsfw-{name}")
        yield pairs
    finally:
        for pair in pairs.values():
            _stop_pair(pair)


async def _litestar_transcript(srv: ServerProcess, lib: str, ctx) -> list:
    out = []
    async with _Client(lib, ctx) as c:
        ws = await c.open(_ws_url(srv, "wss", "/ws"))
        for obj in [{"a": 1}, ["x", "ü"], "s" * 100_000]:
            await c.send_json(ws, obj)
            reply = await c.recv(ws)
            out.append(reply if obj != "s" * 100_000 else reply == {"echo": obj})
        await c.send_json(ws, {"cmd": "bye"})
        out.append(await c.recv(ws))
        # The listener: text in, text out (not JSON).
        if lib == "websockets":
            async with ws_connect(_ws_url(srv, "wss", "/listen"), ssl=ctx) as lw:
                for text in ["abc", "ünï"]:
                    await lw.send(text)
                    out.append(await asyncio.wait_for(lw.recv(), 5))
        else:
            lw = await c.session.ws_connect(_ws_url(srv, "wss", "/listen"), ssl=ctx)
            for text in ["abc", "ünï"]:
                await lw.send_str(text)
                out.append((await asyncio.wait_for(lw.receive(), 5)).data)
            await lw.close()
        guarded = await c.open(_ws_url(srv, "wss", "/guarded"))
        if isinstance(guarded, tuple):
            out.append(guarded)
        else:
            out.append(("guarded accepted", await c.recv(guarded)))
    return out


async def _quart_transcript(srv: ServerProcess, lib: str, ctx) -> list:
    out = []
    async with _Client(lib, ctx) as c:
        ws = await c.open(_ws_url(srv, "wss", "/ws"))
        for obj in [{"a": 1}, [1, 2, "ü"], "x" * 70_000]:
            await c.send_json(ws, obj)
            reply = await c.recv(ws)
            out.append(reply if obj != "x" * 70_000 else reply == {"echo": obj, "path": "/ws"})
        await c.send_json(ws, "bye")
        out.append(await c.recv(ws))
        out.append(await c.open(_ws_url(srv, "wss", "/ws/denied")))
    return out


@pytest.mark.parametrize("lib", ["websockets", "aiohttp"])
@pytest.mark.parametrize("framework", ["litestar", "quart"])
def test_framework_websockets_same(ws_framework_servers, certs, framework, lib):  # noqa: F811
    ctx = _client_context(certs)
    pair = ws_framework_servers[framework]
    offsets = {role: len(srv.stderr) for role, srv in pair.items()}
    transcript = _litestar_transcript if framework == "litestar" else _quart_transcript
    got = {role: asyncio.run(transcript(srv, lib, ctx)) for role, srv in pair.items()}
    ref = got["reference"]
    if framework == "litestar":
        assert ref[:4] == [{"echo": {"a": 1}}, {"echo": ["x", "ü"]}, True, ("closed", 4000, "done")], ref
        assert ref[4:6] == ["ABC", "ÜNÏ"], ref
    else:
        assert ref == [{"echo": {"a": 1}, "path": "/ws"}, {"echo": [1, 2, "ü"], "path": "/ws"}, True,
                       ("closed", 1000, ""), ("denied", 401)], ref
    assert got["candidate"] == ref
    time.sleep(0.3)
    logs = {role: [line for line in _log_lines(srv.stderr, offsets[role]) if not line.endswith("connection closed")]
            for role, srv in pair.items()}
    assert sorted(logs["candidate"]) == sorted(logs["reference"]), (
        f"log lines differ\n--- uvicorn\n" + "\n".join(logs["reference"]) + f"\n--- {SERVER_KIND}\n"
        + "\n".join(logs["candidate"]))
