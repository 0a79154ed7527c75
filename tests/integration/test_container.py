"""Pronghorn as a container's init (PID 1 of its own PID namespace): it reaps the orphaned
processes the app leaves behind, and SIGTERM stops it as outside a container.

The namespace is made with util-linux's `unshare --pid --fork` (needs root, as CI runs; the
test is skipped otherwise)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import HERE, IS_UVICORN, pronghorn_executable

pytestmark = pytest.mark.pronghorn_only  # uvicorn as PID 1 leaves the zombies


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2:].split()[0]
    except OSError:
        return "gone"


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(IS_UVICORN, reason="pronghorn only")
def test_pid_1_reaps_orphans_and_stops_on_sigterm(tmp_path):
    if not _can_unshare():
        pytest.skip("cannot create a PID namespace here (needs root)")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", str(pronghorn_executable()),
                             "apps.orphan_app:app", "--port", str(port), "--no-access-log"],
                            cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        # The server's PID 1, seen from here: the child of `unshare`.
        (init,) = _children(proc.pid)
        for _ in range(5):
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
        time.sleep(1.0)  # the orphaned sleeps have ended
        zombies = [p for p in _children(init) if _state(p) == "Z"]
        assert zombies == [], f"zombies left under PID 1: {zombies}"
        # SIGTERM to PID 1 (which ignores signals it has no handler for) stops it gracefully.
        os.kill(init, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert "Finished server process" in text, text
