"""--pre-start: shell steps the supervisor runs, in order, before any worker starts (a failure
stops the server with one line and no worker), and again before the workers of a SIGHUP reload
(a failure keeps the old workers serving)."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(60)]  # uvicorn has no pre-start steps

APP = "apps.ops_app:app"


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_steps_run_in_order_before_any_worker(server_factory, tmp_path):
    record = tmp_path / "steps.txt"
    srv = server_factory(APP, "--pre-start", f"echo one >> {record}; echo first-step-output",
                         "--pre-start", f"echo two >> {record}")
    assert record.read_text() == "one\ntwo\n"
    srv.wait_for_log("Started server process")
    err = srv.stderr
    assert "Running pre-start step 1: echo one" in err
    # The steps' output is in the server's output; the workers start after the last step.
    assert "first-step-output" in srv.stdout + err
    assert err.index("Running pre-start step 2") < err.index("Started server process")
    assert httpx.get(srv.url + "/pid", timeout=5).status_code == 200


def test_failing_step_stops_the_server_before_any_worker(server_factory, tmp_path):
    srv = server_factory(APP, "--pre-start", "true", "--pre-start", "echo migrating; exit 4", wait=False)
    rc = srv.wait_exit(20)
    assert rc == 1
    err = srv.stderr
    assert re.search(r"ERROR: +Pre-start step 2 \(echo migrating; exit 4\) failed with exit status 4; not starting",
                     err), err
    assert "Started server process" not in err
    assert "Pronghorn running on" not in err  # said only once the steps have passed


def test_sighup_runs_the_steps_again_then_replaces_the_workers(server_factory, tmp_path):
    record = tmp_path / "steps.txt"
    srv = server_factory(APP, "--workers", "2", "--pre-start", f"echo run >> {record}")
    before = {httpx.get(srv.url + "/pid", timeout=5).json()["pid"] for _ in range(20)}
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: record.read_text().count("run") == 2, 10, "the step to run again")
    wait_until(lambda: srv.stderr.count("Started server process") >= 4, 20, "the new workers")
    wait_until(lambda: not ({httpx.get(srv.url + "/pid", timeout=5).json()["pid"] for _ in range(20)} & before),
               20, "only new workers to serve")


def test_failing_step_on_sighup_keeps_the_old_workers(server_factory, tmp_path):
    flag = tmp_path / "fail"
    srv = server_factory(APP, "--workers", "1", "--pre-start", f"test ! -e {flag}")
    pid = httpx.get(srv.url + "/pid", timeout=5).json()["pid"]
    flag.write_text("")
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: "failed with exit status 1; the current workers keep serving" in srv.stderr, 10,
               "the failure to be logged")
    time.sleep(0.5)
    for _ in range(5):
        assert httpx.get(srv.url + "/pid", timeout=5).json()["pid"] == pid
    assert srv.stderr.count("Started server process") == 1
    # Fixed: the next SIGHUP goes through.
    os.unlink(flag)
    srv.send_signal(signal.SIGHUP)
    wait_until(lambda: httpx.get(srv.url + "/pid", timeout=5).json()["pid"] != pid, 20, "a new worker")


def test_sigterm_during_a_startup_step_stops_at_once(server_factory, tmp_path):
    """A stop during a long migration ends the step (its process group) and the server, without
    starting workers (the signals wait on the supervisor's signalfd, which it polls meanwhile)."""
    marker = tmp_path / "started"
    srv = server_factory(APP, "--pre-start", f"touch {marker}; sleep 30", wait=False)
    wait_until(marker.exists, 15, "the step to start")
    started = time.monotonic()
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(10) == 0
    assert time.monotonic() - started < 3
    assert "Stopping pre-start step 1" in srv.stderr
    assert "Started server process" not in srv.stderr


def test_stop_during_a_reload_step_leaves_nothing_running(server_factory, tmp_path):
    flag, pid_file = tmp_path / "slow", tmp_path / "step.pid"
    srv = server_factory(APP, "--workers", "1",
                         "--pre-start", f"if test -e {flag}; then sleep 30 & echo $! > {pid_file}; wait; fi")
    flag.write_text("")
    srv.send_signal(signal.SIGHUP)
    wait_until(pid_file.exists, 10, "the reload's step to start")
    time.sleep(0.2)
    sleeper = int(pid_file.read_text())
    srv.send_signal(signal.SIGTERM)
    assert srv.wait_exit(15) == 0
    assert "keep serving" not in srv.stderr  # not reported as a failed step
    wait_until(lambda: not os.path.exists(f"/proc/{sleeper}") or
               open(f"/proc/{sleeper}/stat").read().split(")")[-1].split()[0] == "Z", 5,
               "the step's child to be gone")
