"""Real third-party apps from PyPI (Django + whitenoise, sse-starlette, Litestar, Quart) served by
uvicorn (the reference) and by the server under test side by side, and compared.

Apps live in third_party/ (see each module's docstring). The "reference" server is always
uvicorn; the "candidate" is the server under test (pronghorn, or uvicorn again under
PRONGHORN_TEST_SERVER=uvicorn, which checks that the tests themselves hold against uvicorn).
Tests of behaviour (SSE timings, disconnects, shutdown) run once per server, ids
``[reference]`` and ``[candidate]``; differential tests compare the two answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import HERE, SERVER_KIND, ServerProcess, expected_signal_exit

KINDS = {"reference": "uvicorn", "candidate": SERVER_KIND}
ROLES = list(KINDS)
EXCLUDED_HEADERS = {"date", "server"}


def _start_pair(app: str, log_dir: Path, name: str, env_for=lambda role: {}) -> dict[str, ServerProcess]:
    """Start the reference and the candidate together (they import their app in parallel)."""
    servers = {}
    try:
        for role, kind in KINDS.items():
            srv = ServerProcess(app, log_dir=log_dir, kind=kind, name=f"{name}-{role}", env=env_for(role))
            servers[role] = srv.start(wait=False)
        for srv in servers.values():
            srv.wait_ready()
    except BaseException:
        for srv in servers.values():
            srv.kill()
        raise
    return servers


def _stop_pair(servers: dict[str, ServerProcess]) -> None:
    problems = []
    for role, srv in servers.items():
        if not srv.running:
            srv._close_files()
            continue
        try:
            rc = srv.stop(signal.SIGINT, timeout=10)
        except AssertionError as e:
            problems.append(f"{role} ({srv.kind}): {e}")
            continue
        if rc != 0:
            problems.append(f"{role} ({srv.kind}) exited {rc} after SIGINT\n{srv.stderr}")
    assert not problems, "\n".join(problems)


def _log_problems(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ERROR") or "Traceback" in line]


def _headers(r: httpx.Response, ignore=()) -> list[tuple[str, str]]:
    out = []
    for k, v in r.headers.multi_items():
        if k in EXCLUDED_HEADERS or k in ignore:
            continue
        if k == "allow":  # Quart builds it from a set: the order changes from one process to the next
            v = ", ".join(sorted(m.strip() for m in v.split(",")))
        out.append((k, v))
    return sorted(out)


def _compare(ref: httpx.Response, got: httpx.Response, what: str, ignore=(), body=True) -> None:
    assert got.status_code == ref.status_code, (
        f"{what}: status uvicorn={ref.status_code} {SERVER_KIND}={got.status_code}")
    rh, gh = _headers(ref, ignore), _headers(got, ignore)
    assert gh == rh, (f"{what}: headers differ\n  only uvicorn: {sorted(set(rh) - set(gh))}\n"
                      f"  only {SERVER_KIND}: {sorted(set(gh) - set(rh))}")
    if body:
        assert got.content == ref.content, (
            f"{what}: body differs\n  uvicorn: {ref.content[:300]!r}\n  {SERVER_KIND}: {got.content[:300]!r}")


# ==========================================================================================
# Django: admin login (CSRF), changelist, add form, whitenoise static files
# ==========================================================================================

DJANGO_APP = "third_party.django_project.asgi:application"
DJANGO_USER, DJANGO_PASSWORD, DJANGO_PRODUCT = "admin", "admin-pass", "Pronghorn antelope"
CSRF_INPUT_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module")
def django_servers(tmp_path_factory):
    work = tmp_path_factory.mktemp("django")
    static = work / "static"
    env = {"DJANGO_SETTINGS_MODULE": "third_party.django_project.settings", "PYTHONDONTWRITEBYTECODE": "1",
           "PRONGHORN_TEST_DJANGO_DB": str(work / "prepared.sqlite3"), "PRONGHORN_TEST_DJANGO_STATIC": str(static)}
    # migrate + collectstatic + superuser + one Product, once; each server gets its own copy of the
    # database (the add form changes it) and both serve the same STATIC_ROOT (same mtimes, so the
    # same Last-Modified and ETag from whitenoise).
    r = subprocess.run([sys.executable, "-m", "third_party.django_project.setup_db"], cwd=HERE,
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"Django setup failed:\n{r.stdout}\n{r.stderr}"
    for role in ROLES:
        shutil.copy(work / "prepared.sqlite3", work / f"{role}.sqlite3")
    servers = _start_pair(DJANGO_APP, work, "django",
                          lambda role: {**env, "PRONGHORN_TEST_DJANGO_DB": str(work / f"{role}.sqlite3")})
    servers["static_root"] = static
    yield servers
    servers.pop("static_root")
    _stop_pair(servers)


def _norm_html(text: str) -> str:
    """An admin page without its per-request CSRF token."""
    return CSRF_INPUT_RE.sub('name="csrfmiddlewaretoken" value="TOKEN"', text)


def _norm_page_headers(r: httpx.Response) -> list[tuple[str, str]]:
    """Headers without date/server/expires (clock) and with cookie values (random) blanked."""
    out = []
    for k, v in r.headers.multi_items():
        if k in EXCLUDED_HEADERS or k == "expires":
            continue
        if k == "set-cookie":
            name, _, rest = v.partition("=")
            attrs = [a.strip() for a in rest.split(";")[1:] if not a.strip().lower().startswith("expires=")]
            v = "; ".join([f"{name}=*"] + attrs)
        out.append((k, v))
    return sorted(out)


def _compare_pages(responses: dict[str, httpx.Response], what: str) -> None:
    ref, got = responses["reference"], responses["candidate"]
    assert got.status_code == ref.status_code, f"{what}: status uvicorn={ref.status_code} {SERVER_KIND}={got.status_code}"
    assert _norm_page_headers(got) == _norm_page_headers(ref), (
        f"{what}: headers differ\n  uvicorn: {_norm_page_headers(ref)}\n  {SERVER_KIND}: {_norm_page_headers(got)}")
    assert _norm_html(got.text) == _norm_html(ref.text), f"{what}: page differs (CSRF tokens aside)"


@pytest.fixture
def django_clients(django_servers):
    clients = {role: httpx.Client(base_url=django_servers[role].url, timeout=10) for role in ROLES}
    yield clients
    for c in clients.values():
        c.close()


def _login(client: httpx.Client) -> httpx.Response:
    page = client.get("/admin/login/", params={"next": "/admin/"})
    token = CSRF_INPUT_RE.search(page.text).group(1)
    return client.post("/admin/login/", params={"next": "/admin/"},
                       data={"csrfmiddlewaretoken": token, "username": DJANGO_USER,
                             "password": DJANGO_PASSWORD, "next": "/admin/"})


def test_django_login_page(django_clients):
    responses = {role: c.get("/admin/login/") for role, c in django_clients.items()}
    for role, r in responses.items():
        assert r.status_code == 200, (role, r.status_code)
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert "csrftoken" in r.cookies, (role, r.headers.get_list("set-cookie"))
        assert CSRF_INPUT_RE.search(r.text), role
        assert "<title>Log in | Django site admin</title>" in r.text
    _compare_pages(responses, "GET /admin/login/")


def test_django_admin_login_changelist_add(django_clients):
    steps: dict[str, dict[str, httpx.Response]] = {}
    for role, c in django_clients.items():
        steps.setdefault("login", {})[role] = _login(c)
    for role, r in steps["login"].items():
        assert r.status_code == 302, (role, r.status_code, r.text[:500])
        assert r.headers["location"] == "/admin/", role
        assert "sessionid" in django_clients[role].cookies, role
    # The session and the rotated CSRF cookie are set on both, with the same attributes.
    assert _norm_page_headers(steps["login"]["candidate"]) == _norm_page_headers(steps["login"]["reference"])

    for role, c in django_clients.items():
        steps.setdefault("index", {})[role] = c.get("/admin/")
        steps.setdefault("changelist", {})[role] = c.get("/admin/shop/product/")
        steps.setdefault("add-form", {})[role] = c.get("/admin/shop/product/add/")
    for role in ROLES:
        assert steps["index"][role].status_code == 200
        assert "Site administration" in steps["index"][role].text
        page = steps["changelist"][role]
        assert page.status_code == 200, (role, page.status_code)
        assert DJANGO_PRODUCT in page.text and "12.50" in page.text, role
        assert steps["add-form"][role].status_code == 200
    _compare_pages(steps["index"], "GET /admin/")
    _compare_pages(steps["changelist"], "GET /admin/shop/product/")
    _compare_pages(steps["add-form"], "GET /admin/shop/product/add/")

    new_name = "Added through the admin"
    for role, c in django_clients.items():
        token = CSRF_INPUT_RE.search(steps["add-form"][role].text).group(1)
        steps.setdefault("add", {})[role] = c.post("/admin/shop/product/add/", data={
            "csrfmiddlewaretoken": token, "name": new_name, "price": "3.25", "_save": "Save"})
    for role, r in steps["add"].items():
        assert r.status_code == 302, (role, r.status_code, r.text[:1000])
        assert r.headers["location"] == "/admin/shop/product/", role
    _compare_pages(steps["add"], "POST /admin/shop/product/add/")

    for role, c in django_clients.items():
        steps.setdefault("changelist-after", {})[role] = c.get("/admin/shop/product/")
    for role, r in steps["changelist-after"].items():
        assert r.status_code == 200
        assert new_name in r.text and DJANGO_PRODUCT in r.text, role
        assert "was added successfully" in r.text, role  # the messages framework's cookie round trip
    _compare_pages(steps["changelist-after"], "GET /admin/shop/product/ after the add")

    # Without the CSRF token: 403 from CsrfViewMiddleware, on both.
    for role, c in django_clients.items():
        steps.setdefault("no-csrf", {})[role] = c.post("/admin/shop/product/add/", data={"name": "x", "price": "1"})
    for role, r in steps["no-csrf"].items():
        assert r.status_code == 403, (role, r.status_code)
    _compare_pages(steps["no-csrf"], "POST without CSRF token")


def _manifest(static_root: Path) -> dict[str, str]:
    return json.loads((static_root / "staticfiles.json").read_text())["paths"]


@pytest.mark.parametrize("name,encoding", [
    ("shop/site.css", None),         # small: no .gz copy
    ("shop/pronghorn.svg", "gzip"),  # has a .gz copy, served as Content-Encoding: gzip
    ("admin/css/base.css", "gzip"),
    ("admin/js/core.js", None),
])
@pytest.mark.parametrize("hashed", [True, False], ids=["hashed", "plain"])
def test_django_whitenoise_static(django_servers, django_clients, name, encoding, hashed):
    served = _manifest(django_servers["static_root"])[name] if hashed else name
    path = "/static/" + served
    headers = {"accept-encoding": encoding or "identity"}
    responses = {role: c.get(path, headers=headers) for role, c in django_clients.items()}
    expected = (django_servers["static_root"] / served).read_bytes()
    for role, r in responses.items():
        assert r.status_code == 200, (role, path, r.status_code)
        assert r.content == expected, (role, path)  # httpx decodes gzip
        assert r.headers.get("content-encoding") == encoding, (role, dict(r.headers))
        # Hashed names are cached forever; plain names for WHITENOISE_MAX_AGE (60 s when not DEBUG).
        assert r.headers["cache-control"] == ("max-age=315360000, public, immutable" if hashed
                                              else "max-age=60, public"), role
    # content-type, cache-control, etag, last-modified, vary, content-length: all the same.
    _compare(responses["reference"], responses["candidate"], f"GET {path}")
    # A conditional request gets 304 from whitenoise on both.
    etag = responses["reference"].headers["etag"]
    conditional = {role: c.get(path, headers={**headers, "if-none-match": etag})
                   for role, c in django_clients.items()}
    assert conditional["reference"].status_code == 304
    _compare(conditional["reference"], conditional["candidate"], f"GET {path} If-None-Match")


def test_django_misc(django_clients):
    cases = [("GET", "/ping/", {}), ("POST", "/ping/", {}), ("HEAD", "/ping/", {}),
             ("GET", "/no/such/page/", {}), ("GET", "/admin", {}), ("GET", "/admin/shop/product/", {}),
             ("GET", "/static/no-such-file.css", {}),
             ("GET", "/ping/", {"headers": {"host": "evil.example"}})]
    for method, path, kw in cases:
        responses = {role: c.request(method, path, **kw) for role, c in django_clients.items()}
        _compare_pages(responses, f"{method} {path} {kw}")
    assert responses["reference"].status_code == 400  # DisallowedHost


def test_django_logs(django_servers, django_clients):
    for role in ROLES:
        django_clients[role].get("/ping/")
        django_clients[role].get("/ping/", headers={"host": "evil.example"})
    logs = {}
    for role in ROLES:
        srv = django_servers[role]
        srv.wait_for_log(r'"GET /ping/ HTTP/1.1" 400', timeout=5, stream="stdout")  # the access log
        # Django's ASGIHandler refuses lifespan: both say so at INFO level and go on.
        assert "INFO:     ASGI 'lifespan' protocol appears unsupported." in srv.stderr, (role, srv.stderr)
        # The server itself logs no error; Django logs DisallowedHost with its traceback (django.security).
        assert not [line for line in srv.stderr.splitlines() if line.startswith("ERROR")], (role, srv.stderr)
        assert "DisallowedHost: Invalid HTTP_HOST header: 'evil.example'" in srv.stderr, (role, srv.stderr)
        logs[role] = srv.stderr
    assert logs["candidate"].count("Traceback") == logs["reference"].count("Traceback"), logs


# ==========================================================================================
# sse-starlette
# ==========================================================================================

SSE_APP = "third_party.sse_app:app"


@pytest.fixture(scope="module")
def sse_servers(tmp_path_factory):
    work = tmp_path_factory.mktemp("sse")
    servers = _start_pair(SSE_APP, work, "sse", lambda role: {"PRONGHORN_TEST_SSE_LOG": str(work / f"{role}.events")})
    for role in ROLES:
        servers[role].events_path = work / f"{role}.events"
    yield servers
    _stop_pair(servers)


def _sse_events(lines) -> "iter[dict]":
    """Parse SSE lines into events ({field: value}), yielding each at its blank line."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            k, _, v = line.partition(":")
            event[k] = v[1:] if v.startswith(" ") else v


def _wait_event_line(path: Path, route: str, ident: str, what: str, timeout: float) -> float | None:
    """The monotonic time recorded by the app for ROUTE ID WHAT, or None if not within timeout."""
    rx = re.compile(rf"^{route} {ident} {what} (\d+\.\d+)", re.M)
    deadline = time.monotonic() + timeout
    while True:
        try:
            m = rx.search(path.read_text())
        except FileNotFoundError:
            m = None
        if m:
            return float(m.group(1))
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def test_sse_finite_stream_same(sse_servers):
    responses = {}
    for role in ROLES:
        with httpx.Client(base_url=sse_servers[role].url, timeout=5) as c:
            responses[role] = c.get("/finite", params={"n": 5})
    r = responses["reference"]
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert list(_sse_events(r.text.replace("\r\n", "\n").split("\n"))) == [
        {"id": str(i), "event": "n", "data": f"event {i}"} for i in range(5)]
    _compare(responses["reference"], responses["candidate"], "GET /finite?n=5")


@pytest.mark.parametrize("role", ROLES)
def test_sse_endless_stream_delivers_events(sse_servers, role):
    srv = sse_servers[role]
    ident = uuid.uuid4().hex[:12]
    got = []
    t0 = time.monotonic()
    with httpx.Client(base_url=srv.url, timeout=httpx.Timeout(5, read=2)) as c:
        with c.stream("GET", "/endless", params={"id": ident}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["x-accel-buffering"] == "no"
            assert "content-length" not in r.headers
            for event in _sse_events(r.iter_lines()):
                got.append((time.monotonic() - t0, event))
                if len(got) == 6:
                    break
    assert [e for _, e in got] == [{"event": "tick", "id": str(i), "data": f"tick {i}"} for i in range(6)]
    # One event every 0.2 s, each delivered as it is produced (not batched at the end).
    assert got[-1][0] - got[0][0] >= 0.8, got
    assert got[-1][0] < 4, got


def _disconnect_mid_stream(srv: ServerProcess, events_path: Path, route: str) -> None:
    """Read two ticks of /ROUTE, close the connection; the app's generator must be closed (its
    finally run) within 1 s, and the server must log no error about it."""
    ident = uuid.uuid4().hex[:12]
    log_offset = len(srv.stderr)
    with httpx.Client(base_url=srv.url, timeout=httpx.Timeout(5, read=2)) as c:
        with c.stream("GET", f"/{route}", params={"id": ident}) as r:
            assert r.status_code == 200
            n = 0
            for line in r.iter_lines():
                n += "tick" in line
                if n == 2:
                    break
        # Leaving the block closes the half-read response, hence the connection.
        t_closed = time.monotonic()
    assert _wait_event_line(events_path, route, ident, "start", 0) is not None
    closed_at = _wait_event_line(events_path, route, ident, "closed", 3.0)
    assert closed_at is not None, (f"{srv.kind}: the generator's finally did not run within 3 s of the client "
                                   f"disconnecting\n{events_path.read_text()[-2000:]}\n{srv.stderr[log_offset:]}")
    assert closed_at - t_closed < 1.0, f"{srv.kind}: generator closed {closed_at - t_closed:.2f} s after the disconnect"
    time.sleep(0.3)  # anything logged about that disconnect
    problems = _log_problems(srv.stderr[log_offset:])
    assert not problems, f"{srv.kind} logged on a client disconnect:\n{srv.stderr[log_offset:]}"


@pytest.mark.parametrize("route", ["endless", "plain"])
@pytest.mark.parametrize("role", ROLES)
def test_sse_client_disconnect_closes_generator(sse_servers, role, route):
    srv = sse_servers[role]
    _disconnect_mid_stream(srv, srv.events_path, route)


@pytest.mark.pronghorn_only
@pytest.mark.parametrize("route", ["endless", "plain"])
def test_sse_client_disconnect_asgi_spec_2_4(server_factory, tmp_path, route):
    """With --asgi-spec-version 2.4, send() after the client left raises OSError, and Starlette's
    StreamingResponse no longer waits for http.disconnect: the generator must still be closed at once
    and nothing logged at ERROR (as uvicorn does with its spec 2.3)."""
    events = tmp_path / "events"
    srv = server_factory(SSE_APP, "--asgi-spec-version", "2.4", env={"PRONGHORN_TEST_SSE_LOG": str(events)})
    _disconnect_mid_stream(srv, events, route)


@pytest.mark.parametrize("role", ROLES)
def test_sse_headers_before_first_event(sse_servers, role):
    """The first event comes after 3 s: the response head (sent by EventSourceResponse at once)
    must reach the client long before."""
    srv = sse_servers[role]
    ident = uuid.uuid4().hex[:12]
    with httpx.Client(base_url=srv.url, timeout=httpx.Timeout(5, read=2)) as c:
        t0 = time.monotonic()
        try:
            with c.stream("GET", "/delayed", params={"id": ident}) as r:
                t_head = time.monotonic() - t0
                assert r.status_code == 200
                assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
                assert t_head < 1.5, f"{srv.kind}: response head after {t_head:.2f} s"
                # The body's reads take the request's timeouts when they start: allow the 3 s wait.
                r.request.extensions["timeout"] = {**r.request.extensions["timeout"], "read": 5}
                first = next(_sse_events(r.iter_lines()))
                t_first = time.monotonic() - t0
        except httpx.ReadTimeout:
            pytest.fail(f"{srv.kind}: no response head within the 2 s read timeout (the first event comes at 3 s)")
    assert first == {"event": "late", "data": "late 0"}
    assert 2.5 < t_first < 4.5, t_first


@pytest.mark.parametrize("role", ROLES)
def test_sse_is_disconnected_pattern(sse_servers, role):
    """The generator polls request.is_disconnected() while EventSourceResponse itself waits in
    receive() for http.disconnect: two receive() calls at once, which uvicorn serves."""
    srv = sse_servers[role]
    ident = uuid.uuid4().hex[:12]
    log_offset = len(srv.stderr)
    events = []
    with httpx.Client(base_url=srv.url, timeout=httpx.Timeout(5, read=2)) as c:
        try:
            with c.stream("GET", "/polling", params={"id": ident}) as r:
                assert r.status_code == 200
                for event in _sse_events(r.iter_lines()):
                    events.append(event)
                    if len(events) == 5:
                        break
        except httpx.HTTPError as e:  # the stream ended or stalled early
            events.append({"client error": repr(e)})
        t_closed = time.monotonic()
    assert events == [{"data": f"poll {i}"} for i in range(5)], (
        f"{srv.kind}: {events}\n{srv.stderr[log_offset:]}")
    closed_at = _wait_event_line(srv.events_path, "polling", ident, "closed", 3.0)
    assert closed_at is not None and closed_at - t_closed < 1.0, (
        f"{srv.kind}: generator not closed within 1 s\n{srv.events_path.read_text()[-1000:]}")
    time.sleep(0.2)
    problems = _log_problems(srv.stderr[log_offset:])
    assert not problems, f"{srv.kind} logged:\n{srv.stderr[log_offset:]}"


@pytest.mark.parametrize("role", ROLES)
def test_sse_graceful_stop_with_open_stream(tmp_path, role):
    """SIGINT with an endless stream open: sse-starlette ends its streams on shutdown under uvicorn
    (~1.5 s: it hooks uvicorn's exit handler and polls every 0.5 s); the server must be gone
    within 5 s."""
    kind = KINDS[role]
    srv = ServerProcess(SSE_APP, log_dir=tmp_path, kind=kind, name=f"sse-stop-{role}",
                        env={"PRONGHORN_TEST_SSE_LOG": str(tmp_path / "events")})
    srv.start()
    client_done = threading.Event()
    received = []
    first = threading.Event()

    def read_stream():
        try:
            with httpx.Client(base_url=srv.url, timeout=httpx.Timeout(5, read=10)) as c:
                with c.stream("GET", "/endless", params={"id": "stop"}) as r:
                    for event in _sse_events(r.iter_lines()):
                        received.append(event)
                        first.set()
        except httpx.HTTPError as e:
            received.append({"client error": repr(e)})
        finally:
            first.set()
            client_done.set()

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    try:
        assert first.wait(5) and received and "client error" not in received[0], received
        t0 = time.monotonic()
        srv.send_signal(signal.SIGINT)
        try:
            rc = srv.proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            rc = None
        elapsed = time.monotonic() - t0
    finally:
        srv.kill()
    reader.join(5)
    assert rc is not None, f"{kind} still running 8 s after SIGINT with an SSE stream open\n{srv.stderr}"
    print(f"{kind}: stopped {elapsed:.2f} s after SIGINT")
    assert elapsed < 5, f"{kind} took {elapsed:.2f} s to stop with an SSE stream open\n{srv.stderr}"
    assert rc == expected_signal_exit(signal.SIGINT), (rc, srv.stderr)
    assert client_done.wait(2), "the client's stream did not end"
    # (uvicorn logs "ERROR: ASGI callable returned without completing response." here: sse-starlette
    # cancels the stream without its final body message.)
    assert "Traceback" not in srv.stderr, srv.stderr
    # sse-starlette's shutdown watcher task is cancelled at exit, not destroyed pending (issue 14.6).
    assert "Task was destroyed but it is pending" not in srv.stderr, srv.stderr
    assert _wait_event_line(tmp_path / "events", "endless", "stop", "closed", 0) is not None


# ==========================================================================================
# Litestar and Quart: each route's answer, compared
# ==========================================================================================

LITESTAR_CASES = [
    ("GET", "/", {}),
    ("GET", "/items/1", {}),
    ("GET", "/items/99", {}),
    ("GET", "/items/abc", {}),
    ("GET", "/items", {"params": {"limit": 1}}),
    ("GET", "/items", {"params": {"tag": "a"}}),
    ("GET", "/items", {"params": {"limit": "x"}}),
    ("POST", "/items", {"json": {"name": "antler", "price": 2.5, "tags": ["x"]}}),
    ("POST", "/items", {"json": {"name": "antler"}}),
    ("POST", "/items", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("POST", "/orders", {"json": {"item_id": 2, "quantity": 3}}),
    ("POST", "/orders", {"json": {"item_id": "two"}}),
    ("PUT", "/items/5", {"json": {"name": "hoof", "price": 1}}),
    ("DELETE", "/items/5", {}),
    ("GET", "/files/a/b%20c/d.txt", {}),
    ("GET", "/text", {}),
    ("HEAD", "/text", {}),
    ("GET", "/redirect", {}),
    ("GET", "/stream", {}),
    ("GET", "/headers", {}),
    ("GET", "/boom", {}),
    ("GET", "/no/such/route", {}),
    ("PATCH", "/", {}),
    ("OPTIONS", "/items", {}),
]

QUART_CASES = [
    ("GET", "/", {}),
    ("GET", "/greet/pronghorn", {}),
    ("GET", "/greet/a%20b", {}),
    ("GET", "/items/1", {}),
    ("GET", "/items/2", {}),
    ("POST", "/form", {"data": {"a": "1", "b": ["x", "y"]}}),
    ("POST", "/form", {"files": {"f": ("f.txt", b"file body")}, "data": {"a": "2"}}),
    ("POST", "/json", {"json": {"n": 1, "list": [1, 2]}}),
    ("POST", "/json", {"content": b"{oops", "headers": {"content-type": "application/json"}}),
    ("GET", "/stream", {}),
    ("HEAD", "/", {}),
    ("GET", "/redirect", {}),
    ("GET", "/cookie", {}),
    ("GET", "/boom", {}),
    ("GET", "/nope", {}),
    ("DELETE", "/", {}),
]


def _case_id(case) -> str:
    method, path, kw = case
    extra = ",".join(sorted(kw.get("params", {}))) or ",".join(k for k in kw if k != "headers")
    return f"{method} {path}" + (f" {extra}" if extra else "")


@pytest.fixture(scope="module")
def litestar_servers(tmp_path_factory):
    servers = _start_pair("third_party.litestar_app:app", tmp_path_factory.mktemp("litestar"), "litestar")
    yield servers
    _stop_pair(servers)


@pytest.fixture(scope="module")
def quart_servers(tmp_path_factory):
    servers = _start_pair("third_party.quart_app:app", tmp_path_factory.mktemp("quart"), "quart")
    yield servers
    _stop_pair(servers)


def _same_answer(servers, case) -> dict[str, httpx.Response]:
    method, path, kw = case
    responses = {}
    for role in ROLES:
        with httpx.Client(base_url=servers[role].url, timeout=5) as c:
            responses[role] = c.request(method, path, **kw)
    _compare(responses["reference"], responses["candidate"], _case_id(case))
    return responses


@pytest.mark.parametrize("case", LITESTAR_CASES, ids=[_case_id(c) for c in LITESTAR_CASES])
def test_litestar_same_answer(litestar_servers, case):
    responses = _same_answer(litestar_servers, case)
    method, path, _ = case
    ref = responses["reference"]
    if (method, path) == ("GET", "/"):
        assert ref.status_code == 200 and ref.json() == {"hello": "litestar"}
    if (method, path) == ("POST", "/items") and ref.status_code == 201:
        assert ref.json() == {"id": 3, "name": "antler", "price": 2.5, "tags": ["x"]}
    if path == "/no/such/route":
        assert ref.status_code == 404


@pytest.mark.parametrize("case", QUART_CASES, ids=[_case_id(c) for c in QUART_CASES])
def test_quart_same_answer(quart_servers, case):
    responses = _same_answer(quart_servers, case)
    method, path, _ = case
    ref = responses["reference"]
    if (method, path) == ("GET", "/"):
        assert ref.json() == {"hello": "quart", "started": True}  # before_serving ran (lifespan)
    if path == "/stream":
        assert ref.text == "".join(f"part {i}\n" for i in range(5))
