"""The supervisor: `pronghorn APP --workers N` and the recycling options.

Real server processes on loopback. Worker PIDs come from the logs, from /proc,
and from the app itself (/pid answers os.getpid() and os.getppid()).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from conftest import HERE, UNDER_ASAN, alive

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(60)]

APP = "apps.workers_app:app"
STARTED_RE = re.compile(r"Started server process \[(\d+)\]")
PARENT_RE = re.compile(r"Started parent process \[(\d+)\]")
READY_LINE = "Application startup complete."


# -- helpers --------------------------------------------------------------------------------

def children(ppid: int) -> set[int]:
    """PIDs of the live (non-zombie) children of ppid, from /proc."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, parent = fields[0], int(fields[1])
        if parent == ppid and state not in ("Z", "X"):
            out.add(int(entry))
    return out


def proc_ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def wait_until(pred, timeout: float, what: str, srv=None, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    extra = f"\n--- stderr ---\n{srv.stderr}" if srv is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


def count(srv, needle: str) -> int:
    return srv.stderr.count(needle)


def started_pids(srv) -> list[int]:
    return [int(p) for p in STARTED_RE.findall(srv.stderr)]


def parent_pid(srv) -> int:
    m = srv.wait_for_log(PARENT_RE.pattern, timeout=10)
    return int(m.group(1))


def wait_ready_workers(srv, n: int, timeout: float = 15.0) -> None:
    """Waits until n 'Application startup complete.' lines in total were logged."""
    wait_until(lambda: count(srv, READY_LINE) >= n, timeout, f"{n} x {READY_LINE!r}", srv)


class NoResponse(Exception):
    """The connection ended before a single response byte arrived."""


def get(port: int, path: str = "/pid", timeout: float = 5.0) -> dict:
    """One request on a new connection (Connection: close); returns the JSON body.

    Raises NoResponse when not one byte of response came back, and other
    exceptions for partial or bad responses."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                received += data
        except ConnectionResetError:
            if not received:
                raise NoResponse("connection reset before any response byte") from None
            raise
    if not received:
        raise NoResponse("connection closed before any response byte")
    head, sep, body = received.partition(b"\r\n\r\n")
    assert sep, f"incomplete response {received[:200]!r}"
    status = int(head.split(b" ", 2)[1])
    assert status == 200, f"status {status}: {received[:300]!r}"
    return json.loads(body)


# httpx errors that mean "the server closed a reused idle connection before
# sending anything": the request may be retried on a new connection.
_RETRYABLE = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def ka_get(client: httpx.Client, path: str, stats: dict) -> dict:
    """A request on a keep-alive client; retried (up to 3 times) only when the
    connection was closed before any response byte arrived."""
    for attempt in range(4):
        try:
            r = client.get(path)
        except _RETRYABLE as exc:
            # RemoteProtocolError is retryable only in its "nothing received" form.
            if isinstance(exc, httpx.RemoteProtocolError) and "without sending a response" not in str(exc):
                raise
            if attempt == 3:
                raise
            stats["retries"] += 1
            continue
        assert r.status_code == 200, f"status {r.status_code}: {r.text[:200]}"
        return r.json()
    raise AssertionError("unreachable")


class Load:
    """Client threads sending requests in a loop until stopped.

    kinds: "new" = a new connection per request, "ka" = an httpx keep-alive client."""

    def __init__(self, port: int, path: str = "/sleep?ms=5", new: int = 2, ka: int = 2):
        self.port = port
        self.path = path
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok: list[tuple[float, int, str]] = []   # (time, pid, kind)
        self.failures: list[tuple[float, str, str]] = []  # (time, kind, error)
        self.stats = {"retries": 0}
        self.threads = [threading.Thread(target=self._run_new, daemon=True) for _ in range(new)]
        self.threads += [threading.Thread(target=self._run_ka, daemon=True) for _ in range(ka)]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=15)
        assert not any(t.is_alive() for t in self.threads), "a client thread is stuck"

    def _record(self, pid: int, kind: str, started: float) -> None:
        # Keyed by when the request started: one that started before a worker
        # exited may finish (and be seen by this thread) a moment after.
        with self.lock:
            self.ok.append((started, pid, kind))

    def _fail(self, kind: str, exc: BaseException) -> None:
        with self.lock:
            self.failures.append((time.monotonic(), kind, f"{type(exc).__name__}: {exc}"))

    def _run_new(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self._record(get(self.port, self.path)["pid"], "new", started)
            except Exception as exc:  # noqa: BLE001 - every failure is recorded
                self._fail("new", exc)
                time.sleep(0.01)

    def _run_ka(self) -> None:
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                try:
                    self._record(ka_get(client, self.path, self.stats)["pid"], "ka", started)
                except Exception as exc:  # noqa: BLE001
                    self._fail("ka", exc)
                    time.sleep(0.01)
        finally:
            client.close()

    def count_ok(self) -> int:
        with self.lock:
            return len(self.ok)

    def pids(self, since: float = 0.0, kind: str | None = None) -> set[int]:
        with self.lock:
            return {pid for t, pid, k in self.ok if t >= since and (kind is None or k == kind)}

    def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        start = self.count_ok()
        wait_until(lambda: self.count_ok() >= start + n, timeout, f"{n} more successful requests")


def spread_pids(port: int, n: int = 24, ms: int = 100) -> list[dict]:
    """n concurrent requests that each sleep `ms` in the app, so several workers take some."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: get(port, f"/sleep?ms={ms}"), range(n)))


def wait_pid_serves(port: int, pid: int, timeout: float = 5.0) -> None:
    wait_until(lambda: any(r["pid"] == pid for r in spread_pids(port, 16, 50)), timeout,
               f"worker {pid} to answer a request")


@pytest.fixture
def start(server_factory):
    """start(*args, app=APP, workers=N, env=None, wait_workers=True) -> ServerProcess."""

    def _start(*args, app: str = APP, workers: int | None = 2, env=None, wait_workers: bool = True, **kw):
        argv = list(args)
        if workers is not None:
            argv = ["--workers", str(workers)] + argv
        srv = server_factory(app, *argv, env=env, **kw)
        if wait_workers and workers is not None:
            wait_ready_workers(srv, workers)
        return srv

    return _start


# -- start-up -------------------------------------------------------------------------------

def test_four_workers_log_lines_and_processes(start):
    srv = start(workers=4)
    parent = parent_pid(srv)
    assert parent == srv.pid, "the parent is the process that was started"
    err = srv.stderr
    lines = err.splitlines()
    assert re.fullmatch(r"INFO:     Pronghorn running on http://127\.0\.0\.1:(\d+) \(Press CTRL\+C to quit\)", lines[0]), lines
    assert int(re.search(r":(\d+) ", lines[0]).group(1)) == srv.port != 0
    assert lines[1] == f"INFO:     Started parent process [{parent}]", lines
    workers = started_pids(srv)
    assert len(workers) == 4 and len(set(workers)) == 4, err
    assert parent not in workers
    for pid in workers:
        assert f"INFO:     Started server process [{pid}]" in lines
    assert lines.count("INFO:     Waiting for application startup.") == 4, err
    assert lines.count(f"INFO:     {READY_LINE}") == 4, err
    # The supervisor's own events, one line each with the worker's PID.
    for pid in workers:
        assert f"INFO:     Spawned worker [{pid}]" in lines, err
        wait_until(lambda: f"INFO:     Worker [{pid}] is ready" in srv.stderr.splitlines(), 5, f"worker {pid} ready", srv)
    # Each worker is a child of the parent, and the parent has no other children.
    for pid in workers:
        assert proc_ppid(pid) == parent
    assert children(parent) == set(workers)
    # Only one listening socket: every worker answers on the one port.
    seen: set[int] = set()
    for _ in range(5):
        for r in spread_pids(srv.port, 24, 50):
            assert r["ppid"] == parent, r
            assert r["pid"] in workers, r
            seen.add(r["pid"])
        if len(seen) == 4:
            break
    assert len(seen) >= 2, f"only {seen} answered"


def test_workers_1_has_no_parent_process(start):
    srv = start(workers=1)
    assert "Started parent process" not in srv.stderr
    assert started_pids(srv) == [srv.pid]
    assert get(srv.port)["pid"] == srv.pid
    assert children(srv.pid) == set()


def test_web_concurrency_sets_worker_count(start):
    srv = start(workers=None, env={"WEB_CONCURRENCY": "2"})
    wait_ready_workers(srv, 2)
    parent = parent_pid(srv)
    time.sleep(0.3)  # no third worker may come
    assert len(started_pids(srv)) == 2, srv.stderr
    assert children(parent) == set(started_pids(srv))
    assert get(srv.port)["ppid"] == parent


def test_pid_file(start, tmp_path):
    pid_file = tmp_path / "server.pid"
    srv = start("--pid-file", str(pid_file), workers=2)
    parent = parent_pid(srv)
    assert pid_file.read_text().strip() == str(parent)
    assert parent == srv.pid
    assert srv.stop(signal.SIGINT) == 0
    assert not pid_file.exists(), "the pid file must be removed at exit"


# -- crash and replacement ------------------------------------------------------------------

def test_kill_9_worker_under_load(start):
    srv = start(workers=2)
    parent = parent_pid(srv)
    first = started_pids(srv)
    concurrency = 4
    with Load(srv.port, "/sleep?ms=20", new=concurrency, ka=0) as load:
        load.wait_requests(20)
        victim = first[0]
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        srv.wait_for_log(rf"ERROR:    Child process \[{victim}\] died \(signal 9: Killed\)", timeout=5)
        new = wait_until(lambda: [p for p in started_pids(srv) if p not in first], 5, "a replacement", srv)
        assert len(new) == 1, srv.stderr
        replacement = new[0]
        wait_ready_workers(srv, 3, timeout=5)
        ready_after = time.monotonic() - t_kill
        wait_pid_serves(srv.port, replacement, timeout=5)
        load.wait_requests(20)
    assert ready_after < 1.0, f"the replacement was ready only {ready_after:.2f}s after the kill"
    assert proc_ppid(replacement) == parent
    assert children(parent) == {first[1], replacement}
    # Only requests in flight on the killed worker may have failed.
    assert len(load.failures) <= concurrency, load.failures
    assert load.count_ok() > 40


# -- zero-downtime replacement ----------------------------------------------------------------

def _assert_no_failures(load: Load, srv) -> None:
    assert not load.failures, f"{len(load.failures)} failed requests: {load.failures[:10]}\n{srv.stderr[-4000:]}"


def test_sighup_rolling_reload_without_failures(start):
    srv = start(workers=3)
    parent = parent_pid(srv)
    before = set(started_pids(srv))
    with Load(srv.port, "/sleep?ms=5", new=3, ka=3) as load:
        load.wait_requests(50)
        os.kill(parent, signal.SIGHUP)
        srv.wait_for_log(r"INFO:     SIGHUP: replacing the workers one at a time", timeout=5)
        srv.wait_for_log(r"Reload complete: every worker was replaced", timeout=20)
        # Wait for the last old worker to finish draining.
        wait_until(lambda: not any(alive(p) for p in before), 10, "the old workers to exit", srv)
        t_after = time.monotonic()
        load.wait_requests(100)
        after_ka = load.pids(t_after, "ka")
        after_new = load.pids(t_after, "new")
    _assert_no_failures(load, srv)
    err = srv.stderr
    for old in before:
        m = re.search(rf"Spawned worker \[(\d+)\] to replace \[{old}\] \(reload\)", err)
        assert m, f"no replacement for {old}\n{err}"
        assert f"Stopping worker [{old}] (reload)" in err
        # The new worker was spawned (and became ready) before the old one was told to stop.
        assert err.index(m.group(0)) < err.index(f"Stopping worker [{old}] (reload)")
    after = children(parent)
    assert len(after) == 3 and not (after & before), (before, after)
    assert after_ka | after_new, "no request was served after the reload"
    assert (after_ka | after_new) <= after, (after_ka, after_new, after)
    assert not ((after_ka | after_new) & before)


def test_max_requests_recycling_without_failures(start):
    srv = start("--limit-max-requests", "50", workers=2)
    parent = parent_pid(srv)
    before = set(started_pids(srv))
    with Load(srv.port, "/pid", new=2, ka=2) as load:
        # Two workers with a limit of 50: 300 requests recycle several of them.
        load.wait_requests(300, timeout=30)
        wait_until(lambda: count(srv, "(request limit)") >= 4, 10, "two recycles (spawn + stop lines)", srv)
    _assert_no_failures(load, srv)
    err = srv.stderr
    assert re.search(r"Worker \[\d+\] reached its request limit", err), err
    spawned = re.findall(r"Spawned worker \[(\d+)\] to replace \[(\d+)\] \(request limit\)", err)
    assert spawned, err
    assert any(int(old) in before for _, old in spawned)
    # Still two workers (recycling replaces; it does not add).
    wait_until(lambda: len(children(parent)) == 2, 10, "two workers", srv)
    assert "died" not in err, err


def test_reloads_never_drop_new_connections(start):
    """Several rolling reloads under many new-connection-per-request clients.

    A connection the old worker accepted just before it was told to stop must
    still get its response: the client sent a request and nothing may be lost."""
    srv = start("--no-access-log", workers=3)
    parent = parent_pid(srv)
    with Load(srv.port, "/pid", new=6, ka=0) as load:
        for i in range(1, 5):
            load.wait_requests(200)
            os.kill(parent, signal.SIGHUP)
            wait_until(lambda: count(srv, "Reload complete: every worker was replaced") >= i, 20, f"reload {i}", srv)
        load.wait_requests(200)
    assert count(srv, "(reload)") == 4 * 3 * 2, srv.stderr  # 12 spawn lines + 12 stop lines
    _assert_no_failures(load, srv)


def test_worker_dying_with_unread_recycle_request(start):
    """A worker asks to be recycled ('M' on its control pipe) and dies before the
    parent reads that; the parent handles the death of another worker first.

    The parent is stopped (SIGSTOP) while this happens so that the two events
    are read in one batch, SIGCHLD first. The replacement must start and the
    server must keep serving (not exit 3 because the new worker crashed)."""
    srv = start("--limit-max-requests", "3", "--no-access-log", workers=2)
    parent = parent_pid(srv)
    first, second = started_pids(srv)
    os.kill(parent, signal.SIGSTOP)
    try:
        os.kill(first, signal.SIGKILL)  # its SIGCHLD is queued first
        wait_until(lambda: not alive(first), 5, "the first worker to die")
        for _ in range(5):  # only the second worker is left: it reaches its limit
            assert get(srv.port)["pid"] == second
        time.sleep(0.5)  # its ~100 ms tick writes 'M'
        os.kill(second, signal.SIGKILL)
        wait_until(lambda: not alive(second), 5, "the second worker to die")
    finally:
        os.kill(parent, signal.SIGCONT)
    # Two new workers get ready, or the server gives up (the bug: exit code 3).
    wait_until(lambda: count(srv, READY_LINE) >= 4 or not srv.running, 10, "two new workers", srv)
    time.sleep(0.5)
    err = srv.stderr
    assert "Segmentation fault" not in err and "failed to start" not in err, err
    assert srv.running, err
    assert len([p for p in children(parent) if p not in (first, second)]) == 2, err
    assert get(srv.port)["ppid"] == parent


def test_max_requests_jitter_draws_limits(start):
    """With a jitter, each worker's limit is in N..N+J: recycling happens after 20..30 requests."""
    srv = start("--limit-max-requests", "20", "--limit-max-requests-jitter", "10", workers=1)
    parent = parent_pid(srv)  # a request limit needs the parent even with one worker
    first = started_pids(srv)[0]
    served = 0
    client = httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=5.0)
    stats = {"retries": 0}
    try:
        while "reached its request limit" not in srv.stderr and served < 60:
            assert ka_get(client, "/pid", stats)["pid"] == first
            served += 1
            time.sleep(0.005)
    finally:
        client.close()
    # The worker asks for its replacement at its limit; a few requests may pass before the log line.
    assert 20 <= served <= 45, (served, srv.stderr)
    srv.wait_for_log(rf"Stopping worker \[{first}\] \(request limit\)", timeout=10)
    wait_until(lambda: not alive(first), 10, "the old worker to exit", srv)
    assert len(children(parent)) == 1


def test_sigttou_under_load_without_failures(start):
    srv = start(workers=3)
    parent = parent_pid(srv)
    with Load(srv.port, "/sleep?ms=5", new=2, ka=3) as load:
        load.wait_requests(50)
        os.kill(parent, signal.SIGTTOU)
        m = srv.wait_for_log(r"Stopping worker \[(\d+)\] \(scaled down\)", timeout=5)
        gone = int(m.group(1))
        wait_until(lambda: not alive(gone), 10, "the removed worker to exit", srv)
        t_after = time.monotonic()
        load.wait_requests(50)
    _assert_no_failures(load, srv)
    assert "SIGTTOU: removing a worker (now 2)" in srv.stderr
    assert len(children(parent)) == 2
    assert gone not in load.pids(t_after)


def test_worker_lifetime_recycles_without_failures(start):
    srv = start("--worker-lifetime", "2", workers=2)
    parent = parent_pid(srv)
    before = set(started_pids(srv))
    with Load(srv.port, "/sleep?ms=5", new=2, ka=2) as load:
        wait_until(lambda: not any(alive(p) for p in before), 10, "both first workers to be recycled", srv)
        t_after = time.monotonic()
        load.wait_requests(50)
    _assert_no_failures(load, srv)
    err = srv.stderr
    for old in before:
        assert re.search(rf"Worker \[{old}\] reached its lifetime of 2 s", err), err
        assert re.search(rf"Spawned worker \[\d+\] to replace \[{old}\] \(lifetime\)", err), err
        assert f"Stopping worker [{old}] (lifetime)" in err
    now = children(parent)
    assert not (now & before) and 2 <= len(now) <= 3, now  # a third may be mid-recycle
    assert not (load.pids(t_after) & before)


# -- scaling --------------------------------------------------------------------------------

def test_sigttin_sigttou_change_worker_count(start):
    srv = start(workers=2)
    parent = parent_pid(srv)
    assert len(children(parent)) == 2
    os.kill(parent, signal.SIGTTIN)
    srv.wait_for_log(r"SIGTTIN: adding a worker \(now 3\)", timeout=5)
    wait_until(lambda: len(children(parent)) == 3, 5, "three workers", srv)
    wait_ready_workers(srv, 3)
    added = started_pids(srv)[-1]
    wait_pid_serves(srv.port, added)
    for expected in (2, 1):
        os.kill(parent, signal.SIGTTOU)
        srv.wait_for_log(rf"SIGTTOU: removing a worker \(now {expected}\)", timeout=5)
        wait_until(lambda: len(children(parent)) == expected, 10, f"{expected} workers", srv)
    os.kill(parent, signal.SIGTTOU)
    srv.wait_for_log(r"SIGTTOU: already at one worker", timeout=5)
    time.sleep(0.3)
    assert len(children(parent)) == 1
    assert get(srv.port)["ppid"] == parent


# -- shutdown -------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_finishes_inflight_request(start, sig):
    srv = start(workers=2)
    parent = parent_pid(srv)
    workers = started_pids(srv)
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        fut = pool.submit(get, srv.port, "/sleep?ms=2000", 10.0)
        time.sleep(0.5)
        assert not fut.done()
        os.kill(parent, sig)
        result = fut.result(timeout=10)
        elapsed = time.monotonic() - t0
    assert result["ppid"] == parent
    assert elapsed >= 1.9
    assert srv.wait_exit(10) == 0, srv.stderr
    lines = srv.stderr.strip().splitlines()
    assert lines[-1] == f"INFO:     Stopping parent process [{parent}]", lines[-5:]
    for pid in workers:
        assert not alive(pid)
        assert f"Finished server process [{pid}]" in srv.stderr


def test_graceful_stop_closes_idle_keep_alive_connections(start):
    """On SIGTERM every worker closes its idle keep-alive connections at once, while a
    request in flight on another connection is still finished."""
    from conftest import ResponseReader, is_closed

    srv = start(workers=2)
    parent = parent_pid(srv)
    idle = []
    for _ in range(6):  # the shared accept queue spreads them over the workers
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: test\r\n\r\n")
        r = ResponseReader(s).read_response()
        assert r.status == 200
        idle.append(s)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(get, srv.port, "/sleep?ms=3000", 10.0)
        time.sleep(0.5)
        assert not fut.done()
        t0 = time.monotonic()
        os.kill(parent, signal.SIGTERM)
        for s in idle:
            assert is_closed(s, timeout=3), "an idle keep-alive connection stayed open after SIGTERM"
            s.close()
        closed_after = time.monotonic() - t0
        assert fut.result(timeout=10)["ppid"] == parent
    assert closed_after < 1.5, f"idle connections closed only after {closed_after:.1f}s (before the drain ended)"
    assert srv.wait_exit(10) == 0, srv.stderr


def test_graceful_shutdown_timeout_bounds_stop(start):
    srv = start("--timeout-graceful-shutdown", "1", workers=2)
    parent = parent_pid(srv)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(lambda: get(srv.port, "/sleep?ms=20000", 15.0))
        time.sleep(0.5)
        t0 = time.monotonic()
        os.kill(parent, signal.SIGTERM)
        rc = srv.wait_exit(10)
        took = time.monotonic() - t0
        with pytest.raises(Exception):
            fut.result(timeout=10)
    assert took < 5, f"stop took {took:.1f}s with --timeout-graceful-shutdown 1"
    assert rc == 0, srv.stderr
    assert srv.stderr.strip().splitlines()[-1] == f"INFO:     Stopping parent process [{parent}]"


# -- start-up failures ----------------------------------------------------------------------

@pytest.mark.parametrize("app,marker,max_started", [
    # The import fails before "Started server process" is logged.
    ("apps.workers_import_error:app", "workers-import-error-marker", 0),
    ("apps.workers_app:lifespan_fail", "workers-lifespan-failed-marker", 2),
])
def test_startup_failure_exits_3(start, app, marker, max_started):
    srv = start(app=app, workers=2, wait_workers=False)
    t0 = time.monotonic()
    rc = srv.wait_exit(10)
    took = time.monotonic() - t0
    err = srv.stderr
    assert rc == 3, err
    assert took < 8, f"took {took:.1f}s"
    assert marker in err
    assert re.search(r"ERROR:    Worker \[\d+\] failed to start \(exit code \d+\); stopping the server", err), err
    # A worker that cannot start is not restarted as if it had crashed.
    assert "died" not in err and "crashed" not in err, err
    assert len(started_pids(srv)) <= max_started, err
    assert err.strip().splitlines()[-1].startswith("INFO:     Stopping parent process ["), err


# -- health check ---------------------------------------------------------------------------

def test_blocked_event_loop_is_dumped_and_replaced(start):
    srv = start("--timeout-worker-healthcheck", "2", workers=2)
    parent = parent_pid(srv)
    first = started_pids(srv)
    source = Path(HERE / "apps" / "workers_app.py")
    line_no = next(i for i, line in enumerate(source.read_text().splitlines(), 1) if "BLOCKING-LINE-MARKER" in line)
    with ThreadPoolExecutor(1) as pool:
        blocked = pool.submit(lambda: get(srv.port, "/block", 15.0))
        m = srv.wait_for_log(r"ERROR:    Worker \[(\d+)\] has not answered for (\d+\.\d) s", timeout=10)
        victim = int(m.group(1))
        assert victim in first
        assert float(m.group(2)) >= 2.0
        srv.wait_for_log(rf"ERROR:    Killing worker \[{victim}\]: event loop blocked for \d+\.\d s; "
                         r"starting a replacement", timeout=5)
        with pytest.raises(Exception):
            blocked.result(timeout=10)  # the worker was killed while it held that request
    err = srv.stderr
    # faulthandler's dump names the file and the line that blocks.
    assert re.search(rf'File "[^"]*workers_app\.py", line {line_no} in app', err), err
    assert err.index("has not answered") < err.index("workers_app.py") < err.index("Killing worker")
    replacement = wait_until(lambda: [p for p in started_pids(srv) if p not in first], 5, "a replacement", srv)[0]
    wait_ready_workers(srv, 3)
    wait_until(lambda: not alive(victim), 5, "the blocked worker to be gone", srv)
    assert children(parent) == {replacement} | (set(first) - {victim})
    wait_pid_serves(srv.port, replacement)


def test_stopped_worker_is_reported_as_stopped_and_replaced(start):
    """A worker stopped with SIGSTOP cannot dump its stack: the log says it is stopped,
    not that a stack follows, and it is replaced."""
    srv = start("--timeout-worker-healthcheck", "1", workers=2)
    first = started_pids(srv)
    victim = first[0]
    os.kill(victim, signal.SIGSTOP)
    try:
        m = srv.wait_for_log(rf"ERROR:    Worker \[{victim}\] has not answered for (\d+\.\d) s: (.*)", timeout=10)
        assert "the process is stopped (state T" in m.group(2), m.group(0)
        assert "stack follows" not in m.group(2)
        srv.wait_for_log(rf"ERROR:    Killing worker \[{victim}\]: stopped for \d+\.\d s; starting a replacement",
                         timeout=5)
        wait_until(lambda: not alive(victim), 5, "the stopped worker to be gone", srv)
        wait_ready_workers(srv, 3)
    finally:
        if alive(victim):
            os.kill(victim, signal.SIGCONT)


# -- preload --------------------------------------------------------------------------------

@pytest.mark.parametrize("preload", [True, False])
def test_preload_imports_once(start, tmp_path, preload):
    log = tmp_path / "imports.log"
    args = ["--preload"] if preload else []
    srv = start(*args, workers=3, env={"WORKERS_IMPORT_LOG": str(log)})
    parent = parent_pid(srv)
    workers = set(started_pids(srv))
    assert get(srv.port)["ppid"] == parent
    importers = [int(x) for x in log.read_text().split()]
    if preload:
        assert importers == [parent]
    else:
        assert len(importers) == 3 and set(importers) == workers


# -- memory limit ---------------------------------------------------------------------------

@pytest.mark.skipif(UNDER_ASAN, reason="memory figures are not meaningful under ASan (a fresh worker is over 60 MiB)")
def test_memory_limit_recycles_worker(start):
    srv = start("--limit-worker-memory", "60", workers=2)
    parent = parent_pid(srv)
    first = started_pids(srv)
    time.sleep(1.5)  # at least one memory sample: a fresh worker stays under the limit
    assert "MiB (limit 60 MiB)" not in srv.stderr, srv.stderr
    hog = get(srv.port, "/alloc?mib=100", 15.0)["pid"]
    assert hog in first
    m = srv.wait_for_log(rf"Worker \[{hog}\] uses (\d+) MiB \(limit 60 MiB\)", timeout=5)
    assert int(m.group(1)) >= 100
    m = srv.wait_for_log(rf"Spawned worker \[(\d+)\] to replace \[{hog}\] \(memory limit\)", timeout=5)
    replacement = int(m.group(1))
    srv.wait_for_log(rf"Stopping worker \[{hog}\] \(memory limit\)", timeout=10)
    wait_until(lambda: not alive(hog), 10, "the big worker to exit", srv)
    other = next(p for p in first if p != hog)
    assert children(parent) == {other, replacement}
    assert f"Worker [{other}] uses" not in srv.stderr
    wait_pid_serves(srv.port, replacement)


# -- --reuse-port ---------------------------------------------------------------------------

def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on `port` (from /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            inodes.add(f"socket:[{inode}]")
    return inodes


def test_reuse_port_gives_each_worker_its_own_socket(start):
    srv = start("--reuse-port", workers=3)
    parent = parent_pid(srv)
    listening = _listening_inodes(srv.port)
    assert len(listening) == 3, listening
    per_worker = [(_socket_inodes(pid) & listening) for pid in children(parent)]
    assert all(len(s) == 1 for s in per_worker), per_worker
    assert len(set().union(*per_worker)) == 3, "each worker has a different socket"
    # The kernel spreads new connections over the three sockets.
    pids = {get(srv.port)["pid"] for _ in range(60)}
    assert len(pids) >= 2, pids


def test_reuse_port_reload_and_recycling_lose_no_connection(start):
    """A replacement inherits the socket (and its queue) of the worker it replaces."""
    srv = start("--reuse-port", "--no-access-log", "--limit-max-requests", "150", workers=3)
    parent = parent_pid(srv)
    sockets_before = _listening_inodes(srv.port)
    with Load(srv.port, "/pid", new=6, ka=0) as load:
        for i in range(1, 3):
            load.wait_requests(150)
            os.kill(parent, signal.SIGHUP)
            wait_until(lambda: count(srv, "Reload complete: every worker was replaced") >= i, 20, f"reload {i}", srv)
        # Recycling is asynchronous (the replacement starts first): keep the
        # load on until one has completed, so that the load spans it.
        wait_until(lambda: re.search(r"\(request limit\)", srv.stderr), 30, "a worker recycled at its request limit", srv)
        load.wait_requests(400)
    _assert_no_failures(load, srv)
    assert _listening_inodes(srv.port) == sockets_before, "the slots' sockets survive replacements"


def test_reuse_port_scale_down_closes_the_slot_and_loses_nothing(start):
    """SIGTTOU closes the removed worker's socket; with net.ipv4.tcp_migrate_req=1
    (set here, restored after) its queued connections move to the other sockets."""
    knob = Path("/proc/sys/net/ipv4/tcp_migrate_req")
    if not knob.exists() or not os.access(knob, os.W_OK):
        pytest.skip("needs a writable net.ipv4.tcp_migrate_req (root, Linux >= 5.14)")
    saved = knob.read_text().strip()
    knob.write_text("1")
    try:
        srv = start("--reuse-port", "--no-access-log", workers=3)
        parent = parent_pid(srv)
        with Load(srv.port, "/pid", new=6, ka=0) as load:
            load.wait_requests(150)
            os.kill(parent, signal.SIGTTOU)
            m = srv.wait_for_log(r"Stopping worker \[(\d+)\] \(scaled down\)", timeout=5)
            wait_until(lambda: not alive(int(m.group(1))), 10, "the removed worker to exit", srv)
            wait_until(lambda: len(_listening_inodes(srv.port)) == 2, 5, "its socket to close", srv)
            load.wait_requests(150)
        _assert_no_failures(load, srv)
    finally:
        knob.write_text(saved)
