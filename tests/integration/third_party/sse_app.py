"""A Starlette app streaming Server-Sent Events with sse-starlette's EventSourceResponse.

Routes:
  /endless?id=ID    one event every 0.2 s, forever
  /delayed?id=ID    the first event only after 3 s, then two more 0.1 s apart, then the end
  /polling?id=ID    the documented pattern: the generator checks ``await request.is_disconnected()``
                    before each event (one every 0.1 s) and stops when it is True
  /finite?n=N       N events, then the end of the response
  /plain?id=ID      not SSE: Starlette's own StreamingResponse, a line "tick N" every 0.2 s, forever
                    (with ASGI spec 2.4 Starlette stops listening for http.disconnect and relies on
                    send() raising OSError)

Each generator appends lines "ROUTE ID start|closed|disconnected MONOTONIC_TIME [DETAIL]" to the
file named by PRONGHORN_TEST_SSE_LOG (and prints them to stdout), "closed" from its finally block,
so a test can tell when (and whether) the generator was closed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

LOG = os.environ.get("PRONGHORN_TEST_SSE_LOG")


def record(route: str, ident: str, what: str, detail: str = "") -> None:
    line = f"{route} {ident} {what} {time.monotonic():.6f} {detail}".rstrip() + "\n"
    sys.stdout.write(line)
    sys.stdout.flush()
    if LOG:
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


async def endless(request: Request):
    ident = request.query_params.get("id", "-")

    async def events():
        record("endless", ident, "start")
        i = 0
        try:
            while True:
                yield {"event": "tick", "id": str(i), "data": f"tick {i}"}
                i += 1
                await asyncio.sleep(0.2)
        except BaseException as e:
            record("endless", ident, "interrupted", type(e).__name__)
            raise
        finally:
            record("endless", ident, "closed")

    return EventSourceResponse(events())


async def delayed(request: Request):
    ident = request.query_params.get("id", "-")

    async def events():
        record("delayed", ident, "start")
        try:
            await asyncio.sleep(3)
            for i in range(3):
                yield {"event": "late", "data": f"late {i}"}
                await asyncio.sleep(0.1)
        finally:
            record("delayed", ident, "closed")

    return EventSourceResponse(events())


async def polling(request: Request):
    ident = request.query_params.get("id", "-")

    async def events():
        record("polling", ident, "start")
        i = 0
        try:
            while True:
                if await request.is_disconnected():
                    record("polling", ident, "disconnected")
                    break
                yield {"data": f"poll {i}"}
                i += 1
                await asyncio.sleep(0.1)
        finally:
            record("polling", ident, "closed", str(i))

    return EventSourceResponse(events())


async def finite(request: Request):
    n = int(request.query_params.get("n", "3"))

    async def events():
        for i in range(n):
            yield {"event": "n", "id": str(i), "data": f"event {i}"}

    return EventSourceResponse(events(), ping=0)


async def plain(request: Request):
    ident = request.query_params.get("id", "-")

    async def lines():
        record("plain", ident, "start")
        i = 0
        try:
            while True:
                yield f"tick {i}\n".encode()
                i += 1
                await asyncio.sleep(0.2)
        except BaseException as e:
            record("plain", ident, "interrupted", type(e).__name__)
            raise
        finally:
            record("plain", ident, "closed")

    return StreamingResponse(lines(), media_type="text/plain")


async def root(request: Request):
    return PlainTextResponse("sse app")


app = Starlette(routes=[
    Route("/", root),
    Route("/endless", endless),
    Route("/delayed", delayed),
    Route("/polling", polling),
    Route("/finite", finite),
    Route("/plain", plain),
])
