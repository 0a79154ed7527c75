"""A FastAPI application exercising the parts of Starlette that depend on the server."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel

# Directory for files the app writes (background tasks, disconnect records) and serves.
WORK_DIR = Path(os.environ.get("PRONGHORN_TEST_WORKDIR") or tempfile.mkdtemp(prefix="pronghorn-fastapi-"))
WORK_DIR.mkdir(parents=True, exist_ok=True)
STATIC_FILE = WORK_DIR / "static.bin"


@asynccontextmanager
async def lifespan(app: FastAPI):
    STATIC_FILE.write_bytes(bytes(range(256)) * 1024)  # 256 KiB
    yield {"db": "fake-db-connection", "started_at": time.time()}


class AddHeaderMiddleware:
    """Pure ASGI middleware adding a response header.

    (A @app.middleware("http") / BaseHTTPMiddleware would break request.is_disconnected()
    under uvicorn too: its wrapped receive never reports the disconnect.)
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-middleware", b"yes")]}
            await send(message)

        await self.app(scope, receive, send_wrapper)


app = FastAPI(lifespan=lifespan)
app.add_middleware(AddHeaderMiddleware)


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/")
async def root():
    return {"hello": "world"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None, limit: int = 10):
    return {"item_id": item_id, "q": q, "limit": limit}


@app.get("/files/{file_path:path}")
async def read_path(file_path: str):
    return {"file_path": file_path}


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "price": item.price, "tags": item.tags, "total": item.price * 2}


@app.put("/items/{item_id}")
async def update_item(item_id: int, item: Item):
    return {"item_id": item_id, **item.model_dump()}


@app.delete("/items/{item_id}", status_code=204)
async def delete_item(item_id: int):
    return None


@app.get("/missing/{item_id}")
async def missing(item_id: int):
    raise HTTPException(status_code=404, detail=f"item {item_id} not found", headers={"x-error": "missing"})


@app.get("/teapot")
async def teapot():
    raise HTTPException(status_code=418, detail="I'm a teapot")


@app.get("/stream")
async def stream(n: int = 10):
    async def gen():
        for i in range(n):
            yield f"line {i}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/file")
async def file():
    return FileResponse(STATIC_FILE, media_type="application/octet-stream", filename="static.bin")


@app.get("/pathsend-offered")
async def pathsend_offered(request: Request):
    return {"pathsend": "http.response.pathsend" in request.scope.get("extensions", {})}


def _write_marker(name: str, value: str) -> None:
    path = WORK_DIR / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value)
    os.replace(tmp, path)


@app.post("/background")
async def background(name: str, tasks: BackgroundTasks):
    tasks.add_task(_write_marker, name, "background-done")
    return {"scheduled": name}


@app.get("/sync")
def sync_endpoint(x: int = 1):
    time.sleep(0.01)
    return {"sync": True, "x": x * 3}


@app.get("/state")
async def state(request: Request):
    return {"db": request.state.db, "has_started_at": isinstance(request.state.started_at, float)}


@app.get("/redirect")
async def redirect():
    return RedirectResponse("/items/1?q=redirected", status_code=307)


@app.get("/plain")
async def plain():
    return PlainTextResponse("plain text", headers={"x-custom": "1"})


@app.get("/raise")
async def raise_error():
    raise RuntimeError("fastapi-unhandled-marker")


@app.post("/disconnect")
async def disconnect(request: Request, name: str, timeout: float = 10.0):
    """Loop on request.is_disconnected(); record when the disconnect was seen."""
    start = time.time()
    while time.time() - start < timeout:
        if await request.is_disconnected():
            _write_marker(name, json.dumps({"disconnected": True, "time": time.time()}))
            return {"disconnected": True}
        await asyncio.sleep(0.05)
    _write_marker(name, json.dumps({"disconnected": False, "time": time.time()}))
    return {"disconnected": False}


@app.get("/root-path")
async def root_path(request: Request):
    return {"root_path": request.scope.get("root_path"), "path": request.scope["path"],
            "url": str(request.url)}


@app.get("/client")
async def client(request: Request):
    return {"client": list(request.client) if request.client else None, "scheme": request.url.scheme}


@app.post("/form")
async def form(request: Request):
    data = await request.form()
    out = {}
    for k, v in data.multi_items():
        if hasattr(v, "read"):
            content = await v.read()
            out[k] = {"filename": v.filename, "size": len(content)}
        else:
            out[k] = v
    return out
