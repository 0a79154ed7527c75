"""Auto-reload (--reload): the supervisor watches files with inotify and replaces
the workers after a change. Projects are created in tmp_path; edits are real writes."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest

from cli_apps.support import launch, wait_until  # noqa: F401
from conftest import alive

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(60)]

DETECTED = "Detected changes in"

APP = '''\
import os

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"{tag} {{os.getpid()}}".encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
'''


def app_source(tag: str) -> str:
    return APP.format(tag=tag)


def fetch(srv) -> tuple[str, int] | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{srv.port}/", timeout=3, headers={"connection": "close"})
    except httpx.TransportError:
        return None
    if r.status_code != 200:
        return None
    tag, pid = r.text.split()
    return tag, int(pid)


def serves(srv, tag: str, timeout: float = 15) -> int:
    """Waits until the app answers with `tag`; returns the worker pid."""
    result = wait_until(lambda: (lambda f: f if f and f[0] == tag else None)(fetch(srv)), timeout,
                        f"the app to serve {tag!r}", srv, interval=0.1)
    return result[1]


def start(launch, tmp_path: Path, *args, tag: str = "v1", wait: bool = True):  # noqa: F811
    (tmp_path / "main.py").write_text(app_source(tag))
    srv = launch(["main:app", "--reload", "--host", "127.0.0.1", "--port", "0", *args], cwd=tmp_path, wait=wait)
    if wait:
        # inotify, not polling: the reloader says which it uses.
        srv.wait_for_log(r"Started reloader process \[\d+\] using inotify")
    return srv


def detections(srv) -> list[str]:
    return re.findall(rf"{DETECTED} '([^']*)'", srv.stderr)


def test_edit_reloads(launch, tmp_path):
    srv = start(launch, tmp_path)
    old = serves(srv, "v1")
    (tmp_path / "main.py").write_text(app_source("v2"))
    new = serves(srv, "v2")
    assert new != old
    srv.wait_for_log("Reload complete")
    assert detections(srv) == [str(tmp_path / "main.py")]
    wait_until(lambda: not alive(old), 10, "the old worker to exit", srv)


def test_burst_of_edits_reloads_once(launch, tmp_path):
    srv = start(launch, tmp_path)
    serves(srv, "v1")
    for i in range(2, 7):
        (tmp_path / "main.py").write_text(app_source(f"v{i}"))
        time.sleep(0.03)
    serves(srv, "v6")
    time.sleep(1.0)  # any late, extra reload would be logged by now (reload delay 0.25 s)
    assert 1 <= len(detections(srv)) <= 2, srv.stderr


def _negative_then_positive(srv, tmp_path: Path, ignored: Path, watched: Path, tag: str = "v2"):
    """Edits `ignored`, waits past the reload delay, then edits `watched`: the only
    detection must be `watched` (a detection of `ignored` would have come first)."""
    ignored.write_text("ignored edit\n")
    time.sleep(0.8)
    watched.write_text(app_source(tag) if watched.suffix == ".py" else "watched edit\n")
    wait_until(lambda: detections(srv), 10, "a detected change", srv)
    time.sleep(0.5)
    assert detections(srv) == [str(watched)], srv.stderr


def test_txt_file_is_not_watched_by_default(launch, tmp_path):
    srv = start(launch, tmp_path)
    serves(srv, "v1")
    _negative_then_positive(srv, tmp_path, tmp_path / "notes.txt", tmp_path / "main.py")
    serves(srv, "v2")


def test_default_excludes_hidden_files(launch, tmp_path):
    srv = start(launch, tmp_path)
    serves(srv, "v1")
    _negative_then_positive(srv, tmp_path, tmp_path / ".hidden.py", tmp_path / "main.py")


def test_reload_exclude(launch, tmp_path):
    srv = start(launch, tmp_path, "--reload-exclude", "skip_*.py")
    serves(srv, "v1")
    _negative_then_positive(srv, tmp_path, tmp_path / "skip_me.py", tmp_path / "main.py")
    serves(srv, "v2")


def test_reload_exclude_keeps_default_excludes(launch, tmp_path):
    srv = start(launch, tmp_path, "--reload-exclude", "skip_*.py")
    serves(srv, "v1")
    _negative_then_positive(srv, tmp_path, tmp_path / ".hidden.py", tmp_path / "main.py")


def test_reload_include_txt(launch, tmp_path):
    srv = start(launch, tmp_path, "--reload-include", "*.txt")
    old = serves(srv, "v1")
    (tmp_path / "notes.txt").write_text("edited\n")
    wait_until(lambda: detections(srv), 10, "a detected change", srv)
    assert detections(srv) == [str(tmp_path / "notes.txt")]
    wait_until(lambda: (lambda f: f and f[1] != old)(fetch(srv)), 15, "a new worker", srv, interval=0.1)


def test_reload_include_keeps_py(launch, tmp_path):
    srv = start(launch, tmp_path, "--reload-include", "*.txt")
    serves(srv, "v1")
    (tmp_path / "main.py").write_text(app_source("v2"))
    serves(srv, "v2", timeout=6)


def test_reload_dir_limits_watching(launch, tmp_path):
    (tmp_path / "watched").mkdir()
    srv = start(launch, tmp_path, "--reload-dir", "watched")
    serves(srv, "v1")
    srv.wait_for_log(re.escape(str(tmp_path / "watched")))
    # main.py is outside the watched directory; watched/helper.py is inside.
    ignored = tmp_path / "main.py"
    ignored.write_text(app_source("v2"))
    time.sleep(0.8)
    assert fetch(srv)[0] == "v1"
    (tmp_path / "watched" / "helper.py").write_text("x = 1\n")
    wait_until(lambda: detections(srv), 10, "a detected change", srv)
    assert detections(srv) == [str(tmp_path / "watched" / "helper.py")]
    serves(srv, "v2")  # the reload imports main.py afresh


def test_reload_dir_watches_new_subdirectories(launch, tmp_path):
    srv = start(launch, tmp_path)
    serves(srv, "v1")
    sub = tmp_path / "newpkg"
    sub.mkdir()
    time.sleep(0.3)  # the supervisor adds a watch for the new directory
    (sub / "mod.py").write_text("x = 1\n")
    wait_until(lambda: detections(srv), 10, "a detected change", srv)
    assert detections(srv) == [str(sub / "mod.py")]


def test_reload_delay(launch, tmp_path):
    srv = start(launch, tmp_path, "--reload-delay", "2")
    serves(srv, "v1")
    (tmp_path / "main.py").write_text(app_source("v2"))
    t0 = time.monotonic()
    wait_until(lambda: detections(srv), 10, "a detected change", srv, interval=0.02)
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed <= 5, elapsed
    serves(srv, "v2")


def test_reload_with_two_workers(launch, tmp_path):
    """Both workers are replaced: the new ones serve v2, the old ones exit. Which worker takes
    a connection is the kernel's choice (an idle one may take them all), so the workers are
    known from the log, not from the answers."""
    srv = start(launch, tmp_path, "--workers", "2")

    def ready() -> list[int]:
        return [int(pid) for pid in re.findall(r"Worker \[(\d+)\] is ready", srv.stderr)]

    wait_until(lambda: len(ready()) == 2, 15, "two workers", srv)
    old = set(ready())
    assert serves(srv, "v1") in old
    (tmp_path / "main.py").write_text(app_source("v2"))
    srv.wait_for_log("Reload complete", timeout=20)
    new = set(ready()) - old
    assert len(new) == 2, srv.stderr
    tag, pid = fetch(srv)
    assert tag == "v2" and pid in new, (tag, pid, new)
    wait_until(lambda: not any(alive(p) for p in old), 10, "the old workers to exit", srv)


def test_syntax_error_keeps_old_version_then_recovers(launch, tmp_path):
    srv = start(launch, tmp_path)
    old = serves(srv, "v1")
    (tmp_path / "main.py").write_text(app_source("v2") + "\ndef broken(:\n")
    srv.wait_for_log("SyntaxError", timeout=15)
    srv.wait_for_log("Reload aborted", timeout=15)
    # The old worker kept serving throughout.
    assert fetch(srv) == ("v1", old)
    (tmp_path / "main.py").write_text(app_source("v3"))
    assert serves(srv, "v3") != old
    assert "Traceback" in srv.stderr  # the SyntaxError was shown with its traceback


def test_start_with_syntax_error_then_fix(launch, tmp_path):
    (tmp_path / "main.py").write_text("def broken(:\n")
    srv = launch(["main:app", "--reload", "--host", "127.0.0.1", "--port", "0"], cwd=tmp_path)
    srv.wait_for_log("SyntaxError", timeout=15)
    srv.wait_for_log("waiting for changes", timeout=15)
    assert srv.running
    (tmp_path / "main.py").write_text(app_source("fixed"))
    serves(srv, "fixed", timeout=20)
