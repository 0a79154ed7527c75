"""Apps for the drop-in behaviour of issue 14 (tests/integration/test_dropin.py).

Raw ASGI routes:
  /stream-watched?out=FILE&watchers=N
                        N tasks loop on receive() (as sse-starlette's disconnect watcher does)
                        while the response streams "tick" lines; when every watcher has seen
                        http.disconnect, what each received is written to FILE as JSON
  /slow-head?delay=F    http.response.start, then the body after F seconds
  /raise-after-start    http.response.start, then an exception
  /background?out=FILE  leaves a task running that writes FILE in its `finally`, answers at once
  /slow?delay=F         answers after F seconds
  /echo                 echoes the request body
  /big?n=N              N bytes with content-length
  /short-body           declares content-length 100 and sends 5 bytes
  /poll-disconnected?n=N
                        Starlette's request.is_disconnected() N times while a watcher task waits in
                        receive(); answers how many asyncio Futures are alive afterwards
Starlette routes (under /st):
  /st/stream?out=FILE   StreamingResponse of a generator that yields every 0.1 s; its `finally`
                        writes the time it ran to FILE
  /st/stream-fnf        StreamingResponse whose generator raises FileNotFoundError after one chunk
  /st/file?path=P       FileResponse (behind GZipMiddleware)
  /st/sse               an endless stream of events (text/event-stream), one every 0.2 s
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, StreamingResponse
from starlette.routing import Route


def _write(path: str, data) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


async def _stream(request):
    out = request.query_params["out"]

    async def gen():
        try:
            for i in range(1000):
                yield b"chunk %d\n" % i
                await asyncio.sleep(0.1)
        finally:
            _write(out, {"closed_at": time.time()})

    return StreamingResponse(gen(), media_type="text/plain")


async def _stream_fnf(request):
    async def gen():
        yield b"first\n"
        await asyncio.sleep(0.05)
        raise FileNotFoundError(2, "No such file or directory", "/nonexistent/app-file")

    return StreamingResponse(gen(), media_type="text/plain")


async def _file(request):
    return FileResponse(request.query_params["path"], media_type="text/plain")


async def _sse(request):
    async def gen():
        i = 0
        while True:
            yield f"data: event {i}\n\n".encode()
            i += 1
            await asyncio.sleep(0.2)

    return StreamingResponse(gen(), media_type="text/event-stream")


starlette_app = Starlette(
    routes=[
        Route("/st/stream", _stream),
        Route("/st/stream-fnf", _stream_fnf),
        Route("/st/file", _file),
        Route("/st/sse", _sse),
    ],
    middleware=[Middleware(GZipMiddleware, minimum_size=500)],
)

_background: set = set()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/st/"):
        await starlette_app(scope, receive, send)
        return
    q = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}

    if path == "/stream-watched":
        received: list[list] = []  # per watcher
        in_order: list[str] = []  # body bytes in the order the watchers received them

        async def watch(slot: list) -> None:
            while True:
                message = await receive()
                body = message.get("body", b"").decode("latin-1")
                slot.append([message["type"], body, message.get("more_body")])
                in_order.append(body)
                if message["type"] == "http.disconnect":
                    return

        watchers = []
        for _ in range(int(q.get("watchers", "2"))):
            slot: list = []
            received.append(slot)
            watchers.append(asyncio.ensure_future(watch(slot)))
        await send(start)
        while not all(w.done() for w in watchers):
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            await asyncio.sleep(0.05)
        _write(q["out"], {"watchers": received, "body": "".join(in_order)})
    elif path == "/slow-head":
        await send(start)
        await asyncio.sleep(float(q.get("delay", "2")))
        await send({"type": "http.response.body", "body": b"late body"})
    elif path == "/raise-after-start":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"100")]})
        raise RuntimeError("raised after http.response.start")
    elif path == "/background":
        out = q["out"]

        async def lingering() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                _write(out, {"finally_ran": True})

        task = asyncio.ensure_future(lingering())
        _background.add(task)
        await send(start)
        await send({"type": "http.response.body", "body": b"started"})
    elif path == "/slow":
        await asyncio.sleep(float(q.get("delay", "1")))
        await send(start)
        await send({"type": "http.response.body", "body": b"slow done"})
    elif path == "/big":
        n = int(q.get("n", "102400"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(n).encode())]})
        await send({"type": "http.response.body", "body": b"b" * n})
    elif path == "/short-body":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"short"})
    elif path == "/poll-disconnected":
        import gc

        from starlette.requests import Request

        watcher = asyncio.ensure_future(receive())
        await asyncio.sleep(0)
        request = Request(scope, receive)
        for _ in range(int(q.get("n", "2000"))):
            assert not await request.is_disconnected()
        gc.collect()
        alive = sum(1 for o in gc.get_objects() if isinstance(o, asyncio.Future))
        await send(start)
        await send({"type": "http.response.body", "body": str(alive).encode()})
        watcher.cancel()
    elif path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send(start)
        await send({"type": "http.response.body", "body": body})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
