"""Applications for the benchmark (bench/run.py).

Raw ASGI apps (no framework) and one FastAPI app.  Every raw app also answers the
lifespan protocol, since granian and hypercorn always run it.
"""


HELLO_BODY = b"Hello, world!"
TEN_K_BODY = b"x" * (10 * 1024)
CHUNK = b"y" * (64 * 1024)
CHUNKS = 16  # 16 x 64 KiB = 1 MiB


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _fixed(body: bytes, content_type: bytes = b"text/plain"):
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
    }
    end = {"type": "http.response.body", "body": body}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        await send(start)
        await send(end)

    return app


# Raw ASGI "Hello, world!".
hello = _fixed(HELLO_BODY)

# Raw ASGI 10 KiB response.
ten_k = _fixed(TEN_K_BODY, b"application/octet-stream")


async def stream(scope, receive, send):
    """1 MiB streamed download: 16 x 64 KiB chunks with more_body (chunked encoding)."""
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/octet-stream")],
    })
    for _ in range(CHUNKS - 1):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": CHUNK, "more_body": False})


async def upload(scope, receive, send):
    """Reads the whole request body (the 1 MiB upload) and answers with its size."""
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = str(size).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


# FastAPI: a small JSON object, and path + query parameters with a validated JSON body.
# FastAPI and Pydantic are imported on the first call (a lifespan event or the first
# request), so the raw apps' workers do not carry them in their memory figures.  The
# module-level object is a plain ASGI callable, which every server accepts (hypercorn
# looks the name up in the module's namespace, so a module __getattr__ would not do).


class _LazyFastAPI:
    def __init__(self):
        self._app = None

    async def __call__(self, scope, receive, send):
        app = self._app
        if app is None:
            app = self._app = _make_fastapi_app()
        await app(scope, receive, send)


def _make_fastapi_app():
    from typing import List, Optional

    from fastapi import FastAPI
    from pydantic import BaseModel

    app = FastAPI()

    class Item(BaseModel):
        name: str
        price: float
        quantity: int = 1
        tags: List[str] = []

    @app.get("/")
    async def root():
        return {"message": "Hello, world!"}

    @app.get("/json")
    async def json_hello():
        return {"message": "Hello, world!", "id": 1, "ok": True}

    @app.post("/items/{item_id}")
    async def create_item(item_id: int, item: Item, q: Optional[str] = None, limit: int = 10):
        return {
            "item_id": item_id,
            "q": q,
            "limit": limit,
            "name": item.name,
            "tags": item.tags,
            "total": item.price * item.quantity,
        }

    return app


fastapi_app = _LazyFastAPI()


# ---- static files ----
# Starlette's StaticFiles mounted at /static over $BENCH_STATIC_DIR: what an app
# served by uvicorn uses. Servers with static files of their own (Pronghorn's
# --static-path-*, granian's) serve the same directory under /static without
# reaching the app; any other path is Starlette's 404.
class _LazyStatic:
    def __init__(self):
        self._app = None

    async def __call__(self, scope, receive, send):
        app = self._app
        if app is None:
            import os

            from starlette.applications import Starlette
            from starlette.routing import Mount
            from starlette.staticfiles import StaticFiles

            app = self._app = Starlette(
                routes=[Mount("/static", StaticFiles(directory=os.environ["BENCH_STATIC_DIR"]))])
        await app(scope, receive, send)


static_files = _LazyStatic()


# ---- WebSockets (bench/ws_bench.py) ----
# /echo: every message back as it came; /broadcast: every message to every open
# WebSocket on the path; /idle: accept, then wait for the close. Any HTTP
# request gets "ok" (the harness's readiness probe).
_ws_peers: set = set()


async def ws(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    path = scope["path"]
    if path == "/broadcast":
        _ws_peers.add(send)
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                out = {"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")}
                for peer in list(_ws_peers):
                    try:
                        await peer(out)
                    except Exception:  # noqa: BLE001 - a peer that left
                        _ws_peers.discard(peer)
        finally:
            _ws_peers.discard(send)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if path == "/echo":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
