"""Helpers shared by test_cli.py, test_discovery.py and test_reload.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import HERE, ServerProcess, server_command


def clean_env(extra: dict | None = None) -> dict:
    """The test's environment without PRONGHORN_*/WEB_CONCURRENCY (so the host cannot leak in)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PRONGHORN_") and k not in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    env.pop("FORCE_COLOR", None)
    env.update(extra or {})
    return env


def run_cli(args, *, env: dict | None = None, cwd: Path = HERE, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(server_command() + list(args), cwd=cwd, env=clean_env(env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def assert_usage_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, exactly one line on stderr, no traceback; returns the line."""
    assert r.returncode == 2, f"exit {r.returncode}\nstderr: {r.stderr}\nstdout: {r.stdout}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{r.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def listening_socket(family=socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, srv: ServerProcess | None = None, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n--- stderr ---\n{srv.stderr}" if srv is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


def get_when_up(url: str, timeout: float = 20.0, **kw) -> httpx.Response:
    """GET url, retrying while the server is not accepting yet (for runs whose logs are hidden)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5, **kw)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def info(srv: ServerProcess, **kw) -> dict:
    r = httpx.get(srv.url + "/info", timeout=5, **kw)
    assert r.status_code == 200, r
    return r.json()


@pytest.fixture
def launch(tmp_path):
    """launch(argv, env=..., cwd=..., wait=...) runs `pronghorn *argv` exactly (no --port added)."""
    procs: list[ServerProcess] = []

    def start(argv, *, env=None, cwd: Path = HERE, wait: bool = True, pass_fds=(), name=None,
              cmd=None) -> ServerProcess:
        srv = ServerProcess("", (), log_dir=tmp_path, cwd=cwd, port=None, pass_fds=pass_fds,
                            name=name or f"cli{len(procs)}")
        srv.env = clean_env(env)
        srv.env["PYTHONUNBUFFERED"] = "1"
        srv.cmd = (cmd or server_command()) + [str(a) for a in argv]
        procs.append(srv)
        return srv.start(wait=wait)

    yield start
    errors = []
    for srv in procs:
        if srv.proc is None or srv.proc.poll() is not None:
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
