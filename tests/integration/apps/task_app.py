"""Apps that look at the task the server runs them in (tests/integration/test_app_task.py).

`app` routes:
  /identity        current_task() before and after a real wait: same Task object?
                   Also what the task shows of its coroutine.
  /anyio           an anyio task group and move_on_after inside the request
  /timeout         asyncio.timeout() around a wait that times out
  /cancel-self     the app cancels its own task while waiting, catches the
                   CancelledError and still answers
  /sleep0          yields to the loop with a bare sleep(0) several times
  /raise-after-wait  raises after a real wait (a later step of the task)
  /contextvar      returns the value a context variable had, then sets it
                   (each request must start from the server's context)
  /gather-self     gathers a child task that reads the request task's state
`generator_app`: an ASGI callable that returns a generator-based coroutine
(not a native one), answering "generator".
`legacy_factory_app`: `app`, with a task factory of the API before Python
3.11 (factory(loop, coro), no context argument) set at lifespan startup;
/factory-calls answers how many tasks it made.
`sync_wrapper_app`: a synchronous ASGI callable that sets a context variable
to the path (unless the path is /noset), then returns a coroutine that
answers with the variable's value.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import types


request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


async def _respond(send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/identity":
        before = asyncio.current_task()
        state_inside = inspect.getcoroutinestate(before.get_coro())
        await asyncio.sleep(0.01)
        after = asyncio.current_task()
        coro = after.get_coro()
        result = {
            "is_task": isinstance(before, asyncio.Task),
            "same": before is after,
            "in_all_tasks": before in asyncio.all_tasks(),
            "qualname": getattr(coro, "__qualname__", None),
            "state_inside": state_inside,
            "repr_names_app": "app" in repr(after),
        }
        await _respond(send, json.dumps(result).encode())
    elif path == "/anyio":
        import anyio

        results = []

        async def child(n):
            await anyio.sleep(0.01)
            results.append(n)

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(child, n)
        with anyio.move_on_after(0.02) as scope_:
            await anyio.sleep(5)
        await _respond(send, json.dumps({"children": sorted(results), "moved_on": scope_.cancelled_caught}).encode())
    elif path == "/timeout":
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(5)
            outcome = "no timeout"
        except TimeoutError:
            outcome = "timed out"
        await _respond(send, outcome.encode())
    elif path == "/cancel-self":
        task = asyncio.current_task()
        asyncio.get_running_loop().call_later(0.01, task.cancel)
        try:
            await asyncio.sleep(5)
            outcome = "not cancelled"
        except asyncio.CancelledError:
            task.uncancel()
            outcome = "caught cancel"
        await _respond(send, outcome.encode())
    elif path == "/sleep0":
        for _ in range(5):
            await asyncio.sleep(0)
        await _respond(send, b"slept")
    elif path == "/contextvar":
        seen = request_var.get()
        request_var.set("set by an earlier request")
        await asyncio.sleep(0)
        await _respond(send, seen.encode())
    elif path == "/gather-self":
        me = asyncio.current_task()

        async def child():
            await asyncio.sleep(0.005)
            return [me.done(), me.cancelling(), me.get_loop() is asyncio.get_running_loop(),
                    isinstance(me.get_name(), str)]

        results = await asyncio.gather(child(), asyncio.ensure_future(child()))
        await _respond(send, json.dumps(results).encode())
    elif path == "/system-exit":
        raise SystemExit(3)
    elif path == "/system-exit-after-wait":
        await asyncio.sleep(0.01)
        raise SystemExit(3)
    elif path == "/keyboard-interrupt-after-wait":
        await asyncio.sleep(0.01)
        raise KeyboardInterrupt
    elif path == "/returns-value":
        await _respond(send, b"answered")
        return 42
    elif path == "/raise-after-wait":
        await asyncio.sleep(0.01)
        raise ValueError("raised-after-wait marker")
    else:
        await _respond(send, b"not found", 404)


@types.coroutine
def _generator_based(send):
    yield from _respond(send, b"generator").__await__()


def generator_app(scope, receive, send):
    if scope["type"] != "http":
        async def nothing():
            return None
        return nothing()
    return _generator_based(send)


class _AwaitableResponse:
    """An awaitable that is not a coroutine: __await__ is a generator."""

    def __init__(self, send):
        self.send = send

    def __await__(self):
        return (yield from _respond(self.send, b"awaitable").__await__())


async def _nothing():
    return None


def awaitable_app(scope, receive, send):
    if scope["type"] != "http":
        return _nothing()
    return _AwaitableResponse(send)


def not_awaitable_app(scope, receive, send):
    if scope["type"] != "http":
        return _nothing()
    return 42


_factory_calls = 0


def _legacy_task_factory(loop, coro):
    global _factory_calls
    _factory_calls += 1
    return asyncio.Task(coro, loop=loop)


async def legacy_factory_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                asyncio.get_running_loop().set_task_factory(_legacy_task_factory)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http" and scope["path"] == "/factory-calls":
        await _respond(send, str(_factory_calls).encode())
        return
    await app(scope, receive, send)


wrapper_var: contextvars.ContextVar[str] = contextvars.ContextVar("wrapper_var", default="unset")


async def _answer_wrapper_var(send):
    await asyncio.sleep(0)
    await _respond(send, wrapper_var.get().encode())


def sync_wrapper_app(scope, receive, send):
    if scope["type"] != "http":
        return _nothing()
    if scope["path"] != "/noset":
        wrapper_var.set(scope["path"])
    return _answer_wrapper_var(send)
