"""A raw ASGI 3 app for the command-line option tests (test_cli.py).

Routes:
  /            "ok"
  /info        JSON: pid, ppid, loop module, DOTENV_VALUE seen at import, cwd,
               lifespan_started, root_path, client, scheme
  /ctx/set?v=V sets the `var` contextvar to V (in the request's context)
  /ctx/get     the value of `var` (or "unset")
  /ctx/import  the value of `import_var` (set at import time, in the main context)
  /sleep?s=F   sleeps F seconds

At import time, when CLI_IMPORT_LOG names a file, "<pid>" is appended to it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
from urllib.parse import parse_qs

DOTENV_VALUE = os.environ.get("PRONGHORN_TEST_DOTENV", "<missing>")

_log = os.environ.get("CLI_IMPORT_LOG")
if _log:
    with open(_log, "a") as _f:
        _f.write(f"{os.getpid()}\n")

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
import_var: contextvars.ContextVar[str] = contextvars.ContextVar("import_var", default="unset")
import_var.set("set-at-import")

_state = {"lifespan_started": False}


def _query(scope) -> dict[str, str]:
    q = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {k: v[-1] for k, v in q.items()}


async def _send(send, status: int, body: bytes, ctype: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body"):
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                _state["lifespan_started"] = True
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _drain(receive)
    path = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):  # ASGI: path includes root_path
        path = path[len(root_path):]
    q = _query(scope)
    if path == "/info":
        info = {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "loop": type(asyncio.get_running_loop()).__module__,
            "dotenv": DOTENV_VALUE,
            "cwd": os.getcwd(),
            "lifespan_started": _state["lifespan_started"],
            "root_path": scope.get("root_path", ""),
            "path": scope["path"],
            "client": list(scope["client"]) if scope.get("client") else None,
            "scheme": scope.get("scheme"),
        }
        await _send(send, 200, json.dumps(info).encode(), b"application/json")
    elif path == "/ctx/set":
        var.set(q.get("v", "x"))
        await _send(send, 200, var.get().encode())
    elif path == "/ctx/get":
        await _send(send, 200, var.get().encode())
    elif path == "/ctx/import":
        await _send(send, 200, import_var.get().encode())
    elif path == "/sleep":
        await asyncio.sleep(float(q.get("s", "1")))
        await _send(send, 200, b"slept")
    else:
        await _send(send, 200, b"ok")


def factory():
    return app
