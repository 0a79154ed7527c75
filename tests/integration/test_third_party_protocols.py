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

from conftest import HERE, IS_UVICORN, SERVER_KIND, ServerProcess, client_env, expected_signal_exit
from test_third_party import (CSRF_INPUT_RE, DJANGO_APP, DJANGO_PASSWORD, DJANGO_USER, SSE_APP, _log_problems,
                              _sse_events, _wait_event_line)
from test_tls import _client_context, _tls_args, certs  # noqa: F401  (certs: the fixture)

# ~100 s of third-party servers started side by side (Django, hypercorn,
# uvicorn): run once, in the full suite on the machine's python3, not again on
# every other CPython and under ASan (their engine paths are covered there by
# test_tls, test_http2*, test_websocket*).
pytestmark = pytest.mark.slow

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
    # Log records only: a traceback's lines (the frames differ with the server) are left out.
    return [PEER_ADDR_RE.sub(r"\1:PORT", line) for line in text[since:].splitlines()
            if re.match(r"(INFO|WARNING|ERROR|DEBUG|CRITICAL):", line) and not any(s in line for s in skip)]


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
        out.append(("boom", await c.open(_ws_url(srv, scheme, "/boom"))))
        out.append(("forgetful", await c.open(_ws_url(srv, scheme, "/forgetful"))))
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
    assert ref[-2:] == [("boom", ("denied", 500)), ("forgetful", ("denied", 500))], ref
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
    assert logs["reference"].count("INFO:     connection rejected (500 Internal Server Error)") == 2, logs["reference"]


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
                        await asyncio.wait_for(ws.recv(), 60)
                except ConnectionClosed as exc:
                    codes.append(exc.rcvd.code if exc.rcvd else None)
            return codes

        t0 = time.monotonic()
        codes = asyncio.run(sighup_with_open_sockets())
        assert codes == [1012] * 3, (kind, codes, srv.stderr[-3000:])
        # uvicorn replaces its workers one after the other, each old one stopped only once its
        # replacement has started (on a loaded machine, 40 s for two FastAPI workers): no bound.
        if kind == "pronghorn":
            assert time.monotonic() - t0 < 15, time.monotonic() - t0
            # The workers are replaced one after the other: the sockets above may all have been on
            # the first one, while the second still serves. Once the reload is complete, only the
            # new workers do.
            srv.wait_for_log(r"Reload complete", timeout=15)
        deadline = time.monotonic() + (15 if kind == "pronghorn" else 60)
        while True:  # the replacements serve (uvicorn: until its old workers are gone)
            try:
                pids_after = asyncio.run(chat_round())
                if kind == "pronghorn" or not pids_after & pids_before:
                    break
            except (OSError, AssertionError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    raise
            assert time.monotonic() < deadline, (pids_before, pids_after)
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


# ==========================================================================================
# sse-starlette over HTTP/2 (TLS and h2c) against hypercorn, and over HTTPS/1.1 against uvicorn
# ==========================================================================================


class Hypercorn:
    """hypercorn serving APP (HTTP/2 over TLS with ALPN, or h2c with prior knowledge on a plain port)."""

    def __init__(self, app: str, log_dir: Path, name: str, tls_certs: Path | None, env: dict):
        from test_http2_real import _free_port
        self.port = _free_port()
        self.kind = "hypercorn"
        cmd = [sys.executable, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{self.port}"]
        if tls_certs is not None:
            cmd += ["--certfile", str(tls_certs / "server.pem"), "--keyfile", str(tls_certs / "server.key")]
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=HERE, env={**client_env(), "PYTHONDONTWRITEBYTECODE": "1", **env},
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b"Running on" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"hypercorn did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    @property
    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def sse_h2_servers(tmp_path_factory, certs):  # noqa: F811
    """{(transport, kind): (server, events file)} for transport in tls/h2c, kind pronghorn/hypercorn."""
    if IS_UVICORN:
        pytest.skip("uvicorn serves no HTTP/2 by default (the candidate runs with --http2)")
    work = tmp_path_factory.mktemp("sse-h2")
    servers = {}
    try:
        for transport in ("tls", "h2c"):
            tls = certs if transport == "tls" else None
            events = work / f"{transport}-pronghorn.events"
            extra = _tls_args(certs) if tls else []
            srv = ServerProcess(SSE_APP, ["--http2", *extra], log_dir=work, name=f"sse-{transport}",
                                env={"PRONGHORN_TEST_SSE_LOG": str(events)}).start()
            servers[(transport, "pronghorn")] = (srv, events)
            events = work / f"{transport}-hypercorn.events"
            servers[(transport, "hypercorn")] = (
                Hypercorn(SSE_APP, work, f"hypercorn-{transport}", tls, {"PRONGHORN_TEST_SSE_LOG": str(events)}), events)
        yield servers
    finally:
        for srv, _ in servers.values():
            srv.stop()


def _h2_client(port: int, transport: str, certs: Path, **kw) -> httpx.Client:  # noqa: F811
    if transport == "tls":
        return httpx.Client(http2=True, verify=_client_context(certs), base_url=f"https://localhost:{port}", **kw)
    return httpx.Client(http1=False, http2=True, base_url=f"http://127.0.0.1:{port}", **kw)


def _stream_events(client: httpx.Client, path: str, n: int) -> tuple[str, list[tuple[float, dict]], float]:
    """Read N events of PATH, then close the stream: (http_version, [(t, event)], t_closed)."""
    got = []
    t0 = time.monotonic()
    with client.stream("GET", path) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "content-length" not in r.headers
        version = r.http_version
        for event in _sse_events(r.iter_lines()):
            got.append((time.monotonic() - t0, event))
            if len(got) == n:
                break
    return version, got, time.monotonic()


@pytest.mark.parametrize("kind", ["hypercorn", "pronghorn"])
@pytest.mark.parametrize("transport", ["tls", "h2c"])
def test_sse_over_http2_events_as_sent_and_disconnect(sse_h2_servers, certs, transport, kind):  # noqa: F811
    """Each event reaches the httpx HTTP/2 client when it is produced (one per 0.2 s, not at the end);
    the client leaving closes the app's generator within 1 s. (httpx sends no RST_STREAM for a
    response closed early: the stream ends with the connection.)"""
    srv, events = sse_h2_servers[(transport, kind)]
    ident = uuid.uuid4().hex[:12]
    offset = len(srv.stderr)
    with _h2_client(srv.port, transport, certs, timeout=httpx.Timeout(5, read=2)) as c:
        version, got, _ = _stream_events(c, f"/endless?id={ident}", 5)
        assert version == "HTTP/2"
        assert [e for _, e in got] == [{"event": "tick", "id": str(i), "data": f"tick {i}"} for i in range(5)]
        assert got[-1][0] - got[0][0] >= 0.6, got
        # Another stream on the same connection while the abandoned one still flows.
        assert c.get("/").text == "sse app"
    t_closed = time.monotonic()
    closed_at = _wait_event_line(events, "endless", ident, "closed", 3.0)
    assert closed_at is not None, f"{kind}: generator still running 3 s after the client left"
    assert closed_at - t_closed < 1.0, closed_at - t_closed
    time.sleep(0.2)
    assert not _log_problems(srv.stderr[offset:]), srv.stderr[offset:]


@pytest.mark.parametrize("kind", ["hypercorn", "pronghorn"])
def test_sse_over_http2_headers_before_first_event(sse_h2_servers, certs, kind):  # noqa: F811
    """/delayed sends its first event after 3 s: the HEADERS frame (EventSourceResponse starts the
    response at once) must reach the client long before it, not be held for the first DATA."""
    srv, _ = sse_h2_servers[("tls", kind)]
    with _h2_client(srv.port, "tls", certs, timeout=httpx.Timeout(5, read=6)) as c:
        t0 = time.monotonic()
        with c.stream("GET", f"/delayed?id={uuid.uuid4().hex[:12]}") as r:
            t_head = time.monotonic() - t0
            assert r.status_code == 200 and r.http_version == "HTTP/2"
            first = next(_sse_events(r.iter_lines()))
            t_first = time.monotonic() - t0
    assert t_head < 1.5, f"{kind}: response head after {t_head:.2f} s"
    assert first == {"event": "late", "data": "late 0"}
    assert 2.5 < t_first < 4.5, t_first


@pytest.mark.parametrize("transport", ["tls", "h2c"])
def test_sse_over_http2_same_as_hypercorn(sse_h2_servers, certs, transport):  # noqa: F811
    responses = {}
    for kind in ("hypercorn", "pronghorn"):
        srv, _ = sse_h2_servers[(transport, kind)]
        with _h2_client(srv.port, transport, certs, timeout=5) as c:
            responses[kind] = c.get("/finite", params={"n": 5})
    ref, got = responses["hypercorn"], responses["pronghorn"]
    assert got.http_version == ref.http_version == "HTTP/2"
    assert got.status_code == ref.status_code == 200
    drop = {"date", "server", "alt-svc"}
    assert sorted((k, v) for k, v in got.headers.multi_items() if k not in drop) == \
        sorted((k, v) for k, v in ref.headers.multi_items() if k not in drop)
    assert got.content == ref.content
    srv, _ = sse_h2_servers[(transport, "pronghorn")]
    srv.wait_for_log(r'"GET /finite\?n=5 HTTP/2" 200', timeout=5, stream="stdout")


@pytest.mark.parametrize("kind", ["hypercorn", "pronghorn"])
def test_sse_curl_http2_prior_knowledge(sse_h2_servers, kind):
    """curl --http2-prior-knowledge -N on h2c: ticks arrive one by one; curl's exit (the
    connection closed) closes the generator."""
    srv, events = sse_h2_servers[("h2c", kind)]
    ident = uuid.uuid4().hex[:12]
    curl = subprocess.Popen(["curl", "-sN", "--http2-prior-knowledge", f"http://127.0.0.1:{srv.port}/endless?id={ident}"],
                            stdout=subprocess.PIPE, env=client_env())
    times = []
    try:
        t0 = time.monotonic()
        for line in curl.stdout:
            if line.startswith(b"data: "):
                times.append((time.monotonic() - t0, line.strip().decode()))
                if len(times) == 3:
                    break
    finally:
        curl.terminate()
        curl.wait(5)
        t_closed = time.monotonic()
    assert [d for _, d in times] == ["data: tick 0", "data: tick 1", "data: tick 2"], times
    assert times[-1][0] - times[0][0] >= 0.3, times
    closed_at = _wait_event_line(events, "endless", ident, "closed", 3.0)
    assert closed_at is not None and closed_at - t_closed < 1.0, f"{kind}: generator not closed after curl left"


def test_sse_curl_http2_upgrade_is_served_as_http1(sse_h2_servers):
    """curl --http2 on the plain port asks for `Upgrade: h2c`: Pronghorn serves the request as
    HTTP/1.1 (documented; hypercorn upgrades), and the events arrive the same."""
    srv, _ = sse_h2_servers[("h2c", "pronghorn")]
    out = subprocess.run(["curl", "-sS", "--http2", "-w", "\n%{http_version}", f"http://127.0.0.1:{srv.port}/finite?n=2"],
                         capture_output=True, text=True, timeout=20, env=client_env())
    assert out.returncode == 0, out.stderr
    body, _, version = out.stdout.rpartition("\n")
    assert version == "1.1"
    assert list(_sse_events(body.replace("\r\n", "\n").split("\n"))) == [
        {"id": str(i), "event": "n", "data": f"event {i}"} for i in range(2)]


@pytest.fixture(scope="module")
def sse_tls_servers(tmp_path_factory, certs):  # noqa: F811
    work = tmp_path_factory.mktemp("sse-tls")
    servers = _start_pair(SSE_APP, _tls_args(certs), work, "sse-tls",
                          env=lambda role: {"PRONGHORN_TEST_SSE_LOG": str(work / f"{role}.events")})
    for role in ROLES:
        servers[role].events_path = work / f"{role}.events"
    yield servers
    _stop_pair(servers)


@pytest.mark.parametrize("role", ROLES)
def test_sse_over_https_1_1_with_aiohttp(sse_tls_servers, certs, role):  # noqa: F811
    """aiohttp's client reads the events as they come, and its leaving closes the generator."""
    srv = sse_tls_servers[role]
    ident = uuid.uuid4().hex[:12]

    async def run():
        got = []
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://localhost:{srv.port}/endless?id={ident}",
                                   ssl=_client_context(certs)) as r:
                assert r.status == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("data: "):
                        got.append((time.monotonic() - t0, line))
                        if len(got) == 4:
                            break
        return got, time.monotonic()

    got, t_closed = asyncio.run(run())
    assert [d for _, d in got] == [f"data: tick {i}" for i in range(4)]
    assert got[-1][0] - got[0][0] >= 0.4, got
    closed_at = _wait_event_line(srv.events_path, "endless", ident, "closed", 3.0)
    assert closed_at is not None and closed_at - t_closed < 1.0, f"{srv.kind}: generator not closed"


@pytest.mark.parametrize("role", ROLES)
def test_sse_over_https_1_1(sse_tls_servers, certs, role):  # noqa: F811
    srv = sse_tls_servers[role]
    ident = uuid.uuid4().hex[:12]
    offset = len(srv.stderr)
    with httpx.Client(verify=_client_context(certs), base_url=f"https://localhost:{srv.port}",
                      timeout=httpx.Timeout(5, read=2)) as c:
        version, got, t_closed = _stream_events(c, f"/endless?id={ident}", 5)
    assert version == "HTTP/1.1"
    assert [e for _, e in got] == [{"event": "tick", "id": str(i), "data": f"tick {i}"} for i in range(5)]
    assert got[-1][0] - got[0][0] >= 0.6, got
    closed_at = _wait_event_line(srv.events_path, "endless", ident, "closed", 3.0)
    assert closed_at is not None and closed_at - t_closed < 1.0, f"{srv.kind}: generator not closed"
    time.sleep(0.2)
    assert not _log_problems(srv.stderr[offset:]), srv.stderr[offset:]


def test_sse_over_https_1_1_same_answer(sse_tls_servers, certs):  # noqa: F811
    responses = {}
    for role, srv in sse_tls_servers.items():
        with httpx.Client(verify=_client_context(certs), base_url=f"https://localhost:{srv.port}", timeout=5) as c:
            responses[role] = c.get("/finite", params={"n": 5})
    ref, got = responses["reference"], responses["candidate"]
    assert ref.status_code == got.status_code == 200
    drop = {"date", "server"}
    assert sorted((k, v) for k, v in got.headers.multi_items() if k not in drop) == \
        sorted((k, v) for k, v in ref.headers.multi_items() if k not in drop)
    assert got.content == ref.content


@pytest.mark.parametrize("kind", ["hypercorn", "pronghorn"])
def test_sse_over_h2c_rst_stream_closes_the_generator(sse_h2_servers, kind):
    """A browser leaving a page resets the stream (RST_STREAM CANCEL) and keeps the connection:
    the generator must be closed within 1 s, and the connection serve the next stream."""
    import socket

    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    srv, events = sse_h2_servers[("h2c", kind)]
    ident = uuid.uuid4().hex[:12]
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()

    def request(path: str) -> int:
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
                                (":path", path)], end_stream=True)
        sock.sendall(conn.data_to_send())
        return sid

    def pump(until) -> dict:
        bodies: dict[int, bytes] = {}
        while True:
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                if isinstance(ev, h2.events.StreamEnded):
                    bodies.setdefault(ev.stream_id, b"")
                    bodies[("ended", ev.stream_id)] = True
            sock.sendall(conn.data_to_send())
            if until(bodies):
                return bodies

    try:
        sid = request(f"/endless?id={ident}")
        pump(lambda b: b.get(sid, b"").count(b"data: tick") >= 2)
        conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        sock.sendall(conn.data_to_send())
        t_reset = time.monotonic()
        closed_at = _wait_event_line(events, "endless", ident, "closed", 3.0)
        assert closed_at is not None, f"{kind}: generator still running 3 s after RST_STREAM(CANCEL)"
        assert closed_at - t_reset < 1.0, closed_at - t_reset
        sid2 = request("/")
        bodies = pump(lambda b: ("ended", sid2) in b)
        assert bodies[sid2] == b"sse app"
    finally:
        sock.close()


@pytest.mark.pronghorn_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sse_over_http2_graceful_stop_with_open_stream(tmp_path, certs, sig):  # noqa: F811
    """A stop with an endless SSE stream open over h2 (curl --http2): GOAWAY at once, the events
    go on for --timeout-graceful-streams (1 s; documented), then the stream is reset (CANCEL: the
    response is unfinished, as uvicorn's closed connection says over HTTP/1.1), the generator is
    closed, the server gone within 5 s, exit 0.
    (Not httpx: python-h2 takes any frame after a GOAWAY for an error, its issue 1181;
    docs/architecture.md.)"""
    events = tmp_path / "events"
    srv = ServerProcess(SSE_APP, ["--http2", *_tls_args(certs)], log_dir=tmp_path, name="sse-h2-stop",
                        env={"PRONGHORN_TEST_SSE_LOG": str(events)}).start()
    curl = subprocess.Popen(["curl", "-sSN", "--http2", "--cacert", str(certs / "ca.pem"),
                             f"https://localhost:{srv.port}/endless?id=stop"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env())
    try:
        for line in curl.stdout:
            if line.startswith(b"data: tick 1"):
                break
        t0 = time.monotonic()
        srv.send_signal(sig)
        rc = srv.proc.wait(timeout=8)
        elapsed = time.monotonic() - t0
        rest, err = curl.communicate(timeout=5)
    finally:
        srv.kill()
        if curl.poll() is None:
            curl.kill()
            curl.wait()
    assert elapsed < 5, elapsed
    assert rc == 0, srv.stderr
    # curl: "Transferred a partial file" (18) or "stream not closed cleanly" (92), not a timeout.
    assert curl.returncode in (18, 92), (curl.returncode, err, rest[-300:])
    assert rest.endswith(b"\r\n\r\n"), rest[-200:]  # whole events only
    assert b"data: tick 3" in rest, rest  # events went on after the signal (0.2 s apart)
    assert "Closed 1 streaming response(s) to stop." in srv.stderr, srv.stderr
    assert _wait_event_line(events, "endless", "stop", "closed", 0) is not None
    assert "Traceback" not in srv.stderr, srv.stderr


# ==========================================================================================
# Django admin over HTTPS, and behind a TLS-terminating proxy (X-Forwarded-Proto)
# ==========================================================================================


@pytest.fixture(scope="module")
def django_https_servers(tmp_path_factory, certs):  # noqa: F811
    """{"tls": pair over HTTPS, "proxy": pair on plain HTTP trusting 127.0.0.1's X-Forwarded-*,
    "untrusted": pair on plain HTTP trusting another address only}; the secure-cookie settings."""
    import shutil
    work = tmp_path_factory.mktemp("django-https")
    env = {"DJANGO_SETTINGS_MODULE": "third_party.django_project.settings", "PYTHONDONTWRITEBYTECODE": "1",
           "PRONGHORN_TEST_DJANGO_DB": str(work / "prepared.sqlite3"),
           "PRONGHORN_TEST_DJANGO_STATIC": str(work / "static"), "PRONGHORN_TEST_DJANGO_SECURE": "1"}
    r = subprocess.run([sys.executable, "-m", "third_party.django_project.setup_db"], cwd=HERE,
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"Django setup failed:\n{r.stdout}\n{r.stderr}"
    pairs = {}
    try:
        for name, args in (("tls", _tls_args(certs)), ("h2", ["--http2", *_tls_args(certs)]),
                           ("proxy", ["--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"]),
                           ("untrusted", ["--proxy-headers", "--forwarded-allow-ips", "10.9.8.7"])):
            for role in ROLES:
                shutil.copy(work / "prepared.sqlite3", work / f"{name}-{role}.sqlite3")
            if name == "h2":  # the candidate alone: uvicorn serves no HTTP/2 (compared with "tls")
                if IS_UVICORN:
                    continue
                pairs[name] = {"candidate": ServerProcess(
                    DJANGO_APP, args, log_dir=work, name="django-h2",
                    env={**env, "PRONGHORN_TEST_DJANGO_DB": str(work / "h2-candidate.sqlite3")}).start()}
                continue
            pairs[name] = _start_pair(DJANGO_APP, args, work, f"django-{name}",
                                      env=lambda role, n=name: {**env, "PRONGHORN_TEST_DJANGO_DB":
                                                                str(work / f"{n}-{role}.sqlite3")})
        yield pairs
    finally:
        for pair in pairs.values():
            _stop_pair(pair)


def _set_cookies(r: httpx.Response) -> dict[str, list[str]]:
    """name -> attributes (lower-cased, Expires/Max-Age dropped: clock)."""
    out = {}
    for v in r.headers.get_list("set-cookie"):
        name = v.split("=", 1)[0]
        out[name] = sorted(a.strip().lower() for a in v.split(";")[1:]
                           if not a.strip().lower().startswith(("expires=", "max-age=")))
    return out


def _cookie_values(r: httpx.Response) -> dict[str, str]:
    return {v.split("=", 1)[0]: v.split("=", 1)[1].split(";", 1)[0] for v in r.headers.get_list("set-cookie")}


def _django_admin_flow(base: str, client: httpx.Client, origin: str, extra_headers: dict) -> dict[str, httpx.Response]:
    """The admin login with its CSRF checks; cookies carried by hand (Secure cookies over the
    proxy's plain HTTP hop, which httpx's jar would not send)."""
    steps = {}
    jar: dict[str, str] = {}

    def req(method, path, headers=None, **kw):
        h = {**extra_headers, **(headers or {})}
        if jar:
            h["cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        r = client.request(method, base + path, headers=h, **kw)
        jar.update(_cookie_values(r))
        return r

    steps["login-page"] = page = req("GET", "/admin/login/?next=/admin/")
    token = CSRF_INPUT_RE.search(page.text).group(1)
    form = {"csrfmiddlewaretoken": token, "username": DJANGO_USER, "password": DJANGO_PASSWORD, "next": "/admin/"}
    # HTTPS: Django wants a Referer (or an Origin) of the same https origin.
    steps["no-referer"] = req("POST", "/admin/login/?next=/admin/", data=form)
    steps["foreign-origin"] = req("POST", "/admin/login/?next=/admin/", data=form,
                                  headers={"origin": "https://evil.example", "referer": "https://evil.example/"})
    steps["http-origin"] = req("POST", "/admin/login/?next=/admin/", data=form,
                               headers={"origin": origin.replace("https://", "http://")})
    steps["login"] = req("POST", "/admin/login/?next=/admin/", data=form,
                         headers={"origin": origin, "referer": origin + "/admin/login/"})
    steps["index"] = req("GET", "/admin/")
    return steps


def _check_django_https_flow(steps: dict[str, httpx.Response], role: str) -> None:
    assert steps["login-page"].status_code == 200, role
    assert "secure" in _set_cookies(steps["login-page"])["csrftoken"], (role, steps["login-page"].headers)
    for name in ("no-referer", "foreign-origin", "http-origin"):
        assert steps[name].status_code == 403, (role, name, steps[name].status_code)
    assert steps["login"].status_code == 302 and steps["login"].headers["location"] == "/admin/", (
        role, steps["login"].status_code, steps["login"].text[:2000])
    assert _set_cookies(steps["login"])["sessionid"] == ["httponly", "path=/", "samesite=lax", "secure"], role
    assert steps["index"].status_code == 200 and "Site administration" in steps["index"].text, role


def _same_django_steps(got: dict[str, dict[str, httpx.Response]]) -> None:
    from test_third_party import _compare_pages
    for step in got["reference"]:
        _compare_pages({role: got[role][step] for role in ROLES}, step)


def test_django_admin_over_https(django_https_servers, certs):  # noqa: F811
    got = {}
    for role, srv in django_https_servers["tls"].items():
        origin = f"https://localhost:{srv.port}"
        with httpx.Client(verify=_client_context(certs), timeout=10) as c:
            got[role] = _django_admin_flow(origin, c, origin, {})
        _check_django_https_flow(got[role], role)
    _same_django_steps(got)
    for role, srv in django_https_servers["tls"].items():
        # Django's reasons (logged by django.security.csrf; the pages say nothing without DEBUG).
        for reason in ("Referer checking failed - no Referer.", "Origin checking failed - https://evil.example",
                       f"Origin checking failed - http://localhost:{srv.port}"):
            assert reason in srv.stderr, (role, reason, srv.stderr[-2000:])


@pytest.mark.pronghorn_only
def test_django_admin_over_http2(django_https_servers, certs):  # noqa: F811
    """The same flow over h2 (httpx, ALPN): the same statuses, cookies and pages as uvicorn's
    over HTTPS/1.1 (HTTP/2 has no transfer-encoding; the access lines say HTTP/2)."""
    got = {}
    for name, pair in (("reference", django_https_servers["tls"]), ("candidate", django_https_servers["h2"])):
        srv = pair[name]
        origin = f"https://localhost:{srv.port}"
        with httpx.Client(verify=_client_context(certs), timeout=10, http2=name == "candidate") as c:
            got[name] = _django_admin_flow(origin, c, origin, {})
        _check_django_https_flow(got[name], name)
    assert {r.http_version for r in got["candidate"].values()} == {"HTTP/2"}
    # Origins carry each server's port: blank them where a page shows them (none expected).
    _same_django_steps(got)
    django_https_servers["h2"]["candidate"].wait_for_log(r'"POST /admin/login/\?next=/admin/ HTTP/2" 302',
                                                         timeout=5, stream="stdout")


def test_django_admin_behind_a_proxy(django_https_servers):
    """A TLS-terminating proxy on 127.0.0.1 says X-Forwarded-Proto: https: Django sees a secure
    request (scope scheme "https"), so the same CSRF rules as over HTTPS and Secure cookies; the
    access log names the client from X-Forwarded-For."""
    got = {}
    pair = django_https_servers["proxy"]
    for role, srv in pair.items():
        origin = f"https://localhost:{srv.port}"
        with httpx.Client(timeout=10) as c:
            got[role] = _django_admin_flow(srv.url, c, origin, {
                "x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9", "host": f"localhost:{srv.port}"})
        _check_django_https_flow(got[role], role)
    _same_django_steps(got)
    lines = {}
    for role, srv in pair.items():
        srv.wait_for_log(r'203\.0\.113\.9:\d+ - "GET /admin/ HTTP/1\.1" 200', timeout=5, stream="stdout")
        lines[role] = [PEER_ADDR_RE.sub("ADDR", re.sub(r"203\.0\.113\.9:\d+", "CLIENT", line))
                       for line in srv.stdout.splitlines() if '"' in line]
    assert lines["candidate"] == lines["reference"], lines


def test_django_admin_behind_an_untrusted_proxy(django_https_servers):
    """X-Forwarded-Proto from an address not in --forwarded-allow-ips is ignored: the request is
    plain HTTP to Django (no Secure-cookie login possible: the https Origin does not match), and
    the access log names the socket's peer."""
    got = {}
    pair = django_https_servers["untrusted"]
    for role, srv in pair.items():
        origin = f"https://localhost:{srv.port}"
        with httpx.Client(timeout=10) as c:
            got[role] = _django_admin_flow(srv.url, c, origin, {
                "x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9", "host": f"localhost:{srv.port}"})
        assert got[role]["login"].status_code == 403, (role, got[role]["login"].status_code)
    _same_django_steps(got)
    for role, srv in pair.items():
        srv.wait_for_log(r'127\.0\.0\.1:\d+ - "POST /admin/login/\?next=/admin/ HTTP/1\.1" 403', timeout=5,
                         stream="stdout")
        assert "203.0.113.9" not in srv.stdout, role


# ==========================================================================================
# datasette: pages and JSON API over HTTP/1.1 (against uvicorn) and HTTP/2 (against hypercorn)
# ==========================================================================================

DATASETTE_APP = "third_party.datasette_app:app"
DATASETTE_PATHS = [
    "/", "/animals", "/animals/animals", "/animals/animals?_sort=name", "/animals/animals/2",
    "/animals/animals.json", "/animals/animals.json?_shape=array", "/animals/animals.json?_shape=objects&speed__gt=50",
    "/animals/animals/2.json", "/animals.json?sql=select+name,+speed+from+animals+order+by+speed+desc",
    "/animals/animals.csv", "/animals/animals.csv?_stream=on&_size=max", "/-/databases.json", "/-/plugins.json",
    "/-/static/app.css", "/no/such/page", "/animals/no_such_table", "/animals.json?sql=select+nonsense",
]


@pytest.fixture(scope="module")
def datasette_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("datasette") / "animals.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table animals (id integer primary key, name text, speed integer, note text)")
        conn.executemany("insert into animals (name, speed, note) values (?, ?, ?)", [
            ("pronghorn", 88, "the fastest in the Americas"), ("bison", 56, None), ("elk", 72, "wapiti"),
            ("ünïcødé hare", 64, "<b>escaped?</b>")])
    return db


def _datasette_norm(body: bytes, port: int) -> bytes:
    body = body.replace(str(port).encode(), b"PORT")
    # Timings, in the pages and the JSON.
    body = re.sub(rb'"query_ms": ?[0-9.eE-]+', b'"query_ms": 0', body)
    return re.sub(rb"[0-9.]+ ?ms\b", b"N ms", body)


def _datasette_compare(responses: dict, ports: dict, what: str) -> None:
    (ref_name, ref), (got_name, got) = responses.items()
    assert got.status_code == ref.status_code, (what, ref.status_code, got.status_code)
    drop = {"date", "server", "alt-svc"}
    rh = sorted((k, v.replace(str(ports[ref_name]), "PORT")) for k, v in ref.headers.multi_items() if k not in drop)
    gh = sorted((k, v.replace(str(ports[got_name]), "PORT")) for k, v in got.headers.multi_items() if k not in drop)
    assert gh == rh, f"{what}: headers differ\n  {ref_name}: {rh}\n  {got_name}: {gh}"
    assert _datasette_norm(got.content, ports[got_name]) == _datasette_norm(ref.content, ports[ref_name]), (
        f"{what}: body differs\n{ref.content[:500]!r}\n{got.content[:500]!r}")


@pytest.fixture(scope="module")
def datasette_http1(tmp_path_factory, datasette_db):
    servers = _start_pair(DATASETTE_APP, [], tmp_path_factory.mktemp("datasette-h1"), "datasette",
                          env={"PRONGHORN_TEST_DATASETTE_DB": str(datasette_db)})
    yield servers
    _stop_pair(servers)


def test_datasette_over_http1_same_as_uvicorn(datasette_http1):
    ports = {role: srv.port for role, srv in datasette_http1.items()}
    offsets = {role: len(srv.stdout) for role, srv in datasette_http1.items()}
    for path in DATASETTE_PATHS:
        responses = {}
        for role, srv in datasette_http1.items():
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                responses[role] = c.get(path)
        if path == "/animals/animals.json?_shape=array":
            assert [a["name"] for a in responses["reference"].json()] == [
                "pronghorn", "bison", "elk", "ünïcødé hare"]
        _datasette_compare(responses, ports, path)
    time.sleep(0.2)
    # The access lines (datasette also prints rich tracebacks of its 404s to stdout: object ids).
    logs = {role: [line for line in _log_lines(srv.stdout, offsets[role]) if ' - "' in line]
            for role, srv in datasette_http1.items()}
    assert len(logs["reference"]) == len(DATASETTE_PATHS)
    assert logs["candidate"] == logs["reference"]


@pytest.fixture(scope="module")
def datasette_http2(tmp_path_factory, datasette_db, certs):  # noqa: F811
    if IS_UVICORN:
        pytest.skip("uvicorn serves no HTTP/2 by default")
    work = tmp_path_factory.mktemp("datasette-h2")
    env = {"PRONGHORN_TEST_DATASETTE_DB": str(datasette_db)}
    srv = ServerProcess(DATASETTE_APP, ["--http2", *_tls_args(certs)], log_dir=work, name="datasette-h2",
                        env=env).start()
    peer = None
    try:
        peer = Hypercorn(DATASETTE_APP, work, "hypercorn-datasette", certs, env)
        yield {"hypercorn": peer, "pronghorn": srv}
    finally:
        if peer is not None:
            peer.stop()
        srv.stop()


def test_datasette_over_http2_same_as_hypercorn(datasette_http2, certs):  # noqa: F811
    ports = {name: srv.port for name, srv in datasette_http2.items()}
    clients = {name: httpx.Client(http2=True, verify=_client_context(certs), timeout=10,
                                  base_url=f"https://localhost:{srv.port}") for name, srv in datasette_http2.items()}
    try:
        for path in DATASETTE_PATHS:
            responses = {name: c.get(path) for name, c in clients.items()}
            assert {r.http_version for r in responses.values()} == {"HTTP/2"}
            _datasette_compare(responses, ports, path)
    finally:
        for c in clients.values():
            c.close()
    srv = datasette_http2["pronghorn"]
    srv.wait_for_log(r'"GET /animals/animals\.json HTTP/2" 200', timeout=5, stream="stdout")


@pytest.mark.parametrize("flag,version", [("--http2", "2"), ("--http1.1", "1.1")])
def test_datasette_with_curl_and_openssl(datasette_http2, certs, flag, version):  # noqa: F811
    """curl negotiates h2 (or http/1.1 when told) by ALPN with both servers and gets the same JSON;
    openssl s_client sees ALPN h2 and a verified chain."""
    bodies = {}
    for name, srv in datasette_http2.items():
        out = subprocess.run(["curl", "-sS", flag, "--cacert", str(certs / "ca.pem"), "-w", "\n%{http_version}",
                              f"https://localhost:{srv.port}/animals/animals.json?_shape=array"],
                             capture_output=True, text=True, timeout=20, env=client_env())
        assert out.returncode == 0, (name, out.stderr)
        body, _, got_version = out.stdout.rpartition("\n")
        assert got_version == version, (name, got_version)
        bodies[name] = json.loads(body)
    assert bodies["pronghorn"] == bodies["hypercorn"]
    assert [a["name"] for a in bodies["pronghorn"]] == ["pronghorn", "bison", "elk", "ünïcødé hare"]
    if flag == "--http2":
        srv = datasette_http2["pronghorn"]
        s_client = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-alpn", "h2,http/1.1",
                                   "-CAfile", str(certs / "ca.pem"), "-servername", "localhost"],
                                  input="", capture_output=True, text=True, timeout=20, env=client_env())
        assert "ALPN protocol: h2" in s_client.stdout, s_client.stdout[-2000:]
        assert "Verify return code: 0 (ok)" in s_client.stdout


@pytest.mark.slow  # two servers of two workers each, a rolling restart: ~10 s
@pytest.mark.parametrize("role", ROLES)
def test_sse_stream_across_sighup_with_workers(tmp_path, certs, role):  # noqa: F811
    """--workers 2 over HTTPS with an SSE stream open, then SIGHUP: the workers are replaced, the
    stream on the old one ends within a few seconds (its generator closed) instead of holding the
    old worker, and the new workers serve."""
    import threading
    kind = KINDS[role]
    events = tmp_path / "events"
    srv = ServerProcess(SSE_APP, ["--workers", "2", *_tls_args(certs)], log_dir=tmp_path, kind=kind,
                        name=f"sse-hup-{role}", env={"PRONGHORN_TEST_SSE_LOG": str(events)}).start()
    deadline = time.monotonic() + 20
    while srv.stderr.count("Application startup complete.") < 2:
        assert time.monotonic() < deadline and srv.running, srv.stderr
        time.sleep(0.05)
    base = f"https://localhost:{srv.port}"
    received, outcome = [], []
    first = threading.Event()

    def read_stream():
        try:
            with httpx.Client(verify=_client_context(certs), timeout=httpx.Timeout(5, read=15)) as c:
                with c.stream("GET", f"{base}/endless?id=hup") as r:
                    for event in _sse_events(r.iter_lines()):
                        received.append(event)
                        first.set()
            outcome.append(("ended", time.monotonic()))
        except httpx.HTTPError as e:
            outcome.append((type(e).__name__, time.monotonic()))
        finally:
            first.set()

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    try:
        assert first.wait(5) and received, (received, outcome)
        t0 = time.monotonic()
        srv.send_signal(signal.SIGHUP)
        reader.join(15)
        assert outcome, f"{kind}: the stream outlived the SIGHUP by 15 s\n{srv.stderr[-3000:]}"
        # uvicorn: ~5 s (the new worker starts, then the old one stops and sse-starlette, which
        # watches uvicorn's exit flag, ends its stream: "ended"). Pronghorn: ~2 s, the old worker
        # cuts the stream after --timeout-graceful-streams (the client sees an unfinished chunked
        # body, RemoteProtocolError; documented).
        assert outcome[0][1] - t0 < 10, (kind, outcome[0][1] - t0)
        assert outcome[0][0] in (("ended",) if kind == "uvicorn" else ("ended", "RemoteProtocolError")), outcome
        assert _wait_event_line(events, "endless", "hup", "closed", 3) is not None
        deadline = time.monotonic() + 15
        while True:
            try:
                r = httpx.get(f"{base}/finite?n=2", verify=_client_context(certs), timeout=5)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, srv.stderr[-3000:]
            time.sleep(0.2)
        assert r.text.count("data: event") == 2
    finally:
        rc = srv.stop(signal.SIGINT, timeout=15) if srv.running else srv.returncode
    assert rc == 0, srv.stderr[-3000:]
    assert "Traceback" not in srv.stderr, srv.stderr[-3000:]
