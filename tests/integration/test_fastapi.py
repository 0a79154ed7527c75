"""A real FastAPI application served by the server under test."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import IS_UVICORN


@pytest.fixture
def client(fastapi_server):
    with httpx.Client(base_url=fastapi_server.url, timeout=10) as c:
        yield c


def _wait_file(path, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} not written within {timeout}s")


def test_json_hello(client):
    r = client.get("/")
    assert r.status_code == 200
    assert r.json() == {"hello": "world"}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-middleware"] == "yes"


def test_path_and_query_params(client):
    assert client.get("/items/42", params={"q": "x y", "limit": 3}).json() == {"item_id": 42, "q": "x y", "limit": 3}
    assert client.get("/files/a/b%20c/d.txt").json() == {"file_path": "a/b c/d.txt"}
    r = client.get("/items/notanint")
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_pydantic_body(client):
    r = client.post("/items", json={"name": "hammer", "price": 9.5, "tags": ["tool"]})
    assert r.status_code == 200
    assert r.json() == {"name": "hammer", "price": 9.5, "tags": ["tool"], "total": 19.0}
    r = client.put("/items/7", json={"name": "saw", "price": 1})
    assert r.json() == {"item_id": 7, "name": "saw", "price": 1.0, "tags": []}
    r = client.post("/items", json={"name": "hammer"})
    assert r.status_code == 422
    r = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_delete_204(client):
    r = client.delete("/items/3")
    assert r.status_code == 204
    assert r.content == b""


def test_http_exception(client):
    r = client.get("/missing/5")
    assert r.status_code == 404
    assert r.json() == {"detail": "item 5 not found"}
    assert r.headers["x-error"] == "missing"
    assert client.get("/teapot").status_code == 418
    assert client.get("/no/such/route").status_code == 404
    assert client.post("/").status_code == 405


def test_streaming_response(client):
    with client.stream("GET", "/stream", params={"n": 1000}) as r:
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        lines = list(r.iter_lines())
    assert lines == [f"line {i}" for i in range(1000)]


def test_file_response(client, fastapi_workdir):
    r = client.get("/file")
    assert r.status_code == 200
    assert r.content == bytes(range(256)) * 1024
    assert r.headers["content-length"] == str(256 * 1024)
    assert r.headers["content-disposition"] == 'attachment; filename="static.bin"'
    assert "etag" in r.headers and "last-modified" in r.headers
    assert r.headers["x-middleware"] == "yes"


def test_file_response_range(client):
    r = client.get("/file", headers={"range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == bytes(range(10, 20))


def test_file_response_head(client):
    r = client.head("/file")
    assert r.status_code in (200, 405)
    assert r.content == b""


def test_pathsend_not_offered_by_default(client):
    """As under uvicorn: Starlette's FileResponse sends the file as body messages (so that
    its GZipMiddleware compresses it)."""
    assert client.get("/pathsend-offered").json() == {"pathsend": False}


@pytest.mark.pronghorn_only
def test_pathsend_offered_to_starlette_with_the_option(server_factory, fastapi_workdir):
    srv = server_factory("apps.fastapi_app:app", "--asgi-pathsend",
                         env={"PRONGHORN_TEST_WORKDIR": str(fastapi_workdir)})
    assert httpx.get(f"{srv.url}/pathsend-offered", timeout=10).json() == {"pathsend": True}


def test_background_task(client, fastapi_workdir):
    name = f"bg-{time.time_ns()}"
    r = client.post("/background", params={"name": name})
    assert r.json() == {"scheduled": name}
    assert _wait_file(fastapi_workdir / name) == "background-done"


def test_sync_endpoint(client):
    assert client.get("/sync", params={"x": 5}).json() == {"sync": True, "x": 15}


def test_sync_endpoints_concurrently(fastapi_server):
    import concurrent.futures

    with httpx.Client(base_url=fastapi_server.url, timeout=10) as c:
        def one(i):
            return c.get("/sync", params={"x": i}).json()["x"]

        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            assert sorted(ex.map(one, range(40))) == [i * 3 for i in range(40)]


def test_lifespan_state(client):
    assert client.get("/state").json() == {"db": "fake-db-connection", "has_started_at": True}


def test_redirect(client):
    r = client.get("/redirect", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/items/1?q=redirected"
    r = client.get("/redirect", follow_redirects=True)
    assert r.json() == {"item_id": 1, "q": "redirected", "limit": 10}


def test_unhandled_exception_500(fastapi_server, client):
    r = client.get("/raise")
    assert r.status_code == 500
    fastapi_server.wait_for_log("fastapi-unhandled-marker")
    assert client.get("/").status_code == 200


def test_form_and_upload(client):
    r = client.post("/form", data={"a": "1", "b": "two"}, files={"f": ("x.bin", b"\x00" * 5000)})
    assert r.status_code == 200
    assert r.json() == {"a": "1", "b": "two", "f": {"filename": "x.bin", "size": 5000}}


def test_client_address(client):
    r = client.get("/client").json()
    assert r["client"][0] == "127.0.0.1"
    assert r["scheme"] == "http"


def test_is_disconnected_detects_client_going_away(fastapi_server, fastapi_workdir):
    name = f"disc-{time.time_ns()}"
    with fastapi_server.connect(timeout=5) as s:
        s.sendall(f"POST /disconnect?name={name}&timeout=8 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        time.sleep(0.5)
        assert not (fastapi_workdir / name).exists(), "disconnect reported while the client is connected"
        closed_at = time.time()
    result = json.loads(_wait_file(fastapi_workdir / name, timeout=6))
    assert result["disconnected"] is True
    assert result["time"] - closed_at < 1.5, "disconnect seen too late"


def test_is_disconnected_false_while_connected(fastapi_server, fastapi_workdir):
    name = f"nodisc-{time.time_ns()}"
    r = httpx.post(f"{fastapi_server.url}/disconnect", params={"name": name, "timeout": 0.5}, timeout=5)
    assert r.json() == {"disconnected": False}
    assert json.loads(_wait_file(fastapi_workdir / name))["disconnected"] is False


def test_example_app(server_factory):
    from conftest import HERE

    srv = server_factory("examples.main:app", cwd=HERE.parent.parent)
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        assert c.get("/").json() == {"message": "Hello from Pronghorn"}
        assert c.get("/items/42", params={"q": "hi"}).json() == {"item_id": 42, "q": "hi"}
        r = c.post("/items", json={"name": "hammer", "price": 9.5, "quantity": 2})
        assert r.json() == {"item": {"name": "hammer", "price": 9.5, "quantity": 2}, "total": 19.0}
        assert c.get("/stats").json()["uptime_seconds"] >= 0
