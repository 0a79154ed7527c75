"""The `pronghorn` command line: every option of config.OPTIONS has an effect or is
refused, the PRONGHORN_* environment variables, one-line errors for bad
configuration, and pronghorn.run()/pronghorn.Config.

Real `pronghorn` processes on loopback; the app is tests/integration/cli_apps/app.py.
Other files test several options in depth (test_http, test_malformed, test_workers,
test_listeners, test_scope, test_lifecycle); here each option gets a light check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import HERE, ResponseReader, ServerProcess, raw_request, recv_until_closed, server_command

from pronghorn.config import OPTIONS

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(60)]

APP = "cli_apps.app:app"
ANSI = "\x1b["


from cli_apps.support import (assert_usage_error, clean_env, free_port, get_when_up, info, launch,  # noqa: F401
                              listening_socket, run_cli, wait_until)


# -- 1. refused options ---------------------------------------------------------------------

REFUSED = [o for o in OPTIONS if o.refused]


def _non_default_argv(option) -> list[str]:
    if option.kind == "flag":
        return [option.flag]
    if option.kind == "bool":
        return [option.flag] if not option.default else ["--no-" + option.flag[2:]]
    if option.kind == "int":
        return [option.flag, str((option.default or 0) + 1)]
    if option.kind == "float":
        return [option.flag, str((option.default or 0) + 1.5)]
    if option.kind == "choice":
        return [option.flag, next(c for c in option.choices if c != option.default)]
    return [option.flag, "/nonexistent/value-for-" + option.name]


def test_built_options_are_not_refused():
    # HTTP/2, TLS and WebSockets are built.
    assert "--http2" not in {o.flag for o in REFUSED}
    assert not any(o.flag.startswith(("--ssl-", "--ws")) for o in REFUSED)  # TLS and WebSockets are built


@pytest.mark.parametrize("option", REFUSED, ids=[o.flag for o in REFUSED])
def test_refused_option_exits_2(option):
    r = run_cli([APP, *_non_default_argv(option)])
    assert_usage_error(r, option.flag, option.refused)


@pytest.mark.parametrize("option", REFUSED, ids=[o.flag for o in REFUSED])
def test_refused_option_from_environment_exits_2(option):
    argv = _non_default_argv(option)
    value = "1" if option.kind in ("flag", "bool") else argv[-1]
    r = run_cli([APP], env={option.env: value})
    assert_usage_error(r, option.flag)


REFUSED_WITH_DEFAULT_VALUE = [o for o in REFUSED if o.kind not in ("flag", "bool") and o.default is not None]


@pytest.mark.parametrize("option", REFUSED_WITH_DEFAULT_VALUE, ids=[o.flag for o in REFUSED_WITH_DEFAULT_VALUE])
def test_refused_option_given_its_default_value_exits_2(option):
    # The out-of-range port makes the run end at once whether or not the option is refused.
    r = run_cli([APP, option.flag, str(option.default), "--port", "70000"])
    assert_usage_error(r, option.flag)


@pytest.mark.parametrize("option,value", [("--ws-max-size", "0"), ("--ws-max-queue", "0"),
                                          ("--ws-ping-interval", "-1"), ("--ws-per-message-deflate", "maybe")])
def test_bad_websocket_option_values_exit_2(option, value):
    # (Every --ws implementation name is served: test_websocket.py.)
    assert_usage_error(run_cli([APP, option, value]), option)


def test_interface_wsgi_refused():
    assert_usage_error(run_cli([APP, "--interface", "wsgi"]), "--interface")


# -- 1. built options -----------------------------------------------------------------------

def test_host_and_port(launch):
    port = free_port()
    srv = launch([APP, "--host", "127.0.0.1", "--port", port])
    assert srv.bound == f"http://127.0.0.1:{port}"
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"


def test_port_0_picks_a_free_port(launch):
    srv = launch([APP, "--port", "0"])
    assert srv.port and srv.port != 0 and srv.port != 8000
    assert httpx.get(srv.url + "/", timeout=5).text == "ok"


def test_uds(launch, tmp_path):
    path = tmp_path / "s.sock"
    srv = launch([APP, "--uds", path])
    assert srv.bound == str(path)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=5) as c:
        assert c.get("http://x/").text == "ok"


def test_fd(launch):
    sock = listening_socket()
    with sock:
        port = sock.getsockname()[1]
        launch([APP, "--fd", sock.fileno()], pass_fds=(sock.fileno(),))
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"


@pytest.mark.parametrize("loop,module", [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")])
def test_loop(launch, loop, module):
    if module == "uvloop":
        pytest.importorskip("uvloop")
    srv = launch([APP, "--port", "0", "--loop", loop])
    assert info(srv)["loop"].split(".")[0] == module


@pytest.mark.parametrize("http", ["auto", "h11", "httptools", "zttp"])
def test_http_values_accepted(launch, http):
    srv = launch([APP, "--port", "0", "--http", http])
    assert httpx.get(srv.url + "/", timeout=5).text == "ok"


def test_http2_with_any_http_value(launch):
    # uvicorn 0.54 takes --http2 only with --http zttp; Pronghorn with any value.
    srv = launch([APP, "--port", "0", "--http", "h11", "--http2"])
    with httpx.Client(http1=False, http2=True, timeout=5) as client:
        response = client.get(srv.url + "/")
    assert (response.http_version, response.text) == ("HTTP/2", "ok")


@pytest.mark.parametrize("ws", ["auto", "none"])
def test_ws_auto_none_accepted(launch, ws):
    srv = launch([APP, "--port", "0", "--ws", ws])
    assert httpx.get(srv.url + "/", timeout=5).text == "ok"


@pytest.mark.parametrize("lifespan,started", [("on", True), ("auto", True), ("off", False)])
def test_lifespan(launch, lifespan, started):
    srv = launch([APP, "--port", "0", "--lifespan", lifespan])
    assert info(srv)["lifespan_started"] is started
    assert ("Application startup complete." in srv.stderr) is started


@pytest.mark.parametrize("args", [["--interface", "asgi2"], []], ids=["explicit", "auto-detected"])
def test_interface_asgi2(launch, args):
    srv = launch(["cli_apps.asgi2:App", "--port", "0", *args])
    r = httpx.get(srv.url + "/hello", timeout=5)
    assert r.status_code == 200 and r.text == "asgi2:/hello"


def test_interface_asgi3_forced_on_asgi2_app_fails_requests(launch):
    # Forcing the wrong interface must have an effect: the class is called as (scope, receive, send).
    srv = launch(["cli_apps.asgi2:App", "--port", "0", "--interface", "asgi3", "--lifespan", "off"])
    assert httpx.get(srv.url + "/hello", timeout=5).status_code == 500


def test_env_file(launch, tmp_path):
    env_file = tmp_path / "test.env"
    env_file.write_text("# comment\nPRONGHORN_TEST_DOTENV=from-dotenv\n")
    srv = launch([APP, "--port", "0", "--env-file", env_file])
    assert info(srv)["dotenv"] == "from-dotenv"


def test_env_file_reaches_workers(launch, tmp_path):
    env_file = tmp_path / "test.env"
    env_file.write_text('PRONGHORN_TEST_DOTENV="quoted value"\n')
    srv = launch([APP, "--port", "0", "--env-file", env_file, "--workers", "2"])
    assert info(srv)["dotenv"] == "quoted value"


# --log-config: pronghorn.access -> access.log ("ACC|..."), pronghorn.error -> error.log ("ERR|...").

def _log_dict(tmp_path: Path) -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "acc": {"format": "ACC|%(levelname)s|%(message)s"},
            "err": {"format": "ERR|%(levelname)s|%(message)s"},
        },
        "handlers": {
            "acc": {"class": "logging.FileHandler", "filename": str(tmp_path / "access.log"), "formatter": "acc"},
            "err": {"class": "logging.FileHandler", "filename": str(tmp_path / "error.log"), "formatter": "err"},
        },
        "loggers": {
            "pronghorn.access": {"handlers": ["acc"], "level": "INFO", "propagate": False},
            "pronghorn.error": {"handlers": ["err"], "level": "INFO", "propagate": False},
        },
    }


def _write_log_config(tmp_path: Path, ext: str) -> Path:
    path = tmp_path / f"logging.{ext}"
    if ext == "json":
        path.write_text(json.dumps(_log_dict(tmp_path)))
    elif ext == "yaml":
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(_log_dict(tmp_path)))
    else:
        path.write_text(f"""\
[loggers]
keys=root,access,error

[handlers]
keys=acc,err

[formatters]
keys=acc,err

[logger_root]
level=WARNING
handlers=

[logger_access]
level=INFO
handlers=acc
propagate=0
qualname=pronghorn.access

[logger_error]
level=INFO
handlers=err
propagate=0
qualname=pronghorn.error

[handler_acc]
class=FileHandler
formatter=acc
args=({str(tmp_path / 'access.log')!r},)

[handler_err]
class=FileHandler
formatter=err
args=({str(tmp_path / 'error.log')!r},)

[formatter_acc]
format=ACC|%(levelname)s|%(message)s

[formatter_err]
format=ERR|%(levelname)s|%(message)s
""")
    return path


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _start_with_log_config(launch, tmp_path, ext, *extra):
    config = _write_log_config(tmp_path, ext)
    sock = listening_socket()
    port = sock.getsockname()[1]
    srv = launch([APP, "--fd", sock.fileno(), "--log-config", config, *extra], pass_fds=(sock.fileno(),), wait=False)
    sock.close()  # the server has its own copy
    wait_until(lambda: "running on" in _read(tmp_path / "error.log"), 20, "'running on' in error.log", srv)
    return srv, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("ext", ["json", "yaml", "ini"])
def test_log_config_routes_error_logger_to_file(launch, tmp_path, ext):
    srv, url = _start_with_log_config(launch, tmp_path, ext, "--no-access-log")
    assert httpx.get(url + "/", timeout=5).text == "ok"
    assert srv.stop() == 0
    errors = _read(tmp_path / "error.log")
    for message in ("Started server process", "Waiting for application startup.", "Application startup complete.",
                    "Pronghorn running on socket", "Shutting down", "Finished server process"):
        assert f"ERR|INFO|{message}" in errors, errors
    # Routed away from the default stderr handler.
    assert "Started server process" not in srv.stderr, srv.stderr


@pytest.mark.parametrize("ext", ["json", "yaml", "ini"])
def test_log_config_routes_access_logger_to_file(launch, tmp_path, ext):
    srv, url = _start_with_log_config(launch, tmp_path, ext)
    try:
        r = httpx.get(url + "/some/path?q=1", timeout=5)
    except httpx.TransportError as exc:
        srv.proc.wait(5)
        pytest.fail(f"request failed ({exc}); server exit status {srv.proc.returncode} (-11 = SIGSEGV)")
    assert r.status_code == 200
    access_log = tmp_path / "access.log"
    line = wait_until(lambda: next((ln for ln in _read(access_log).splitlines() if "/some/path?q=1" in ln), None),
                      10, "the access line in access.log", srv)
    assert re.fullmatch(r'ACC\|INFO\|127\.0\.0\.1:\d+ - "GET /some/path\?q=1 HTTP/1\.1" 200( OK)?', line), line
    assert "/some/path" not in srv.stdout + srv.stderr


def test_log_level_warning_hides_info_and_access(launch):
    sock = listening_socket()
    with sock:
        port = sock.getsockname()[1]
        srv = launch([APP, "--fd", sock.fileno(), "--log-level", "warning"], pass_fds=(sock.fileno(),), wait=False)
        assert get_when_up(f"http://127.0.0.1:{port}/hidden").text == "ok"
        time.sleep(0.3)  # let an access line (if any) be written
    srv.stop()
    out = srv.stderr + srv.stdout
    assert "Started server process" not in out and "running on" not in out and "/hidden" not in out, out


@pytest.mark.parametrize("flag,logged", [("--access-log", True), ("--no-access-log", False)])
def test_access_log_switch(launch, flag, logged):
    srv = launch([APP, "--port", "0", flag])
    httpx.get(srv.url + "/access-probe", timeout=5)
    if logged:
        srv.wait_for_log(r'"GET /access-probe HTTP/1.1" 200', stream="stdout")
    else:
        time.sleep(0.3)
        srv.stop()
        assert "/access-probe" not in srv.stdout + srv.stderr


@pytest.mark.parametrize("flag,coloured", [("--use-colors", True), ("--no-use-colors", False), (None, False)])
def test_use_colors(launch, flag, coloured):
    srv = launch([APP, "--port", "0", *([flag] if flag else [])])
    httpx.get(srv.url + "/colour", timeout=5)
    srv.wait_for_log("/colour", stream="stdout")
    srv.stop()
    assert (ANSI in srv.stderr) is coloured, repr(srv.stderr[:300])
    assert (ANSI in srv.stdout) is coloured, repr(srv.stdout[:300])


@pytest.mark.parametrize("args,client", [
    ([], "203.0.113.7"),                                       # default: trust loopback
    (["--no-proxy-headers"], "127.0.0.1"),
    (["--forwarded-allow-ips", "192.0.2.1"], "127.0.0.1"),    # loopback not trusted
    (["--forwarded-allow-ips", "*"], "203.0.113.7"),
])
def test_proxy_headers_and_forwarded_allow_ips(launch, args, client):
    srv = launch([APP, "--port", "0", *args])
    data = info(srv, headers={"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"})
    assert data["client"][0] == client
    assert data["scheme"] == ("https" if client != "127.0.0.1" else "http")


@pytest.mark.parametrize("args,server,date", [
    ([], True, True),
    (["--no-server-header"], False, True),
    (["--no-date-header"], True, False),
    (["--server-header", "--date-header"], True, True),
])
def test_server_and_date_headers(launch, args, server, date):
    srv = launch([APP, "--port", "0", *args])
    r = httpx.get(srv.url + "/", timeout=5)
    assert ("server" in r.headers) is server
    assert ("date" in r.headers) is date


def test_root_path(launch):
    srv = launch([APP, "--port", "0", "--root-path", "/api/v1"])
    data = info(srv)
    # As uvicorn: scope["path"] is root_path + the request path.
    assert (data["root_path"], data["path"]) == ("/api/v1", "/api/v1/info")


def test_limit_concurrency(launch):
    srv = launch([APP, "--port", "0", "--limit-concurrency", "1"])
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
    try:
        # Connected and sent before any probe connects: the server accepts in
        # order, so this request is the one admitted and the probes are over
        # the limit while it sleeps.
        slow.sendall(b"GET /sleep?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: httpx.get(srv.url + "/", timeout=5).status_code == 503, 4, "a 503", srv, interval=0.05)
        assert ResponseReader(slow).read_response().status == 200
    finally:
        slow.close()
    # Served again once the slow request's connection is gone (the server may
    # see its close just after the next connection arrives).
    wait_until(lambda: httpx.get(srv.url + "/", timeout=5).status_code == 200, 5, "a 200 after the slow request", srv)


@pytest.mark.parametrize("args, backlog", [(["--backlog", "37"], 37), ([], 2048)])
def test_backlog_shown_by_ss(launch, args, backlog):
    if shutil.which("ss") is None:
        pytest.skip("ss not available")
    srv = launch([APP, "--port", "0", *args])
    out = subprocess.run(["ss", "-ltnH", f"sport = :{srv.port}"], capture_output=True, text=True, timeout=10).stdout
    rows = [ln.split() for ln in out.splitlines() if ln.strip()]
    assert rows, out
    # LISTEN  Recv-Q  Send-Q(=backlog, capped by net.core.somaxconn)  local  peer
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    assert rows[0][2] == str(min(backlog, somaxconn)), out


def test_every_uvicorn_option_is_known():
    """Drop-in: every option of the installed uvicorn's --help is one of ours
    (served, accepted, or refused with a message; docs/options.md says which)."""
    uv = subprocess.run([sys.executable, "-m", "uvicorn", "--help"], capture_output=True, text=True, timeout=30)
    assert uv.returncode == 0, uv.stderr
    names = set()
    for match in re.finditer(r"^\s+(--[a-z0-9-]+)(?:\s*/\s*(--[a-z0-9-]+))?", uv.stdout, re.M):
        names.update(n for n in match.groups() if n)
    assert len(names) > 40, uv.stdout  # the parse found uvicorn's options
    ours = subprocess.run([sys.executable, "-m", "pronghorn", "--help"], capture_output=True, text=True, timeout=30)
    assert ours.returncode == 0, ours.stderr
    known = set(re.findall(r"--[a-z0-9-]+", ours.stdout))
    assert sorted(names - known) == []


def test_limit_max_requests_recycles_worker(launch):
    srv = launch([APP, "--port", "0", "--limit-max-requests", "3", "--limit-max-requests-jitter", "1"])
    first = info(srv)["pid"]
    pids = set()

    def new_pid():
        try:
            pid = httpx.get(srv.url + "/info", timeout=5, headers={"connection": "close"}).json()["pid"]
        except httpx.TransportError:
            return None
        pids.add(pid)
        return pid != first

    wait_until(new_pid, 20, "a new worker after the request limit", srv, interval=0.1)
    assert "reached its request limit" in srv.stderr


def test_timeout_keep_alive(launch):
    srv = launch([APP, "--port", "0", "--timeout-keep-alive", "1"])
    with srv.connect(10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        t0 = time.monotonic()
        data = recv_until_closed(s, 8)
        elapsed = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 200")
    assert 0.5 < elapsed < 4, elapsed


def test_timeout_graceful_shutdown(launch):
    srv = launch([APP, "--port", "0", "--timeout-graceful-shutdown", "1"])
    t = threading.Thread(target=lambda: _ignore(lambda: httpx.get(srv.url + "/sleep?s=30", timeout=30)))
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    srv.stop(signal.SIGINT, timeout=15)
    assert time.monotonic() - t0 < 8
    t.join(15)
    assert "timeout graceful shutdown exceeded" in srv.stderr


def _ignore(fn):
    try:
        fn()
    except Exception:
        pass


def test_timeout_worker_healthcheck_accepted_and_validated(launch):
    srv = launch([APP, "--port", "0", "--workers", "2", "--timeout-worker-healthcheck", "5"])
    assert httpx.get(srv.url + "/", timeout=5).text == "ok"
    assert_usage_error(run_cli([APP, "--timeout-worker-healthcheck", "0"]), "--timeout-worker-healthcheck")


def test_header_option(launch):
    srv = launch([APP, "--port", "0", "--header", "X-One: 1", "--header", "x-two:two words"])
    r = httpx.get(srv.url + "/", timeout=5)
    assert r.headers["x-one"] == "1" and r.headers["x-two"] == "two words"


def test_header_option_malformed():
    assert_usage_error(run_cli([APP, "--header", "no-colon"]), "--header")


def test_app_dir(launch, tmp_path):
    appdir = tmp_path / "elsewhere"
    appdir.mkdir()
    (appdir / "far_app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'far'})\n")
    srv = launch(["far_app:app", "--port", "0", "--app-dir", appdir, "--lifespan", "off"], cwd=tmp_path)
    assert httpx.get(srv.url + "/", timeout=5).text == "far"
    assert_usage_error(run_cli(["far_app:app", "--app-dir", tmp_path / "missing"], cwd=tmp_path), "--app-dir")


def _pad_request(n: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * n + b"\r\n\r\n"


def test_h11_max_incomplete_event_size(launch):
    srv = launch([APP, "--port", "0", "--h11-max-incomplete-event-size", "10000"])
    assert raw_request(srv, _pad_request(9000)).status == 200
    assert raw_request(srv, _pad_request(12000)).status == 431


def test_h11_max_incomplete_event_size_small_value(launch):
    srv = launch([APP, "--port", "0", "--h11-max-incomplete-event-size", "2048"])
    assert raw_request(srv, _pad_request(1000)).status == 200
    assert raw_request(srv, _pad_request(4000)).status == 431


@pytest.mark.parametrize("flag", [True, False], ids=["reset", "default"])
def test_reset_contextvars(launch, flag):
    srv = launch([APP, "--port", "0", *(["--reset-contextvars"] if flag else [])])
    with httpx.Client(base_url=srv.url, timeout=5) as c:
        # A value set in one request never reaches the next one on the same connection...
        assert c.get("/ctx/set", params={"v": "first"}).text == "first"
        assert c.get("/ctx/get").text == "unset"
        # ...and the context the app was imported in is hidden only with the flag.
        assert c.get("/ctx/import").text == ("unset" if flag else "set-at-import")


def test_factory(launch):
    srv = launch(["cli_apps.app:factory", "--port", "0", "--factory"])
    assert httpx.get(srv.url + "/", timeout=5).text == "ok"


def test_version():
    from pronghorn import __version__
    r = run_cli(["--version"])
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(rf"Running pronghorn {re.escape(__version__)} with \w+ \d+\.\d+\.\d+ on Linux\n", r.stdout), r.stdout


def _worker_pids(srv: ServerProcess, want: int, timeout: float = 15) -> set[int]:
    pids: set[int] = set()

    def probe():
        r = httpx.get(srv.url + "/info", timeout=5, headers={"connection": "close"})
        pids.add(r.json()["pid"])
        return len(pids) >= want

    wait_until(probe, timeout, f"{want} distinct worker pids", srv, interval=0.01)
    return pids


def test_workers(launch):
    srv = launch([APP, "--port", "0", "--workers", "2"])
    pids = _worker_pids(srv, 2)
    assert srv.pid not in pids
    assert "Started parent process" in srv.stderr


def test_timeout_header_read(launch):
    srv = launch([APP, "--port", "0", "--timeout-header-read", "1"])
    with srv.connect(10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        data = recv_until_closed(s, 8)
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert time.monotonic() - t0 < 5


def test_limit_request_line_head_fields(launch):
    srv = launch([APP, "--port", "0", "--limit-request-line", "64", "--limit-request-head", "1024",
                  "--limit-request-fields", "5"])
    assert raw_request(srv, b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n").status == 414
    assert raw_request(srv, b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n").status == 431
    many = b"".join(b"X-%d: v\r\n" % i for i in range(10))
    assert raw_request(srv, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n").status == 431
    assert raw_request(srv, b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\n\r\n").status == 200


@pytest.mark.parametrize("preload", [True, False])
def test_preload(launch, tmp_path, preload):
    log = tmp_path / "imports.log"
    srv = launch([APP, "--port", "0", "--workers", "2", *(["--preload"] if preload else [])],
                 env={"CLI_IMPORT_LOG": str(log)})
    workers = _worker_pids(srv, 2)
    imported = {int(x) for x in log.read_text().split()}
    if preload:
        assert imported == {srv.pid}
    else:
        assert imported == workers and srv.pid not in imported


def test_limit_worker_memory(launch):
    srv = launch([APP, "--port", "0", "--limit-worker-memory", "1"])
    srv.wait_for_log(r"Worker \[\d+\] uses \d+ MiB \(limit 1 MiB\)", timeout=15)
    assert httpx.get(srv.url + "/", timeout=5).text == "ok"


def test_worker_lifetime(launch):
    srv = launch([APP, "--port", "0", "--worker-lifetime", "1"])
    first = info(srv)["pid"]
    srv.wait_for_log(r"reached its lifetime", timeout=15)
    wait_until(lambda: info(srv)["pid"] != first, 15, "a replacement worker", srv, interval=0.1)


@pytest.mark.parametrize("workers", [1, 2])
def test_pid_file(launch, tmp_path, workers):
    pid_file = tmp_path / "server.pid"
    srv = launch([APP, "--port", "0", "--pid-file", pid_file, "--workers", workers])
    assert pid_file.read_text().strip() == str(srv.pid)
    assert srv.stop() == 0
    assert not pid_file.exists()


# -- 2. environment variables ---------------------------------------------------------------

def test_env_port_and_app(launch):
    port = free_port()
    srv = launch([], env={"PRONGHORN_APP": APP, "PRONGHORN_PORT": str(port)})
    assert srv.port == port
    assert httpx.get(srv.url + "/", timeout=5).text == "ok"


def test_env_command_line_wins(launch):
    srv = launch([APP, "--port", "0"], env={"PRONGHORN_PORT": "1"})
    assert srv.port not in (0, 1)


def test_env_boolean_access_log_false(launch):
    srv = launch([APP, "--port", "0"], env={"PRONGHORN_ACCESS_LOG": "false"})
    httpx.get(srv.url + "/env-probe", timeout=5)
    time.sleep(0.3)
    srv.stop()
    assert "/env-probe" not in srv.stdout + srv.stderr


def test_env_list_header(launch):
    srv = launch([APP, "--port", "0"], env={"PRONGHORN_HEADER": "x-a: 1\nx-b: 2"})
    r = httpx.get(srv.url + "/", timeout=5)
    assert r.headers["x-a"] == "1" and r.headers["x-b"] == "2"


def test_env_uds(launch, tmp_path):
    path = tmp_path / "env.sock"
    launch([APP], env={"PRONGHORN_UDS": str(path)})
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), timeout=5) as c:
        assert c.get("http://x/").text == "ok"


def test_web_concurrency(launch):
    srv = launch([APP, "--port", "0"], env={"WEB_CONCURRENCY": "2"})
    assert len(_worker_pids(srv, 2)) == 2


@pytest.mark.parametrize("env,needle", [
    ({"PRONGHORN_PORT": "abc"}, "PRONGHORN_PORT"),
    ({"PRONGHORN_ACCESS_LOG": "maybe"}, "PRONGHORN_ACCESS_LOG"),
    ({"PRONGHORN_LOOP": "tokio"}, "PRONGHORN_LOOP"),
    ({"PRONGHORN_WORKERS": "0"}, "--workers"),
    ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY"),
])
def test_malformed_env_value(env, needle):
    assert_usage_error(run_cli([APP, "--port", "0"], env=env), needle)


# -- 3. bad configuration ------------------------------------------------------------------

@pytest.mark.parametrize("args,needles", [
    (["--prot", "8000"], ["--prot", "did you mean --port?"]),
    ([APP, "--wrokers", "2"], ["--wrokers", "did you mean --workers?"]),
    ([APP, "--port", "abc"], ["--port"]),
    ([APP, "--port", "70000"], ["--port", "70000"]),
    ([APP, "--port", "-1"], ["--port"]),
    ([APP, "--workers", "0"], ["--workers"]),
    ([APP, "--loop", "tokio"], ["--loop"]),
    ([APP, "--log-level", "loud"], ["--log-level"]),
    ([APP, "--uds", "/tmp/x.sock", "--fd", "3"], ["--uds", "--fd"]),
    ([APP, "--preload", "--reload"], ["--preload", "--reload"]),
    ([APP, "--env-file", "/nonexistent/.env"], ["--env-file", "/nonexistent/.env"]),
    ([APP, "--log-config", "/nonexistent/log.json"], ["--log-config", "/nonexistent/log.json"]),
    ([APP, "--limit-request-head", "100", "--limit-request-line", "200"], ["--limit-request-head"]),
    ([APP, "--reload-dir", "/nonexistent/dir"], ["--reload-dir"]),
    ([APP, APP], ["unexpected argument"]),
    ([], ["APP"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_configuration_one_line(args, needles):
    assert_usage_error(run_cli(args), *needles)


@pytest.mark.parametrize("ext,content", [
    ("json", "{not json"),
    ("json", '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}'),
    ("yaml", "version: [1\n"),
    ("ini", "[loggers]\nkeys=nothing\n"),
])
def test_log_config_invalid_content(tmp_path, ext, content):
    path = tmp_path / f"bad.{ext}"
    path.write_text(content)
    assert_usage_error(run_cli([APP, "--port", "0", "--log-config", path], timeout=20), "--log-config")


def test_log_config_unreadable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    path = tmp_path / "log.json"
    path.write_text("{}")
    path.chmod(0)
    assert_usage_error(run_cli([APP, "--log-config", path]), "--log-config", "permission denied")


# -- 4. pronghorn.run / pronghorn.Config ----------------------------------------------------

def test_pronghorn_run_with_two_workers(launch, tmp_path):
    script = tmp_path / "serve.py"
    script.write_text("import pronghorn\n"
                      f"pronghorn.run({APP!r}, host='127.0.0.1', port=0, workers=2, app_dir={str(HERE)!r})\n")
    srv = launch([str(script)], cmd=[sys.executable])
    pids = _worker_pids(srv, 2)
    assert srv.pid not in pids
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        assert int(stat[stat.rindex(")") + 2:].split()[1]) == srv.pid


def test_pronghorn_config_importable():
    r = subprocess.run([sys.executable, "-c",
                        "import pronghorn\n"
                        "c = pronghorn.Config('m:app', port=1234, workers=3)\n"
                        "assert (c.app, c.port, c.workers) == ('m:app', 1234, 3)\n"
                        "from pronghorn import Config\nassert Config is pronghorn.Config\nprint('ok')"],
                       capture_output=True, text=True, timeout=30, cwd=HERE)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.mark.parametrize("kwargs,needles", [
    ("prot=8000", ["prot", "did you mean port?"]),
    ("workers=0", ["--workers"]),
    ("port=70000", ["--port"]),
])
def test_pronghorn_run_bad_keyword_one_line(kwargs, needles):
    r = subprocess.run([sys.executable, "-c", f"import pronghorn; pronghorn.run({APP!r}, {kwargs})"],
                       capture_output=True, text=True, timeout=30, cwd=HERE, env=clean_env())
    assert_usage_error(r, *needles)


@pytest.mark.pronghorn_only  # uvicorn has no --access-log-format
def test_access_log_format_through_a_logging_configuration(launch, tmp_path):
    srv, url = _start_with_log_config(launch, tmp_path, "json", "--access-log-format", "%(m)s %(U)s %(s)s %(B)s")
    assert httpx.get(url + "/fmt?q=1", timeout=5).status_code == 200
    line = wait_until(lambda: next((ln for ln in _read(tmp_path / "access.log").splitlines() if "/fmt" in ln), None),
                      10, "the access line", srv)
    assert line == "ACC|INFO|GET /fmt 200 2", line
