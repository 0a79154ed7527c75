"""A Quart app for test_third_party.py.

Routes:
  GET  /                JSON {"hello": "quart"}
  GET  /greet/<name>    text
  GET  /items/<int:id>  JSON; 404 for an unknown id (abort)
  POST /form            form fields -> JSON
  POST /json            JSON body -> JSON (400 on bad JSON)
  GET  /stream          a streamed response from an async generator (chunked)
  GET  /redirect        302 to /
  GET  /cookie          sets a cookie
  GET  /boom            an exception -> 500
  WS   /ws              JSON echo (accepted implicitly by the first send) until "bye", then close 1000
  WS   /ws/denied       abort(401) before accepting: an HTTP 401 response to the handshake
                        (the websocket.http.response extension) where the server offers it
  anything else         404
"""

from __future__ import annotations

import asyncio

from quart import Quart, abort, jsonify, make_response, redirect, request, websocket

app = Quart(__name__)
STARTED = []


@app.before_serving
async def startup():
    STARTED.append(True)


@app.get("/")
async def index():
    return {"hello": "quart", "started": bool(STARTED)}


@app.get("/greet/<name>")
async def greet(name):
    return f"hello {name}"


@app.get("/items/<int:item_id>")
async def item(item_id):
    if item_id != 1:
        abort(404)
    return jsonify(id=item_id, name="horn")


@app.post("/form")
async def form():
    data = await request.form
    return {"fields": {k: data.getlist(k) for k in sorted(data.keys())}}


@app.post("/json")
async def json_echo():
    data = await request.get_json()
    return {"received": data, "type": type(data).__name__}


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(5):
            yield f"part {i}\n".encode()
            await asyncio.sleep(0.01)

    return gen(), 200, {"Content-Type": "text/plain; charset=utf-8"}


@app.get("/redirect")
async def go():
    return redirect("/")


@app.get("/cookie")
async def cookie():
    resp = await make_response({"cookie": "set"})
    resp.set_cookie("flavour", "oat", httponly=True)
    return resp


@app.get("/boom")
async def boom():
    raise RuntimeError("boom")


@app.websocket("/ws")
async def ws_echo():
    while True:
        data = await websocket.receive_json()
        if data == "bye":
            await websocket.close(1000)
            return
        await websocket.send_json({"echo": data, "path": websocket.path})


@app.websocket("/ws/denied")
async def ws_denied():
    abort(401)
