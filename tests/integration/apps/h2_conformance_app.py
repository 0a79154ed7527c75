"""The ASGI application of the HTTP/2 conformance battery (test_http2_conformance.py).

Routes (any method):

  /fixed                "hello, world" with content-length (HEAD: the same head, no body)
  /echo                 reads the whole body; answers it back with x-body-length (what the app
                        received), x-content-length (the request's content-length, or "none") and
                        x-more-bodies (how many http.request messages carried it)
  /length?n=N           N bytes with content-length N, written in 1000-byte pieces
                        (&declared=M: content-length M all the same, the app's mistake)
  /stream?n=N           N bytes without content-length, in 4 KiB pieces
  /status?code=N        an empty response with that status (204, 304: no body at all)
  /conn-headers         a response whose app sets HTTP/1 connection-specific headers
                        (connection, keep-alive, proxy-connection, transfer-encoding, upgrade, te)
                        besides x-kept: they must not reach an HTTP/2 client
  /infinite?key=K       streams 16 KiB pieces until the client goes (at most 256 MiB), counting
                        in SENT[K] the bytes whose send() has returned
  /progress?key=K       {"sent": SENT[K], "ended": whether /infinite?key=K has ended}
  /sleep?s=F            sleeps, then "slept" (a stream that stays open meanwhile)
  anything else         404
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

SENT: dict[str, int] = {}
ENDED: set[str] = set()
_PIECE = b"i" * 16384


def _query(scope) -> dict[str, str]:
    q = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {k: v[-1] for k, v in q.items()}


async def _respond(send, status: int, body: bytes = b"", headers=()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive, send) -> None:
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
    path = scope["path"]
    q = _query(scope)

    if path == "/fixed":
        await _respond(send, 200, b"hello, world", [(b"content-type", b"text/plain")])

    elif path == "/echo":
        parts, messages = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            messages += 1
            parts.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body = b"".join(parts)
        length = dict(scope["headers"]).get(b"content-length", b"none")
        await _respond(send, 200, body, [(b"x-body-length", str(len(body)).encode()), (b"x-content-length", length),
                                         (b"x-more-bodies", str(messages).encode())])

    elif path == "/length":
        n = int(q["n"])
        declared = q.get("declared", q["n"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", declared.encode())]})
        try:
            while n > 0:
                piece = min(n, 1000)
                n -= piece
                await send({"type": "http.response.body", "body": b"l" * piece, "more_body": n > 0})
            if int(q["n"]) == 0:
                await send({"type": "http.response.body", "body": b""})
        except RuntimeError:
            pass  # the server's refusal of a body longer than its content-length

    elif path == "/stream":
        n = int(q["n"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while n > 0:
            piece = min(n, 4096)
            n -= piece
            await send({"type": "http.response.body", "body": b"s" * piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    elif path == "/status":
        await send({"type": "http.response.start", "status": int(q["code"]), "headers": []})
        await send({"type": "http.response.body", "body": b""})

    elif path == "/conn-headers":
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"Connection", b"close"), (b"keep-alive", b"timeout=5"), (b"proxy-connection", b"keep-alive"),
            (b"Transfer-Encoding", b"chunked"), (b"upgrade", b"h2c"), (b"te", b"trailers"), (b"x-kept", b"yes"),
            (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    elif path == "/infinite":
        key = q["key"]
        SENT[key] = 0
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while not gone.done() and SENT[key] < 256 * 1024 * 1024:
                await send({"type": "http.response.body", "body": _PIECE, "more_body": True})
                SENT[key] += len(_PIECE)
        except OSError:
            pass
        finally:
            gone.cancel()
            ENDED.add(key)

    elif path == "/progress":
        key = q["key"]
        body = json.dumps({"sent": SENT.get(key), "ended": key in ENDED}).encode()
        await _respond(send, 200, body, [(b"content-type", b"application/json")])

    elif path == "/sleep":
        await asyncio.sleep(float(q.get("s", "1")))
        await _respond(send, 200, b"slept")

    else:
        await _respond(send, 404, b"Not Found")


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
