"""WebSocket apps for the integration tests: a raw ASGI app and a FastAPI app.

Raw app (``apps.ws_app:raw``), by path:

  /echo                 accept, echo every message (text as text, bytes as bytes) until disconnect;
                        the disconnect message is written to $WS_TEST_LOG (one JSON line) if set
  /scope                accept, send the scope as JSON text, close 1000
  /subprotocol          accept with the client's first subprotocol, send it back as text
  /accept-headers       accept with a header x-accepted: yes
  /close-before-accept  websocket.close before accept (403)
  /deny                 websocket.http.response.start 401 + body "denied" in two parts
  /close?code=N&reason=R accept, close with code N and reason R, then record the next receive()
  /raise-before         raise before accept (500)
  /raise-after          accept, then raise (1011)
  /return-before        return before accept (500)
  /return-after         accept, then return (close 1000)
  /slow-reader          accept, never receive; sleep until disconnect is noticed by send()
  /send-after-close     accept, wait for the client's close, then send: record the exception name
  /flood?n=N&size=S     accept, send N binary messages of S bytes, then close 1000
  /misuse               accept, then send websocket.accept again (RuntimeError)
  /count                accept; counts messages until disconnect, sends nothing; logs the count
  /wait-for             accept; receive() under asyncio.wait_for(0.05) in a loop, echo text
  /one-then-return      accept, record one receive(), return
  /two-senders          two tasks send 20 x 256 KiB each; records "done" or "hung"
  GET /live (HTTP)      {"live": number of this app's coroutines alive}
  GET /ws-page (HTTP)   an HTML page whose script opens wss://<host>/scope, then /echo, and reports
                        what it saw with GET /done?http_version=V&echo=E (the browser test)
  /count-slow?sleep=S   as /count, with asyncio.sleep(S) after each message (the app is not waiting in receive())

FastAPI app (``apps.ws_app:app``): /ws/echo (text), /ws/json, /ws/broadcast (every message to every
client on the endpoint), /ws/auth?token=T (WebSocketException 1008 unless token == "secret"), and GET /.
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import parse_qs

from fastapi import FastAPI, WebSocket, WebSocketDisconnect, WebSocketException, status


def _record(entry: dict) -> None:
    path = os.environ.get("WS_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")


def _jsonable(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


WS_PAGE = b"""<!doctype html><title>ws</title><p id="out">pending</p><script>
const out = document.getElementById("out");
const report = (query) => fetch("/done?" + query).catch(() => {});
const first = new WebSocket(`wss://${location.host}/scope`);
first.onerror = () => report("error=scope");
first.onmessage = (event) => {
  const version = JSON.parse(event.data).http_version;
  const echo = new WebSocket(`wss://${location.host}/echo`);
  echo.onerror = () => report("error=echo");
  echo.onopen = () => echo.send("hello from chromium");
  echo.onmessage = (m) => {
    out.textContent = `done ${version} ${m.data}`;
    report(`http_version=${version}&echo=${encodeURIComponent(m.data)}`);
    echo.close(1000);
  };
};
</script>
"""


async def raw(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http" and scope["path"] == "/live":
        # How many of this app's WebSocket coroutines are alive (a leak check).
        import gc

        gc.collect()
        live = sum(1 for o in gc.get_objects()
                   if type(o).__name__ == "coroutine" and getattr(o, "__qualname__", "") == "raw")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps({"live": live}).encode()})
        return
    if scope["type"] == "http" and scope["path"] == "/ws-page":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html; charset=utf-8")]})
        await send({"type": "http.response.body", "body": WS_PAGE})
        return
    if scope["type"] == "http":
        body = json.dumps(_jsonable({k: v for k, v in scope.items() if k != "state"})).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    path = scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    first = await receive()
    assert first == {"type": "websocket.connect"}, first

    if path == "/echo":
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                _record({"path": path, "disconnect": message})
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    elif path == "/scope":
        await send({"type": "websocket.accept"})
        data = {k: v for k, v in scope.items() if k != "state"}
        await send({"type": "websocket.send", "text": json.dumps(_jsonable(data))})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/subprotocol":
        chosen = scope["subprotocols"][0] if scope["subprotocols"] else None
        await send({"type": "websocket.accept", "subprotocol": chosen})
        await send({"type": "websocket.send", "text": str(chosen)})
        await receive()
    elif path == "/accept-headers":
        await send({"type": "websocket.accept", "headers": [(b"x-accepted", b"yes")]})
        await receive()
    elif path == "/close-before-accept":
        await send({"type": "websocket.close"})
        _record({"path": path, "after": await receive()})
    elif path == "/deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"x-denied", b"1"), (b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"den", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"ied"})
        _record({"path": path, "after": await receive()})
    elif path == "/close":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": int(query.get("code", 1000)), "reason": query.get("reason", "")})
        _record({"path": path, "after": await receive()})
    elif path == "/raise-before":
        raise RuntimeError("raised before accept")
    elif path == "/raise-after":
        await send({"type": "websocket.accept"})
        raise RuntimeError("raised after accept")
    elif path == "/return-before":
        return
    elif path == "/return-after":
        await send({"type": "websocket.accept"})
        return
    elif path == "/slow-reader":
        await send({"type": "websocket.accept"})
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent < 512 * 1024 * 1024:
                await send({"type": "websocket.send", "bytes": chunk})
                sent += len(chunk)
        except OSError as exc:
            _record({"path": path, "sent": sent, "error": type(exc).__name__})
    elif path == "/send-after-close":
        await send({"type": "websocket.accept"})
        message = await receive()
        try:
            await send({"type": "websocket.send", "text": "late"})
            outcome = "sent"
        except Exception as exc:  # noqa: BLE001 - the test checks which
            outcome = type(exc).__name__
        _record({"path": path, "message": message, "outcome": outcome})
    elif path == "/flood":
        await send({"type": "websocket.accept"})
        payload = b"y" * int(query.get("size", 1024))
        for _ in range(int(query.get("n", 100))):
            await send({"type": "websocket.send", "bytes": payload})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/misuse":
        await send({"type": "websocket.accept"})
        try:
            await send({"type": "websocket.accept"})
            outcome = "no error"
        except RuntimeError as exc:
            outcome = str(exc)
        _record({"path": path, "outcome": outcome})
        await send({"type": "websocket.close"})
    elif path == "/wait-for":
        # receive() under asyncio.wait_for, timing out again and again (cancelled waiters).
        await send({"type": "websocket.accept"})
        while True:
            try:
                message = await asyncio.wait_for(receive(), 0.05)
            except asyncio.TimeoutError:
                continue
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text") or ""})
    elif path == "/one-then-return":
        await send({"type": "websocket.accept"})
        _record({"path": path, "message": await receive()})
    elif path == "/two-senders":
        # Two tasks send 20 x 256 KiB each on one WebSocket to a client that reads late.
        await send({"type": "websocket.accept"})
        chunk = b"z" * (256 * 1024)

        async def sender():
            for _ in range(20):
                await send({"type": "websocket.send", "bytes": chunk})
        try:
            await asyncio.wait_for(asyncio.gather(sender(), sender()), 15)
            outcome = "done"
        except asyncio.TimeoutError:
            outcome = "hung"
        _record({"path": path, "outcome": outcome})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/count":
        await send({"type": "websocket.accept"})
        count = 0
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                _record({"path": path, "count": count, "disconnect": message})
                return
            count += 1
    elif path == "/count-slow":
        # as /count, but the app awaits something else between receives (a pass of the loop)
        await send({"type": "websocket.accept"})
        count = 0
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                _record({"path": path, "count": count, "disconnect": message})
                return
            count += 1
            await asyncio.sleep(float(query.get("sleep", "0")))
    else:
        await send({"type": "websocket.close", "code": 1000})


app = FastAPI()
_broadcast: set[WebSocket] = set()


@app.get("/")
async def index():
    return {"ok": True}


@app.websocket("/ws/echo")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect as exc:
        _record({"path": "/ws/echo", "code": exc.code})


@app.websocket("/ws/json")
async def ws_json(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_json()
            await websocket.send_json({"got": data, "pid": os.getpid()})
    except WebSocketDisconnect:
        pass


@app.websocket("/ws/broadcast")
async def ws_broadcast(websocket: WebSocket):
    await websocket.accept()
    _broadcast.add(websocket)
    try:
        while True:
            text = await websocket.receive_text()
            await asyncio.gather(*(peer.send_text(text) for peer in list(_broadcast)), return_exceptions=True)
    except WebSocketDisconnect:
        pass
    finally:
        _broadcast.discard(websocket)


@app.websocket("/ws/auth")
async def ws_auth(websocket: WebSocket, token: str = ""):
    if token != "secret":
        raise WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason="bad token")
    await websocket.accept()
    await websocket.send_text("welcome")
    await websocket.close()


BROWSER_PAGE = """<!doctype html>
<html><head><title>ws</title></head><body><pre id="out">pending</pre>
<script>
const out = document.getElementById("out");
const lines = [];
const ws = new WebSocket(`ws://${location.host}/ws/browser`);
ws.binaryType = "arraybuffer";
ws.onopen = () => {
  lines.push("open " + ws.extensions);
  ws.send("hello from the browser");
  ws.send(new Uint8Array([1, 2, 3, 250]).buffer);
  ws.send("x".repeat(100000));
};
ws.onmessage = (event) => {
  if (typeof event.data === "string") {
    lines.push(event.data.length > 100 ? "text of " + event.data.length : "text " + event.data);
  } else {
    lines.push("binary " + Array.from(new Uint8Array(event.data)).join(","));
  }
  if (lines.length === 4) ws.close(1000, "bye");
};
ws.onclose = (event) => {
  lines.push("closed " + event.code);
  out.textContent = lines.join("\\n");
};
</script></body></html>
"""


@app.get("/ws-page")
async def ws_page():
    from fastapi.responses import HTMLResponse

    return HTMLResponse(BROWSER_PAGE)


@app.websocket("/ws/browser")
async def ws_browser(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                text = message["text"]
                await websocket.send_text(("echo: " + text) if len(text) < 100 else text)
            else:
                await websocket.send_bytes(bytes(reversed(message["bytes"])))
    except WebSocketDisconnect:
        pass
