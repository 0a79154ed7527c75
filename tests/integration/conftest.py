"""Fixtures that run the server under test as a real subprocess.

Environment:
  PRONGHORN_TEST_SERVER=pronghorn|uvicorn   server under test (default pronghorn)
  PRONGHORN_TEST_SERVER_ARGS="--loop asyncio"   options added to every server command

The server is the installed ``pronghorn`` command (next to sys.executable), or
uvicorn (``python -m uvicorn``) when PRONGHORN_TEST_SERVER=uvicorn, so the suite
can be validated against the reference implementation.  Tests that exercise
pronghorn-only behaviour are marked ``@pytest.mark.pronghorn_only``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent  # apps are importable as "apps.xxx" from here
SERVER_KIND = os.environ.get("PRONGHORN_TEST_SERVER", "pronghorn").strip().lower()
assert SERVER_KIND in ("pronghorn", "uvicorn"), f"PRONGHORN_TEST_SERVER={SERVER_KIND!r}"
IS_UVICORN = SERVER_KIND == "uvicorn"
# The extension built with AddressSanitizer (scripts/test.sh preloads its runtime): memory
# figures are not meaningful, and client programs must not inherit the preload.
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")


def client_env() -> dict:
    """The environment for client programs (curl, openssl): without the ASan preload, which
    makes curl hang."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env
STARTUP_TIMEOUT = 20.0

# Known, intended differences from the uvicorn version in the dev venv (0.54):
# - uvicorn re-raises a captured SIGTERM after a clean shutdown, so its exit status is -15;
#   pronghorn exits 0 after a graceful shutdown on SIGINT and SIGTERM alike.
# - uvicorn exits 3 when the module or attribute named by APP cannot be found (it exits 1
#   only when the module itself raises while importing); pronghorn exits 1 for all of them.
def expected_signal_exit(sig: int) -> int:
    import signal as _signal
    if IS_UVICORN and sig == _signal.SIGTERM:
        return -_signal.SIGTERM
    return 0


APP_NOT_FOUND_EXIT = 3 if IS_UVICORN else 1
STOP_TIMEOUT = 15.0

RUNNING_RE = re.compile(r"(?:Pronghorn|Uvicorn) running on (?:unix socket |socket )?(\S+)")
HTTP_URL_RE = re.compile(r"https?://(\[[^\]]+\]|[^:/]+):(\d+)")


# The modules that exercise what differs between CPython versions: the
# bridge's use of the C API (scopes, request tasks and awaitables, the send
# thread beside the GIL), asyncio, app discovery, the CLI's Python side and
# third-party apps. scripts/test.sh runs these (marked every_python) on every
# CPython the machine has, and the rest on the main one only: the engine's
# protocols, the supervisor and the deployment recipes behave the same
# whatever the interpreter, and running them three times cost CI 20 minutes.
EVERY_PYTHON_MODULES = frozenset({
    "test_access_log_format", "test_app_errors", "test_app_task", "test_differential", "test_discovery",
    "test_dropin", "test_fastapi", "test_flow_control", "test_http", "test_lifecycle", "test_scope",
    "test_send_thread", "test_third_party", "test_websocket",
})


def pytest_configure(config):
    config.addinivalue_line("markers", "pronghorn_only: behaviour uvicorn does not have; skipped under uvicorn")
    config.addinivalue_line("markers", "slow: long-running test (still part of the default run)")
    config.addinivalue_line("markers", "every_python: run on every CPython the machine has "
                                       "(conftest.EVERY_PYTHON_MODULES; added at collection)")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by the markers added here
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in EVERY_PYTHON_MODULES:
            item.add_marker(pytest.mark.every_python)
    if not IS_UVICORN:
        return
    skip = pytest.mark.skip(reason="pronghorn-only behaviour (PRONGHORN_TEST_SERVER=uvicorn)")
    for item in items:
        if "pronghorn_only" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"server under test: {SERVER_KIND} ({' '.join(server_command())})"


def pronghorn_executable() -> Path:
    return Path(sys.executable).parent / "pronghorn"


def server_command(kind: str = SERVER_KIND) -> list[str]:
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn"]
    exe = pronghorn_executable()
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "pronghorn"]


def pronghorn_available() -> bool:
    if pronghorn_executable().exists():
        return True
    r = subprocess.run([sys.executable, "-c", "import pronghorn.cli"], capture_output=True, timeout=30)
    return r.returncode == 0


class ServerProcess:
    """One server subprocess. stdout/stderr go to files under ``log_dir``."""

    def __init__(self, app: str, args=(), *, log_dir: Path, kind: str = SERVER_KIND, cwd: Path = HERE,
                 env=None, port: int | None = 0, host: str | None = None, pass_fds=(), name: str = "server"):
        self.app = app
        self.kind = kind
        self.cwd = Path(cwd)
        self.args = list(args)
        self.log_dir = Path(log_dir)
        self.stdout_path = self.log_dir / f"{name}.stdout.log"
        self.stderr_path = self.log_dir / f"{name}.stderr.log"
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        # Keep the child's output machine-readable.
        self.env.pop("FORCE_COLOR", None)
        self.env["NO_COLOR"] = "1"
        self.env.update(env or {})
        self.pass_fds = tuple(pass_fds)
        self.proc: subprocess.Popen | None = None
        self.host = host
        self.port: int | None = None
        self.bound: str | None = None  # what the "running on" line said
        self.returncode: int | None = None
        cmd = server_command(kind) + [app]
        if port is not None and not any(a in ("--uds", "--fd") for a in self.args):
            cmd += ["--port", str(port)]
        if host is not None:
            cmd += ["--host", host]
        # Extra options for every server, e.g. PRONGHORN_TEST_SERVER_ARGS="--loop asyncio" to run the
        # whole suite on another event loop. A test's own options come later and so win.
        # Only the server under test gets them (not the uvicorn reference in test_differential).
        extra = shlex.split(os.environ.get("PRONGHORN_TEST_SERVER_ARGS", "")) if kind == SERVER_KIND else []
        self.cmd = cmd + extra + self.args

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, wait: bool = True) -> "ServerProcess":
        if self.kind == "pronghorn" and not pronghorn_available():
            pytest.fail(f"pronghorn is not installed ({pronghorn_executable()} missing and "
                        f"'import pronghorn.cli' fails); set PRONGHORN_TEST_SERVER=uvicorn to test uvicorn")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err, pass_fds=self.pass_fds)
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = RUNNING_RE.search(self.stderr)
            if m:
                self.bound = m.group(1)
                u = HTTP_URL_RE.match(self.bound)
                if u:
                    self.host = u.group(1).strip("[]")
                    self.port = int(u.group(2))
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode} before it was ready\n"
                                     f"cmd: {self.cmd}\n--- stderr ---\n{self.stderr}\n--- stdout ---\n{self.stdout}")
            time.sleep(0.02)
        raise AssertionError(f"server did not log 'running on' within {timeout}s\ncmd: {self.cmd}\n"
                             f"--- stderr ---\n{self.stderr}")

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not exit within {timeout}s\n--- stderr ---\n{self.stderr}")
        self._close_files()
        return self.returncode

    def send_signal(self, sig: int = signal.SIGINT) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._close_files()

    def _close_files(self) -> None:
        for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
            if f and not f.closed:
                f.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- output ------------------------------------------------------------------------
    @property
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    @property
    def stdout(self) -> str:
        try:
            return self.stdout_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0, stream: str = "stderr") -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(getattr(self, stream))
            if m:
                return m
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not seen in {stream} within {timeout}s\n--- {stream} ---\n"
                             f"{getattr(self, stream)}")

    # -- helpers -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.host or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host or "127.0.0.1", self.port)

    def connect(self, timeout: float = 5.0) -> socket.socket:
        family = socket.AF_INET6 if self.host and ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.addr)
        return s

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture
def server_factory(tmp_path):
    """start(app, args...) -> ServerProcess; all are stopped with SIGINT at teardown and must exit 0."""
    servers: list[ServerProcess] = []

    def start(app: str = "apps.raw_app:app", *args, wait: bool = True, **kw) -> ServerProcess:
        kw.setdefault("log_dir", tmp_path)
        kw.setdefault("name", f"server{len(servers)}")
        srv = ServerProcess(app, args, **kw)
        servers.append(srv)
        return srv.start(wait=wait)

    yield start
    errors = []
    for srv in servers:
        if srv.proc is None:
            continue
        if srv.returncode is not None or srv.proc.poll() is not None:
            srv._close_files()
            continue
        try:
            rc = srv.stop(signal.SIGINT)
            if rc != 0:
                errors.append(f"{srv.cmd}: exit code {rc} after SIGINT\n{srv.stderr}")
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


def _session_server(tmp_path_factory, app: str, name: str, *args, env=None):
    log_dir = tmp_path_factory.mktemp(name)
    srv = ServerProcess(app, args, log_dir=log_dir, name=name, env=env)
    srv.start()
    return srv


@pytest.fixture(scope="session")
def raw_server(tmp_path_factory):
    """A shared server running the raw ASGI app with default options."""
    srv = _session_server(tmp_path_factory, "apps.raw_app:app", "raw")
    yield srv
    rc = srv.stop()
    assert rc == 0, srv.stderr


@pytest.fixture(scope="session")
def fastapi_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fastapi-work")


@pytest.fixture(scope="session")
def fastapi_server(tmp_path_factory, fastapi_workdir):
    srv = _session_server(tmp_path_factory, "apps.fastapi_app:app", "fastapi",
                          env={"PRONGHORN_TEST_WORKDIR": str(fastapi_workdir)})
    yield srv
    rc = srv.stop()
    assert rc == 0, srv.stderr


# -- raw socket helpers ------------------------------------------------------------------

def alive(pid: int) -> bool:
    """Whether pid is a live process (not a zombie), from /proc. The process may exit
    between the open and the read (ESRCH): that is "not alive" too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] not in ("Z", "X")


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until EOF (or connection reset). Fails if the peer keeps it open past timeout."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"connection not closed within {timeout}s; got {b''.join(chunks)[:500]!r}")
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError(f"connection not closed within {timeout}s; got {b''.join(chunks)[:500]!r}")
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def is_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the peer closes (EOF/reset) within timeout without sending more data."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return data == b""


class HTTPResponse:
    def __init__(self, status: int, reason: str, version: str, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body

    def header(self, name: str):
        name = name.lower()
        vals = [v for k, v in self.headers if k == name]
        return vals[-1] if vals else None

    def header_list(self, name: str):
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    def __repr__(self):
        return f"<HTTPResponse {self.status} {self.headers} body={self.body[:80]!r}>"


class ResponseReader:
    """Incremental HTTP/1.1 response parser over a blocking socket (for pipelining/keep-alive tests)."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0):
        self.sock = sock
        self.buf = b""
        self.timeout = timeout
        sock.settimeout(timeout)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(f"connection closed; buffered: {self.buf[:300]!r}")
        self.buf += data

    def _read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        version, status, *reason = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return version, int(status), (reason[0] if reason else ""), headers

    def read_response(self, method: str = "GET") -> HTTPResponse:
        version, status, reason, headers = self.read_head()
        while 100 <= status < 200 and status != 101:
            version, status, reason, headers = self.read_head()
        resp = HTTPResponse(status, reason, version, headers, b"")
        if method == "HEAD" or status in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if te and "chunked" in te.lower():
            body = []
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    while self._read_line() != b"":
                        pass
                    break
                body.append(self._read_exact(size))
                assert self._read_exact(2) == b"\r\n"
            resp.body = b"".join(body)
        elif cl is not None:
            resp.body = self._read_exact(int(cl))
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            resp.body, self.buf = self.buf, b""
        return resp


def raw_request(srv: ServerProcess, data: bytes, timeout: float = 5.0, method: str = "GET") -> HTTPResponse:
    with srv.connect(timeout) as s:
        s.sendall(data)
        return ResponseReader(s, timeout).read_response(method)
