"""A raw ASGI app for the load-balancer tests (test_load_balancer.py).

Routes:
  /healthz          200 "ok": the route the proxies' health checks ask for
  /work?ms=N        (GET or POST; a POST body is read) sleeps N ms (asyncio), then answers
                    {"instance": $LB_INSTANCE, "pid": ..., "client": [host, port] from the scope,
                     "scheme": ..., "method": ...}
"""

import asyncio
import json
import os

INSTANCE = os.environ.get("LB_INSTANCE", "?")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    if scope["path"] == "/healthz":
        body = b"ok"
        content_type = b"text/plain"
    else:
        query = scope["query_string"].decode()
        ms = float(query.partition("ms=")[2] or 0) if "ms=" in query else 0.0
        if ms:
            await asyncio.sleep(ms / 1000)
        body = json.dumps({"instance": INSTANCE, "pid": os.getpid(), "client": scope.get("client"),
                           "scheme": scope["scheme"], "method": scope["method"]}).encode()
        content_type = b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
