"""The task an application runs in: by default Pronghorn's request task
(src/bridge/task.cpp), with --asyncio-tasks an asyncio.Task driving an
AppRunner (src/bridge/request.cpp). Either way one task for the whole request,
which asyncio.timeout, TaskGroup-like code and anyio can use."""

from __future__ import annotations

import httpx
import pytest

from conftest import ResponseReader


TASK_KINDS = [pytest.param((), id="request-task"), pytest.param(("--asyncio-tasks",), id="asyncio-tasks")]


@pytest.mark.parametrize("options", TASK_KINDS)
def test_current_task_is_one_task_for_the_whole_request(server_factory, options):
    srv = server_factory("apps.task_app:app", *options)
    r = httpx.get(srv.url + "/identity", timeout=5)
    assert r.status_code == 200
    result = r.json()
    assert result["same"], result
    # Only asyncio's own Task is an asyncio.Task listed by all_tasks().
    asyncio_task = bool(options)
    assert result["is_task"] is asyncio_task and result["in_all_tasks"] is asyncio_task, result
    # The task shows the app's coroutine, not a server wrapper.
    assert result["qualname"] == "app"
    assert result["state_inside"] == "CORO_RUNNING"
    assert result["repr_names_app"]


@pytest.mark.parametrize("options", TASK_KINDS)
def test_each_request_starts_in_the_servers_context(server_factory, options):
    srv = server_factory("apps.task_app:app", *options)
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        assert [client.get("/contextvar").text for _ in range(3)] == ["unset"] * 3


@pytest.mark.pronghorn_only  # uvicorn 0.55 starts it in a copy of the previous request's context
@pytest.mark.parametrize("options", TASK_KINDS)
def test_pipelined_requests_each_start_in_the_servers_context(server_factory, options):
    """A pipelined request is read (and its task started) while the previous
    request's task sends its response: it must not start in a copy of that
    task's context, with the values it set (uvicorn's does: a difference)."""
    import socket

    srv = server_factory("apps.task_app:app", *options)
    with socket.create_connection(srv.addr, timeout=5) as sock:
        sock.sendall(b"GET /contextvar HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        reader = ResponseReader(sock)
        assert [reader.read_response().body for _ in range(3)] == [b"unset"] * 3


@pytest.mark.pronghorn_only  # uvicorn 0.55 leaks the value into the next pipelined request
@pytest.mark.parametrize("options", TASK_KINDS)
def test_what_the_apps_call_sets_in_the_context_is_its_requests_only(server_factory, options):
    """The app is called in the context its task then runs in: a synchronous wrapper that sets a
    context variable before returning the coroutine is seen by that request, not by the next one
    (pipelined: read while the previous request's task runs)."""
    import socket

    # A plain function is taken for ASGI 2 unless told (as uvicorn does).
    srv = server_factory("apps.task_app:sync_wrapper_app", "--interface", "asgi3", *options)
    with socket.create_connection(srv.addr, timeout=5) as sock:
        sock.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p for p in (b"/a", b"/noset", b"/c", b"/noset")))
        reader = ResponseReader(sock)
        assert [reader.read_response().body for _ in range(4)] == [b"/a", b"unset", b"/c", b"unset"]


@pytest.mark.pronghorn_only  # uvicorn has no --asyncio-tasks
@pytest.mark.parametrize("reset", [(), ("--reset-contextvars",)], ids=["default", "reset-contextvars"])
def test_a_task_factory_without_a_context_argument_runs_each_request(server_factory, reset):
    """An app may set a task factory of the API before Python 3.11, factory(loop, coro): with
    asyncio Tasks, each request's task comes from it, in the server's (or a fresh) context.
    asyncio's loop passes such a factory no context unless given one; uvloop's always passes
    it one (and so fails under any server)."""
    srv = server_factory("apps.task_app:legacy_factory_app", "--loop", "asyncio", "--asyncio-tasks", *reset)
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        assert [client.get("/contextvar").text for _ in range(3)] == ["unset"] * 3
        assert int(client.get("/factory-calls").text) >= 4
    assert "Traceback" not in srv.stderr, srv.stderr


@pytest.mark.parametrize("options", TASK_KINDS)
def test_the_request_task_can_be_inspected_from_another_task(server_factory, options):
    srv = server_factory("apps.task_app:app", *options)
    r = httpx.get(srv.url + "/gather-self", timeout=5)
    assert r.json() == [[False, 0, True, True]] * 2


@pytest.mark.parametrize("options", TASK_KINDS)
@pytest.mark.parametrize("path, body", [
    ("/anyio", '{"children": [0, 1, 2], "moved_on": true}'),
    ("/timeout", "timed out"),
    ("/cancel-self", "caught cancel"),
    ("/sleep0", "slept"),
])
def test_task_features_work_inside_a_request(server_factory, path, body, options):
    srv = server_factory("apps.task_app:app", *options)
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        for _ in range(2):  # and again on the same connection
            r = client.get(path)
            assert r.status_code == 200
            assert r.text == body


@pytest.mark.parametrize("options", TASK_KINDS)
def test_exception_after_a_wait_gives_500_and_the_traceback(server_factory, options):
    srv = server_factory("apps.task_app:app", *options)
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        r = client.get("/raise-after-wait")
        assert r.status_code == 500
        srv.wait_for_log(r"Exception in ASGI application")
        assert "raised-after-wait marker" in srv.stderr
        assert "Traceback" in srv.stderr
        # Logged by the server, not by asyncio as an unretrieved task exception.
        assert "exception was never retrieved" not in srv.stderr
        assert client.get("/sleep0").text == "slept"


@pytest.mark.parametrize("options", TASK_KINDS)
def test_an_app_returning_a_value_is_logged(server_factory, options):
    """uvicorn's error line: "ASGI callable should return None, but returned '42'." The
    response was complete before the return, so the connection goes on serving (uvicorn
    closes it; docs/architecture.md)."""
    srv = server_factory("apps.task_app:app", *options)
    with srv.connect() as s:
        s.sendall(b"GET /returns-value HTTP/1.1\r\nHost: x\r\n\r\n")
        r = ResponseReader(s).read_response()
        assert r.status == 200 and r.body == b"answered"
        srv.wait_for_log(r"ERROR: +ASGI callable should return None, but returned '42'\.")
        s.sendall(b"GET /sleep0 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ResponseReader(s).read_response().body == b"slept"


@pytest.mark.parametrize("options", TASK_KINDS)
@pytest.mark.parametrize("path", ["/system-exit", "/system-exit-after-wait", "/keyboard-interrupt-after-wait"])
def test_system_exit_or_keyboard_interrupt_from_the_app_is_an_app_error(server_factory, options, path):
    """As in uvicorn (whose request cycle catches BaseException): logged with its traceback,
    answered with a 500, and the server goes on serving; the process does not exit."""
    srv = server_factory("apps.task_app:app", *options)
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        r = client.get(path)
        assert r.status_code == 500
        srv.wait_for_log(r"Exception in ASGI application")
        assert "Traceback" in srv.stderr
        assert ("KeyboardInterrupt" if "keyboard" in path else "SystemExit") in srv.stderr
        assert client.get("/sleep0").text == "slept"
    assert srv.proc.poll() is None


@pytest.mark.parametrize("options", TASK_KINDS)
@pytest.mark.parametrize("app, body", [("generator_app", "generator"), ("awaitable_app", "awaitable")])
def test_an_app_returning_an_awaitable_that_is_not_a_coroutine_is_served(server_factory, options, app, body):
    """What `await app(...)` accepts in uvicorn: a generator-based coroutine (which asyncio
    3.12+ no longer takes for a Task) and an object with __await__."""
    # --interface asgi3: a plain function would be taken for ASGI 2, as in uvicorn.
    srv = server_factory(f"apps.task_app:{app}", "--interface", "asgi3", *options)
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        for _ in range(2):
            r = client.get("/")
            assert r.status_code == 200
            assert r.text == body


def test_an_app_returning_something_not_awaitable_gets_500(server_factory):
    srv = server_factory("apps.task_app:not_awaitable_app", "--interface", "asgi3")
    r = httpx.get(srv.url + "/", timeout=5)
    assert r.status_code == 500
    srv.wait_for_log(r"Exception in ASGI application")
    assert "TypeError" in srv.stderr and "int" in srv.stderr
