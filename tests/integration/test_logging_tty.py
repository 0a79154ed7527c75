"""Colours only on a terminal: with stderr/stdout on a pty the level names and
the access line are coloured; on pipes or files (every other test) they are not."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import HERE

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(60)]

ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_colours_on_a_terminal_only():
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "pronghorn"), "apps.raw_app:app", "--port", "0"],
        cwd=HERE, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env,
    )
    os.close(slave)
    try:
        out = _read_until(master, b"Press CTRL+C to quit", 20)
        m = re.search(rb"http://127\.0\.0\.1:(\d+)", out)
        assert m, out
        # Level names are coloured: "\x1b[32mINFO\x1b[0m:     Started server process".
        assert re.search(rb"\x1b\[32mINFO\x1b\[0m:     Started server process", out), out
        httpx.get(f"http://127.0.0.1:{int(m.group(1))}/fixed", timeout=10)
        out += _read_until(master, b"GET /fixed", 10)
        access = [line for line in out.split(b"\n") if b"/fixed" in line]
        assert access and ANSI.search(access[0]), out
        # Without the escapes the line is uvicorn's.
        plain = ANSI.sub(b"", access[0]).strip()
        assert re.match(rb'INFO:     127\.0\.0\.1:\d+ - "GET /fixed HTTP/1\.1" 200 OK$', plain), plain
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        os.close(master)


def test_no_colours_on_pipes(server_factory):
    srv = server_factory("apps.raw_app:app", env={"NO_COLOR": ""})
    httpx.get(f"http://127.0.0.1:{srv.port}/fixed", timeout=10)
    srv.wait_for_log(r"GET /fixed", stream="stdout", timeout=10)
    assert not ANSI.search(srv.stderr.encode()), srv.stderr
    assert not ANSI.search(srv.stdout.encode()), srv.stdout
