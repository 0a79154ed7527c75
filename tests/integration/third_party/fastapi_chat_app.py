"""A FastAPI chat over WebSockets, as its docs teach it, for test_third_party_protocols.py.

  WS  /chat/{room}?token=T&name=N   token "letmein" required: a dependency raises
                                    WebSocketException(code=1008) otherwise (before accept: the
                                    server answers the handshake with 403). Each JSON message
                                    {"text": ...} is broadcast to everyone in the room as
                                    {"from": N, "text": ...}; {"cmd": "bye"} makes the server close
                                    with 1000, {"cmd": "kick"} with 4001 "kicked". Joining and leaving
                                    (WebSocketDisconnect) are broadcast as {"event": "join"|"leave"}.
  WS  /slow?id=ID                   accepts, then sends {"n": i} every 0.1 s until the client leaves
  WS  /boom                         raises before accepting (the server answers the handshake with 500)
  WS  /forgetful                    returns without accepting or closing (500 too)
  GET /events?id=ID                 the lines recorded for ID (what the app saw), as JSON
  GET /pid                          the worker's pid

Each join/leave/disconnect is recorded as "ID WHAT DETAIL" lines in the file named by
PRONGHORN_TEST_CHAT_LOG, so a test can see the app's side of a disconnect.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import Depends, FastAPI, Query, WebSocket, WebSocketDisconnect, WebSocketException, status

app = FastAPI()
LOG = os.environ.get("PRONGHORN_TEST_CHAT_LOG")
ROOMS: dict[str, set[WebSocket]] = {}


def record(ident: str, what: str, detail: str = "") -> None:
    if LOG:
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ident} {what} {detail}".rstrip().encode() + b"\n")
        finally:
            os.close(fd)


async def require_token(token: str | None = Query(default=None)) -> str:
    if token != "letmein":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="bad token")
    return token


async def broadcast(room: str, message: dict) -> None:
    for peer in list(ROOMS.get(room, ())):
        try:
            await peer.send_json(message)
        except Exception:  # a peer that left between the copy and the send
            ROOMS.get(room, set()).discard(peer)


@app.websocket("/chat/{room}")
async def chat(websocket: WebSocket, room: str, name: str = "anon", token: str = Depends(require_token)):
    await websocket.accept()
    members = ROOMS.setdefault(room, set())
    members.add(websocket)
    record(name, "join", room)
    await broadcast(room, {"event": "join", "name": name, "pid": os.getpid()})
    try:
        while True:
            data = await websocket.receive_json()
            if data.get("cmd") == "bye":
                members.discard(websocket)
                await websocket.close(code=1000)
                record(name, "bye")
                break
            if data.get("cmd") == "kick":
                members.discard(websocket)
                await websocket.close(code=4001, reason="kicked")
                record(name, "kicked")
                break
            await broadcast(room, {"from": name, "text": data.get("text")})
    except WebSocketDisconnect as exc:
        members.discard(websocket)
        record(name, "disconnect", f"{exc.code} {room}")
        await broadcast(room, {"event": "leave", "name": name})


@app.websocket("/slow")
async def slow(websocket: WebSocket, id: str = "-"):
    await websocket.accept()
    record(id, "start")
    i = 0
    try:
        while True:
            await websocket.send_json({"n": i})
            i += 1
            await asyncio.sleep(0.1)
    except WebSocketDisconnect as exc:
        record(id, "disconnect", str(exc.code))
    except BaseException as exc:
        record(id, "interrupted", type(exc).__name__)
        raise
    finally:
        record(id, "closed")


@app.websocket("/boom")
async def boom(websocket: WebSocket):
    raise RuntimeError("boom before accept")


@app.websocket("/forgetful")
async def forgetful(websocket: WebSocket):
    return None


@app.get("/events")
async def events(id: str):
    try:
        with open(LOG or os.devnull) as f:
            lines = [line.rstrip("\n") for line in f if line.startswith(id + " ")]
    except FileNotFoundError:
        lines = []
    return {"lines": lines}


@app.get("/pid")
async def pid():
    return {"pid": os.getpid()}
