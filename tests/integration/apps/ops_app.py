"""A raw ASGI app for the supervisor operations tests (test_supervisor_ops.py).

Routes:
  /pid            {"pid": ..., "ppid": ...}
  /exit           the worker exits at once with code 1 (a crash)
  /sleep?s=N      prints "ops_app: sleeping" to stderr, sleeps N seconds
                  (asyncio), then answers
  /genheaders     response headers given as a generator (one 4000-byte value)

At import, if the file named by OPS_BROKEN_FLAG exists, the import fails (to
simulate deploying broken code before a SIGHUP).
"""

import asyncio
import json
import os
import sys

_flag = os.environ.get("OPS_BROKEN_FLAG")
if _flag and os.path.exists(_flag):
    raise RuntimeError("OPS_BROKEN_FLAG is set: this deploy is broken")


async def _json(send, obj):
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/exit":
        os._exit(1)
    if path == "/genheaders":
        # ASGI allows any iterable of headers; a generator is not a list.
        long_value = b"v" * 4000
        await send({"type": "http.response.start", "status": 200,
                    "headers": ((name, value) for name, value in [(b"x-long", long_value), (b"content-length", b"2")])})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if path == "/sleep":
        seconds = float(scope["query_string"].decode().partition("=")[2] or 1)
        # Tests wait for this line to know the request is in flight.
        print("ops_app: sleeping", file=sys.stderr, flush=True)
        await asyncio.sleep(seconds)
    await _json(send, {"pid": os.getpid(), "ppid": os.getppid()})
