"""A raw ASGI 3 application used by the integration tests.

Routes (all on any method unless noted):

  /echo                 read the whole body, send it back (x-body-length header)
  /stream?n=N           stream N bytes generated on the fly in 64 KiB pieces (chunked)
  /upload               count the body bytes without keeping them -> {"bytes": N}
                        (?pause_after=N&pause=S: stop reading for S s after N bytes)
  /scope, /scope/...    JSON dump of the scope (bytes made JSON-safe)
  /sleep?s=F            sleep F seconds, then 200 "slept"
  /raise-before         raise before http.response.start
  /raise-mid            send start + one body chunk, then raise
  /no-response          return without sending anything
  /send-after-disconnect?out=FILE
                        wait for http.disconnect, then try to send; record outcome to FILE
  /expect?delay=F       sleep F seconds *before* the first receive(), then read the body
  /state                lifespan state: returns it, mutates the per-request shallow copy
  /status?code=N        empty response with the given status
  /redirect             307 to /echo
  /headers              response with repeated headers (set-cookie x2)
  /bad-header           response header value containing CRLF (injection attempt)
  /fixed                "hello, world" with content-length (for HEAD tests)
  /pathsend?path=P      http.response.pathsend when offered, else plain body
  /wait-disconnect?out=FILE
                        read body, then wait for http.disconnect; record time to FILE
  anything else         404
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

CHUNK = 64 * 1024
_PIECE = b"x" * CHUNK


def _json_safe(obj):
    if isinstance(obj, bytes):
        return {"__bytes__": obj.decode("latin-1")}
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def _query(scope) -> dict[str, str]:
    q = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {k: v[-1] for k, v in q.items()}


async def _read_body(receive) -> bytes:
    parts = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionError("client disconnected while reading body")
        parts.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(parts)


async def _respond(send, status: int, body: bytes = b"", headers=None, content_type=b"text/plain; charset=utf-8"):
    hdrs = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    hdrs += list(headers or [])
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def _json(send, obj, status: int = 200, headers=None):
    await _respond(send, status, json.dumps(obj).encode(), headers, b"application/json")


async def lifespan(scope, receive, send, *, state_value="raw-app"):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            if "state" in scope:
                scope["state"]["started_by"] = state_value
                scope["state"]["hits"] = []
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    assert scope["type"] == "http", scope["type"]
    path = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):  # ASGI: path includes root_path
        path = path[len(root_path):]
    q = _query(scope)

    if path == "/echo":
        body = await _read_body(receive)
        ctype = dict(scope["headers"]).get(b"content-type", b"application/octet-stream")
        await _respond(send, 200, body, [(b"x-body-length", str(len(body)).encode())], ctype)

    elif path == "/stream":
        n = int(q.get("n", "0"))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        remaining = n
        while remaining > 0:
            piece = _PIECE if remaining >= CHUNK else _PIECE[:remaining]
            remaining -= len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    elif path == "/upload":
        # ?pause_after=N&pause=S: stop reading for S seconds once N bytes arrived, so a
        # server without back-pressure would have to buffer what the client keeps sending.
        pause_after = int(q.get("pause_after", "-1"))
        total = 0
        while True:
            if 0 <= pause_after <= total:
                pause_after = -1
                await asyncio.sleep(float(q.get("pause", "2")))
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            total += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        await _json(send, {"bytes": total})

    elif path == "/scope" or path.startswith("/scope/"):
        body = await _read_body(receive)
        dump = _json_safe({k: v for k, v in scope.items() if k not in ("app", "state")})
        dump["__has_state__"] = "state" in scope
        dump["__types__"] = {k: type(v).__name__ for k, v in scope.items()}
        dump["__header_types__"] = sorted({f"{type(n).__name__},{type(v).__name__}" for n, v in scope["headers"]})
        dump["__body_length__"] = len(body)
        await _json(send, dump)

    elif path == "/sleep":
        await asyncio.sleep(float(q.get("s", "1")))
        await _respond(send, 200, b"slept")

    elif path == "/raise-before":
        raise RuntimeError("raise-before-start marker")

    elif path == "/raise-mid":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("raise-mid-response marker")

    elif path == "/raise-mid-chunked":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("raise-mid-response marker")

    elif path == "/no-response":
        return

    elif path == "/send-after-disconnect":
        out = q["out"]
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
        result = {"raised": None, "mro": []}
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"too late"})
        except BaseException as exc:  # noqa: BLE001 - recording is the point
            result["raised"] = type(exc).__name__
            result["mro"] = [c.__name__ for c in type(exc).__mro__]
            result["is_oserror"] = isinstance(exc, OSError)
        with open(out + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(out + ".tmp", out)

    elif path == "/wait-disconnect":
        out = q["out"]
        await _read_body(receive)
        msg = await receive()
        with open(out + ".tmp", "w") as f:
            json.dump({"type": msg["type"], "time": time.time()}, f)
        os.replace(out + ".tmp", out)

    elif path == "/expect":
        delay = float(q.get("delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        body = await _read_body(receive)
        await _json(send, {"bytes": len(body), "body": body.decode("latin-1")})

    elif path == "/state":
        state = scope.get("state")
        if state is None:
            await _json(send, {"state": None})
            return
        snapshot = {"started_by": state.get("started_by"), "hits": len(state.get("hits", [])),
                    "per_request_seen": "per_request" in state}
        state["per_request"] = True  # must not leak into the next request (shallow copy)
        state.setdefault("hits", []).append(1)  # shared mutable object: visible next time
        await _json(send, snapshot)

    elif path == "/status":
        code = int(q.get("code", "200"))
        if code in (204, 304) or code < 200:
            await send({"type": "http.response.start", "status": code, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _respond(send, code, f"status {code}".encode())

    elif path == "/redirect":
        await _respond(send, 307, b"", [(b"location", b"/echo")])

    elif path == "/headers":
        await _respond(send, 200, b"ok", [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
                                           (b"X-Mixed-Case", b"Value")])

    elif path == "/bad-header":
        # Header injection attempt by the app: the server must not emit "x-injected".
        await _respond(send, 200, b"never", [(b"x-ok", b"a\r\nX-Injected: 1")])

    elif path == "/fixed":
        await _respond(send, 200, b"hello, world")

    elif path == "/misuse":  # ASGI misuse must raise RuntimeError; the message is the response
        start = {"type": "http.response.start", "status": 200, "headers": []}
        case = q.get("case", "")
        started = False
        try:
            if case == "body-before-start":
                await send({"type": "http.response.body", "body": b"x"})
            elif case == "start-twice":
                await send(start)
                started = True
                await send(start)
            elif case == "unknown-type":
                await send({"type": "http.response.bogus"})
            message = "no error"
        except RuntimeError as e:
            message = f"RuntimeError: {e}"
        if not started:
            await send(start)
        await send({"type": "http.response.body", "body": message.encode()})

    elif path == "/receive-after-response":  # what receive() gives once the response is complete
        await _respond(send, 200, b"done")
        msg = await asyncio.wait_for(receive(), 5)
        AFTER_RESPONSE.append(msg["type"])

    elif path == "/after-response-log":
        await _json(send, AFTER_RESPONSE)

    elif path == "/burn":  # a costly app: spins for ?us= microseconds of CPU
        end = time.perf_counter() + int(q.get("us", "200")) / 1e6
        while time.perf_counter() < end:
            pass
        await _respond(send, 200, b"burnt")

    elif path == "/pathsend":
        fpath = q["path"]
        size = os.path.getsize(fpath)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(size).encode())]})
        if "http.response.pathsend" in scope.get("extensions", {}):
            await send({"type": "http.response.pathsend", "path": fpath})
        else:
            with open(fpath, "rb") as f:
                await send({"type": "http.response.body", "body": f.read()})

    else:
        await _respond(send, 404, b"Not Found")


def factory():
    """For --factory: returns the ASGI app."""
    return app


AFTER_RESPONSE: list = []


class _Holder:
    """For a dotted attribute path: apps.raw_app:holder.app."""

    app = staticmethod(app)


holder = _Holder()
