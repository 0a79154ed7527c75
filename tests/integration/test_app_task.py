"""The task an application runs in: a real asyncio.Task, the same one for the
whole request, whatever the server does to complete the exchange when the
app's coroutine ends (src/bridge/request.cpp, AppRunner)."""

from __future__ import annotations

import httpx
import pytest


def test_current_task_is_one_asyncio_task_for_the_whole_request(server_factory):
    srv = server_factory("apps.task_app:app")
    r = httpx.get(srv.url + "/identity", timeout=5)
    assert r.status_code == 200
    result = r.json()
    assert result["is_task"] and result["same"] and result["in_all_tasks"], result
    # The task shows the app's coroutine, not the server's wrapper.
    assert result["qualname"] == "app"
    assert result["state_inside"] == "CORO_RUNNING"
    assert result["repr_names_app"]


@pytest.mark.parametrize("path, body", [
    ("/anyio", '{"children": [0, 1, 2], "moved_on": true}'),
    ("/timeout", "timed out"),
    ("/cancel-self", "caught cancel"),
    ("/sleep0", "slept"),
])
def test_task_features_work_inside_a_request(server_factory, path, body):
    srv = server_factory("apps.task_app:app")
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        for _ in range(2):  # and again on the same connection
            r = client.get(path)
            assert r.status_code == 200
            assert r.text == body


def test_exception_after_a_wait_gives_500_and_the_traceback(server_factory):
    srv = server_factory("apps.task_app:app")
    with httpx.Client(base_url=srv.url, timeout=5) as client:
        r = client.get("/raise-after-wait")
        assert r.status_code == 500
        srv.wait_for_log(r"Exception in ASGI application")
        assert "raised-after-wait marker" in srv.stderr
        assert "Traceback" in srv.stderr
        # Logged by the server, not by asyncio as an unretrieved task exception.
        assert "exception was never retrieved" not in srv.stderr
        assert client.get("/sleep0").text == "slept"


def test_an_app_returning_a_generator_based_coroutine_is_served(server_factory):
    # --interface asgi3: a plain function would be taken for ASGI 2, as in uvicorn.
    srv = server_factory("apps.task_app:generator_app", "--interface", "asgi3")
    r = httpx.get(srv.url + "/", timeout=5)
    assert r.status_code == 200
    assert r.text == "generator"
