"""A Litestar app for test_third_party.py.

Routes:
  GET  /                      JSON {"hello": "litestar"}
  GET  /items/{item_id:int}   JSON item; 404 (Litestar's JSON error) for an unknown id
  GET  /items?limit=N&tag=T   JSON list, query parameters parsed and validated (400 on a bad int)
  POST /items                 dataclass body -> 201 JSON; 400 on a missing field or bad JSON
  POST /orders                msgspec.Struct body -> 201 JSON
  PUT  /items/{item_id:int}   dataclass body -> JSON
  DELETE /items/{item_id:int} 204
  GET  /files/{path:path}     the path parameter, as text
  GET  /text                  text/plain
  GET  /redirect              302 to /
  GET  /stream                a Stream of 5 chunks (chunked)
  GET  /boom                  an exception -> 500
  WS   /ws                    a @websocket handler: JSON echo until {"cmd": "bye"}, then close 4000 "done"
  WS   /listen                a @websocket_listener: each text message back upper-cased
  WS   /guarded               a guard that refuses (NotAuthorizedException) before the handshake
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from litestar import Litestar, MediaType, Response, WebSocket, delete, get, post, put, websocket, websocket_listener
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect, Stream

ITEMS = {1: {"id": 1, "name": "horn", "price": 9.5, "tags": ["a", "b"]},
         2: {"id": 2, "name": "hoof", "price": 3.0, "tags": []}}


@dataclass
class NewItem:
    name: str
    price: float
    tags: list[str] = field(default_factory=list)


class Order(msgspec.Struct):
    item_id: int
    quantity: int = 1
    note: str | None = None


@get("/")
async def index() -> dict:
    return {"hello": "litestar"}


@get("/items/{item_id:int}")
async def get_item(item_id: int) -> dict:
    if item_id not in ITEMS:
        raise NotFoundException(f"item {item_id} not found")
    return ITEMS[item_id]


@get("/items")
async def list_items(limit: int = 10, tag: str | None = None) -> list[dict]:
    items = [i for i in ITEMS.values() if tag is None or tag in i["tags"]]
    return items[:limit]


@post("/items")
async def create_item(data: NewItem) -> dict:
    return {"id": 3, "name": data.name, "price": data.price, "tags": data.tags}


@post("/orders")
async def create_order(data: Order) -> Order:
    return Order(item_id=data.item_id, quantity=data.quantity * 2, note=data.note or "none")


@put("/items/{item_id:int}")
async def replace_item(item_id: int, data: NewItem) -> dict:
    return {"id": item_id, "name": data.name, "price": data.price, "tags": data.tags}


@delete("/items/{item_id:int}")
async def delete_item(item_id: int) -> None:
    return None


@get("/files/{path:path}", media_type=MediaType.TEXT)
async def files(path: str) -> str:
    return f"path={path}"


@get("/text", media_type=MediaType.TEXT)
async def text() -> str:
    return "plain text from litestar"


@get("/redirect")
async def redirect() -> Redirect:
    return Redirect(path="/")


@get("/stream")
async def stream() -> Stream:
    async def chunks():
        for i in range(5):
            yield f"chunk {i}\n".encode()

    return Stream(chunks(), media_type=MediaType.TEXT)


@get("/headers")
async def headers() -> Response:
    return Response(content={"ok": True}, headers={"x-custom": "1"},
                    cookies=[], status_code=202)


@get("/boom")
async def boom() -> dict:
    raise RuntimeError("boom")


@websocket("/ws")
async def ws_echo(socket: WebSocket) -> None:
    await socket.accept()
    while True:
        data = await socket.receive_json()
        if data == {"cmd": "bye"}:
            await socket.close(code=4000, reason="done")
            return
        await socket.send_json({"echo": data})


@websocket_listener("/listen")
async def ws_listen(data: str) -> str:
    return data.upper()


def refuse(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    raise NotAuthorizedException("no entry")


@websocket("/guarded", guards=[refuse])
async def ws_guarded(socket: WebSocket) -> None:
    await socket.accept()
    await socket.send_text("should not get here")


app = Litestar(route_handlers=[index, get_item, list_items, create_item, create_order, replace_item,
                               delete_item, files, text, redirect, stream, headers, boom,
                               ws_echo, ws_listen, ws_guarded])
