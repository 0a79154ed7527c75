"""A raw ASGI app for the supervisor (--workers) tests.

Routes:
  /pid              {"pid": os.getpid(), "ppid": os.getppid()}
  /sleep?ms=N       asyncio.sleep(N ms), then the same JSON as /pid
  /block            time.sleep(60) inside the event loop (the health check must catch it)
  /alloc?mib=N      allocate N MiB, keep it in a global, answer with the pid JSON

At import time, when WORKERS_IMPORT_LOG names a file, one line "<pid>" is
appended to it (to count how many times the module was imported).

`lifespan_fail` sends lifespan.startup.failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

_log = os.environ.get("WORKERS_IMPORT_LOG")
if _log:
    with open(_log, "a") as _f:
        _f.write(f"{os.getpid()}\n")

_HOG: list[bytearray] = []


def _query(scope) -> dict[str, str]:
    q = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {k: v[-1] for k, v in q.items()}


async def _json(send, obj, status: int = 200):
    body = json.dumps(obj).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def _ids() -> dict:
    return {"pid": os.getpid(), "ppid": os.getppid()}


async def _lifespan(receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    # Drain the request body (there is none in these tests, but be correct).
    while True:
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body", False):
            break
    path = scope["path"]
    q = _query(scope)
    if path == "/pid":
        await _json(send, _ids())
    elif path == "/sleep":
        await asyncio.sleep(float(q.get("ms", "50")) / 1000.0)
        await _json(send, _ids())
    elif path == "/block":
        time.sleep(60)  # BLOCKING-LINE-MARKER: the health check's stack dump must name this line
        await _json(send, _ids())
    elif path == "/alloc":
        mib = int(q.get("mib", "100"))
        chunk = bytearray(mib << 20)
        # Touch every page so that it counts in the RSS.
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        _HOG.append(chunk)
        await _json(send, _ids())
    else:
        await _json(send, {"error": "not found"}, 404)


async def lifespan_fail(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "workers-lifespan-failed-marker"})
        return
    await app(scope, receive, send)
