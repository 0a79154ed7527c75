#!/usr/bin/env python3
# >>> LEAD NOTE TO HELPER (added by the lead; DELETE this whole block before your first commit) >>>
# ## Context (read first)
# Pronghorn is a C++20 ASGI server (drop-in for uvicorn) installed with pip (scikit-build-core + CMake). Repo main: /work/main (do NOT edit or commit there; the lead merges). You work in YOUR OWN git worktree (given below) on your own branch; commit there in small commits with honest messages, early and often. Other helpers work in parallel in other worktrees on other parts; keep your changes to what your task needs so merges stay easy.
# Read docs/architecture.md first (layers: src/engine = no Python: loop, transports, sessions, codecs; src/bridge = CPython extension; src/supervisor; python/pronghorn = CLI/config). HTTP/2 lives in src/engine/http2/session.{h,cpp} (driving libnghttp2), tests in tests/cpp/http2/session_test.cpp, tests/integration/test_http2.py, fuzz target fuzz/ (fuzz_http2_session). Options are defined once in python/pronghorn/config.py OPTIONS (then `scripts/gen_options_doc.py > docs/options.md` after reinstalling).
# 
# ## Set-up in your worktree (2 shared CPU cores: use -j2, never more, and don't run builds you don't need)
#   cd <worktree> && python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt && .venv/bin/pip install -q --no-build-isolation --no-deps .
# Rebuild/reinstall after C++ changes: `.venv/bin/pip install -q --no-build-isolation --no-deps .`
# C++ unit tests: `cmake -S . -B build/tests -G Ninja -DPRONGHORN_BUILD_TESTS=ON -DPRONGHORN_BUILD_EXTENSION=OFF && cmake --build build/tests -j2 && ./build/tests/engine_tests`
# Integration tests run the installed `pronghorn` as a real process: `.venv/bin/python -m pytest tests/integration/test_http2.py -q -p no:cacheprovider` (see tests/integration/conftest.py: server_factory fixture, certs fixture; PRONGHORN_TEST_SERVER=uvicorn runs a test against uvicorn for differential checks). Mark tests that take > ~10 s with @pytest.mark.slow. The full integration suite takes ~10 min: run only the files you touch, plus test_http2.py.
# Format C++ with /usr/bin/clang-format-14 -i on files you changed. -Wall -Wextra, no warnings. No exceptions on the hot path; every syscall failure logged with errno.
# 
# ## Standards
# - Tests are honest: each asserts behaviour that could break, with bounded time. Never assert speed in a test.
# - Bad input never crashes or hangs the server: a precise 4xx/RST_STREAM/GOAWAY, a log line, and a test.
# - Don't copy other servers' code or text; read them for behaviour only.
# - Names say what things are; comments say why.
# - Keep docs/architecture.md current if you change structure.
# 
# ## Deadline
# It is about 07:45 UTC now (check `date`). Stop by 09:10 UTC at the latest, with everything committed on your branch (a clean `git status`). Your final message (your report to the lead) must list: commits, what you built, what you measured (with the exact commands to re-run), bugs found and fixed, and what is left undone or doubtful. Be honest: say what you did not finish.
# BENCHMARK LOCK: another helper benchmarks TLS on this machine. Wrap EVERY benchmark run in `flock /tmp/bench.lock <command>` so two benchmarks never overlap.
# <<< END OF LEAD NOTE <<<

"""Benchmark driver: Pronghorn against uvicorn, granian, hypercorn (and gunicorn + UvicornWorker).

    python bench/run.py                                   # all servers, 3 rounds x 5 s
    python bench/run.py --rounds 5 --duration 10
    python bench/run.py --smoke --servers pronghorn,uvicorn --out /tmp/b
    python bench/run.py --workloads hello,fastapi_json
    python bench/run.py --servers pronghorn,granian,hypercorn,uvicorn \
        --workloads h2c_hello,h2tls_hello,h2c_fastapi_json,h2c_idle_1000

For each workload every server is started once (the idle-connection workload starts a
fresh server each round), warmed up, then measured interleaved (A, B, C, A, B, C, ...)
for --rounds rounds of --duration seconds with wrk; the median of the rounds is reported.

Figures: requests/s, p50/p99 latency (wrk --latency, read through a Lua done() hook),
server CPU time per request (utime+stime+cutime+cstime of every process in the server's
session, from /proc/PID/stat, before and after the wrk run, divided by the requests
completed), peak VmRSS of each worker (sampled every 50 ms) and VmHWM.

The HTTP/2 workloads (h2c_*, h2tls_*) are driven by h2load (Debian's nghttp2-client) instead:
-c connections x -m concurrent streams each for --duration seconds, over h2c (prior
knowledge) or TLS (ALPN h2); requests/s = 2xx answers / duration, p50/p99 from h2load's
per-request log,
and every failed, errored, timed-out or non-2xx request is counted in "errors". The
HTTP/2 servers are pronghorn --http2, granian --http 2, hypercorn (h2c and ALPN h2 by
default) and uvicorn --http zttp --http2 (skipped, with the reason, when zttp is not
installed). h2c_idle_1000 opens --idle-connections HTTP/2 connections that each exchange
the preface and SETTINGS and complete one request, then stay idle: RSS growth per connection.

Writes OUT/results.md, OUT/results.json and OUT/chart.png (OUT defaults to bench/results).
Servers run with cwd=bench/ (apps importable as "apps:..."), in their own session,
and are always killed (process group, then any process left in the session).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
PY = sys.executable
KEEP_ALIVE_S = 60          # every server: idle keep-alive connections survive the idle workload
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
ALL_SERVERS = ["pronghorn", "uvicorn", "granian", "hypercorn", "gunicorn", "nginx"]
SMOKE_SERVERS = ["pronghorn", "uvicorn"]
IDLE_CONNECTIONS = 1000
# --pin: the CPUs of the server (all its processes) and of the load generator, as taskset
# lists ("1" and "0"); None: no pinning (both float over every CPU).
PIN_SERVER: Optional[str] = None
PIN_CLIENT: Optional[str] = None
CLIENT = "wrk"             # --client: wrk, or h2load (--h1) for the GET workloads


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- servers

@dataclass
class ServerSpec:
    name: str
    package: str                 # distribution name for the version
    module: str                  # importable module that must exist
    build: Callable[[str, int, int], List[str]]   # (app, port, workers) -> argv
    multi_only: bool = False     # only for the --workers 2 workloads
    note: str = ""
    # Options that make it serve TLS with the certificate in a directory (cert.pem, key.pem);
    # None: it cannot serve TLS here.
    tls_args: Optional[Callable[[Path], List[str]]] = None
    tls_only: bool = False       # only for the TLS workloads (nginx: the physical limit)
    # The static-file workloads: options that serve STATIC_DIR under /static from the server
    # itself; "app" when the app does it (uvicorn + Starlette's StaticFiles); None: not run.
    static_args: Optional[Callable[[Path], List[str]] | str] = None
    # The HTTP/2 workloads: turns the server's argv into one that serves HTTP/2 (h2c with
    # prior knowledge on the plain port, ALPN h2 with TLS); None: not run there.
    h2_argv: Optional[Callable[[List[str]], List[str]]] = None
    h2_note: str = ""
    extra_versions: Dict[str, str] = field(default_factory=dict)


def _has(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gunicorn_worker_class() -> Optional[str]:
    if _has("uvicorn_worker"):
        return "uvicorn_worker.UvicornWorker"
    if _has("uvicorn.workers"):
        return "uvicorn.workers.UvicornWorker"
    return None


def server_specs() -> Dict[str, ServerSpec]:
    hyper_loop = "uvloop" if _has("uvloop") else "asyncio"
    gworker = _gunicorn_worker_class()
    gunicorn_extra = _gunicorn_extra_args() if _has("gunicorn") else []

    def pronghorn(*extra: str, python: str = PY) -> Callable[[str, int, int], List[str]]:
        return lambda app, port, w: [python, "-m", "pronghorn", app, "--host", HOST, "--port", str(port),
                                     "--workers", str(w), "--no-access-log", "--lifespan", "off",
                                     "--loop", "uvloop", "--log-level", "warning",
                                     "--timeout-keep-alive", str(KEEP_ALIVE_S), *extra]

    specs = {
        "pronghorn": ServerSpec("pronghorn", "pronghorn", "pronghorn", pronghorn(),
                                note="--loop uvloop --lifespan off", tls_args=_uvicorn_tls,
                                h2_argv=lambda argv: argv + ["--http2"], h2_note="--http2",
                                static_args=lambda d: ["--static-path-route", "/static", "--static-path-mount", str(d)]),
        # Variants for measuring the send thread's choice and the request task
        # (docs/performance.md); only run when named in --servers.
        **{f"pronghorn-{flag}": ServerSpec(f"pronghorn-{flag}", "pronghorn", "pronghorn", pronghorn(f"--{flag}"),
                                           note=f"--loop uvloop --lifespan off --{flag}")
           for flag in ("send-thread", "no-send-thread", "asyncio-tasks")},
        # --metrics (docs/metrics.md): the workers count into shared memory and a supervisor
        # serves /metrics (on a free port here). pronghorn-supervised is the same process tree
        # with metrics off (a request limit no run reaches), to tell the supervisor's own cost
        # from the counting's.
        "pronghorn-metrics": ServerSpec("pronghorn-metrics", "pronghorn", "pronghorn",
                                        pronghorn("--metrics", "--metrics-bind", f"{HOST}:0"),
                                        note="--loop uvloop --lifespan off --metrics"),
        "pronghorn-supervised": ServerSpec("pronghorn-supervised", "pronghorn", "pronghorn",
                                           pronghorn("--limit-max-requests", "1000000000000"),
                                           note="--loop uvloop --lifespan off, under the supervisor"),
        # Another build of Pronghorn (an earlier commit installed in its own venv), for
        # before/after comparisons in one interleaved run: PRONGHORN_BASE_PYTHON=/path/venv/bin/python
        # and --servers pronghorn,pronghorn-base.
        **({"pronghorn-base": ServerSpec("pronghorn-base", "pronghorn", "pronghorn",
                                         pronghorn(python=os.environ["PRONGHORN_BASE_PYTHON"]),
                                         note="PRONGHORN_BASE_PYTHON's build, --loop uvloop --lifespan off",
                                         tls_args=_uvicorn_tls, h2_argv=lambda argv: argv + ["--http2"],
                                         h2_note="--http2")}
           if os.environ.get("PRONGHORN_BASE_PYTHON") else {}),
        "uvicorn": ServerSpec(
            "uvicorn", "uvicorn", "uvicorn",
            lambda app, port, w: [PY, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
                                  "--workers", str(w), "--no-access-log", "--lifespan", "off",
                                  "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
                                  "--timeout-keep-alive", str(KEEP_ALIVE_S)],
            note="--loop uvloop --http httptools --lifespan off", tls_args=_uvicorn_tls, static_args="app",
            h2_argv=_uvicorn_h2_argv, h2_note="--http zttp --http2 (needs the zttp package)"),
        "granian": ServerSpec(
            "granian", "granian", "granian",
            lambda app, port, w: [PY, "-m", "granian", "--interface", "asgi", "--host", HOST,
                                  "--port", str(port), "--workers", str(w), "--no-access-log",
                                  "--log-level", "warning",
                                  "--http1-header-read-timeout", str(KEEP_ALIVE_S * 1000), app],
            note="--interface asgi, default loop and runtime",
            tls_args=lambda d: ["--ssl-certificate", str(d / "cert.pem"), "--ssl-keyfile", str(d / "key.pem")],
            static_args=lambda d: ["--static-path-route", "/static", "--static-path-mount", str(d),
                                   "--static-path-expires", "0"],
            h2_argv=lambda argv: argv + ["--http", "2"], h2_note="--http 2"),
        "hypercorn": ServerSpec(
            "hypercorn", "hypercorn", "hypercorn",
            lambda app, port, w: [PY, "-m", "hypercorn", "-b", f"{HOST}:{port}", "-w", str(w),
                                  "-k", hyper_loop, "--log-level", "warning",
                                  "--keep-alive", str(KEEP_ALIVE_S), app],
            note=f"-k {hyper_loop}",
            tls_args=lambda d: ["--certfile", str(d / "cert.pem"), "--keyfile", str(d / "key.pem")],
            h2_argv=lambda argv: argv, h2_note="as is (h2c with prior knowledge, ALPN h2 with TLS)"),
        "gunicorn": ServerSpec(
            "gunicorn", "gunicorn", "gunicorn",
            lambda app, port, w: [PY, "-m", "gunicorn", "-b", f"{HOST}:{port}", "-w", str(w),
                                  "-k", gworker or "uvicorn.workers.UvicornWorker",
                                  "--log-level", "warning", "--keep-alive", str(KEEP_ALIVE_S),
                                  *gunicorn_extra, app],
            multi_only=True, note=f"-k {gworker}"),
        # The physical limit for the TLS workloads: Debian's nginx, one worker, no Python.
        "nginx": ServerSpec("nginx", "nginx", "nginx", _nginx_command, tls_only=True,
                            note="one worker, `return 200` / a static file", tls_args=lambda d: [],
                            static_args=lambda d: []),
    }
    return specs


def _uvicorn_tls(d: Path) -> List[str]:
    return ["--ssl-certfile", str(d / "cert.pem"), "--ssl-keyfile", str(d / "key.pem")]


def _uvicorn_h2_argv(argv: List[str]) -> List[str]:
    """uvicorn's own HTTP/2 (0.54+): --http zttp --http2 in place of --http httptools."""
    out = list(argv)
    i = out.index("--http")
    out[i + 1] = "zttp"
    return out + ["--http2"]


def h2_missing_reason(spec: ServerSpec) -> Optional[str]:
    """Why a server that is installed cannot serve the HTTP/2 workloads here (None: it can)."""
    if spec.h2_argv is None:
        return "no HTTP/2 in this benchmark"
    if spec.name == "uvicorn":
        if not _has("zttp"):
            return "zttp is not installed (uvicorn's --http zttp --http2 needs it)"
        try:
            h = subprocess.run([PY, "-m", "uvicorn", "--help"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            h = ""
        if "--http2" not in h:
            return f"uvicorn {_version('uvicorn')} has no --http2"
    return None


NGINX_DIR: Optional[Path] = None  # set in main(): the certificate, the config, the static file
STATIC_DIR: Optional[Path] = None  # set in main(): the files of the static workloads (NGINX_DIR/static)
STATIC_APP = "apps:static_files"


def _nginx_command(app: str, port: int, workers: int) -> List[str]:
    """nginx with a config for this port: TLS, `return 200` with hello's body, and the 1 MiB
    body of apps:stream as a static file."""
    d = NGINX_DIR
    body = d / "stream.bin"
    if not body.exists():
        body.write_bytes(b"y" * (1 << 20))
    conf = d / f"nginx-{port}.conf"
    location = (f"location / {{ default_type application/octet-stream; root {d}; try_files /stream.bin =404; }}"
                if app == "apps:stream"
                else 'location / { default_type text/plain; return 200 "Hello, world!"; }')
    listen = (f"listen {HOST}:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem; "
              "ssl_protocols TLSv1.2 TLSv1.3;")
    if app == STATIC_APP:
        # The static workloads, over plain HTTP: STATIC_DIR (= d/static) under /static with the
        # settings a static-file nginx is deployed with (sendfile, full packets).
        listen = f"listen {HOST}:{port};"
        location = (f"sendfile on; tcp_nopush on; default_type application/octet-stream; "
                    f"location /static/ {{ root {d}; }}")
    # As root, nginx's worker would switch to "nobody", which cannot read the temporary directory.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}
worker_processes 1;
daemon off;
pid {d}/nginx-{port}.pid;
error_log {d}/nginx-{port}.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_timeout {KEEP_ALIVE_S}s;
  keepalive_requests 1000000;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{
    {listen}
    {location}
  }}
}}
""")
    return ["nginx", "-c", str(conf), "-e", str(d / f"nginx-{port}.err")]


def _gunicorn_extra_args() -> List[str]:
    """Newer gunicorn opens a control socket in ~/.gunicorn: switch it off where it exists."""
    try:
        h = subprocess.run([PY, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--no-control-socket"] if "--no-control-socket" in h else []


def server_missing_reason(spec: ServerSpec) -> Optional[str]:
    if spec.name == "nginx":
        return None if shutil.which("nginx") else "nginx is not installed (Debian: nginx-light)"
    if not _has(spec.module):
        return f"{spec.package} is not installed"
    if spec.name == "gunicorn":
        if _gunicorn_worker_class() is None:
            return "no UvicornWorker (uvicorn.workers / uvicorn_worker) installed"
        if not _has("uvicorn"):
            return "uvicorn is not installed"
    return None


# --------------------------------------------------------------------------- /proc helpers

def _read_stat(pid: int) -> Optional[List[str]]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces: fields after the last ')'
    rest = data[data.rfind(")") + 2:].split()
    return rest  # rest[0] is field 3 (state)


def session_pids(sid: int) -> List[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read_stat(int(entry))
        if st is None:
            continue
        # field 6 = session -> rest index 3
        if int(st[3]) == sid:
            out.append(int(entry))
    return out


def tree_cpu_split(sid: int) -> Tuple[float, float]:
    """(user, system) CPU seconds of every process in the session, reaped children included."""
    user = system = 0
    for pid in session_pids(sid):
        st = _read_stat(pid)
        if st is None:
            continue
        # utime(14) stime(15) cutime(16) cstime(17) -> rest indices 11..14
        user += int(st[11]) + int(st[13])
        system += int(st[12]) + int(st[14])
    return user / CLK_TCK, system / CLK_TCK


def tree_cpu_seconds(sid: int) -> float:
    return sum(tree_cpu_split(sid))


def _status_kib(pid: int, key: str) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> Optional[int]:
    st = _read_stat(pid)
    return int(st[1]) if st else None


HELPER_RE = re.compile(r"multiprocessing\.(resource_tracker|semaphore_tracker|forkserver)")


def worker_pids(root: int) -> List[int]:
    """The processes that serve requests: the leaves of the server's session (helpers such as
    multiprocessing's resource tracker excluded), or the root itself if it has no children."""
    pids = [p for p in session_pids(root) if not HELPER_RE.search(_cmdline(p))]
    parents = {_ppid(p) for p in pids}
    leaves = [p for p in pids if p not in parents]
    return sorted(leaves) or [root]


class RssSampler(threading.Thread):
    """Samples VmRSS of every worker of a server while a measurement runs."""

    def __init__(self, root: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak: Dict[int, int] = {}       # pid -> max VmRSS KiB
        self.hwm: Dict[int, int] = {}
        self._halt = threading.Event()

    def sample_once(self) -> None:
        for pid in worker_pids(self.root):
            rss = _status_kib(pid, "VmRSS")
            if rss is not None and rss > self.peak.get(pid, 0):
                self.peak[pid] = rss

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample_once()
            self._halt.wait(self.interval)

    def finish(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.sample_once()
        for pid in worker_pids(self.root):
            hwm = _status_kib(pid, "VmHWM")
            if hwm is not None:
                self.hwm[pid] = hwm


def server_cpus(root: int) -> str:
    """The CPUs the server's processes may run on (Cpus_allowed_list), joined: one value when
    --pin held for all of them."""
    lists = set()
    for pid in session_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Cpus_allowed_list:"):
                        lists.add(line.split(":", 1)[1].strip())
        except OSError:
            pass
    return ",".join(sorted(lists))


def cpu_times() -> Dict[str, Tuple[int, int]]:
    """Per CPU (cpu0, cpu1, ...): (busy, total) clock ticks since boot, from /proc/stat."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
                    out[name] = (sum(v[:8]) - idle, sum(v[:8]))
    except OSError:
        pass
    return out


def workers_rss_kib(root: int) -> int:
    return sum(_status_kib(p, "VmRSS") or 0 for p in worker_pids(root))


# --------------------------------------------------------------------------- server process

LIVE: List["Server"] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerFailed(RuntimeError):
    pass


class Server:
    def __init__(self, spec: ServerSpec, app: str, workers: int, logdir: Path, tag: str, tls: bool = False,
                 h2: bool = False):
        self.spec, self.app, self.workers, self.tls, self.h2 = spec, app, workers, tls, h2
        self.log_path = logdir / f"{tag}-{spec.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0

    def start(self) -> None:
        last_err = ""
        for _attempt in range(2):      # a free port can be taken between probe and bind: retry once
            self.port = free_port()
            cmd = self.spec.build(self.app, self.port, self.workers)
            if self.h2:
                cmd = self.spec.h2_argv(cmd)
            if PIN_SERVER is not None:
                # taskset execs the server: same pid, and every process and thread it starts
                # inherits the mask.
                cmd = ["taskset", "-c", PIN_SERVER] + cmd
            if self.tls:
                cmd += self.spec.tls_args(NGINX_DIR)
            if self.app == STATIC_APP and callable(self.spec.static_args):
                cmd += self.spec.static_args(STATIC_DIR)
            env = dict(os.environ)
            env["PYTHONPATH"] = str(BENCH_DIR) + os.pathsep + env.get("PYTHONPATH", "")
            env.pop("WEB_CONCURRENCY", None)
            logf = open(self.log_path, "ab")
            logf.write(("$ " + " ".join(cmd) + "\n").encode())
            logf.flush()
            self.proc = subprocess.Popen(cmd, cwd=BENCH_DIR, env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
            logf.close()
            LIVE.append(self)
            try:
                self._wait_ready()
                return
            except ServerFailed as e:
                last_err = str(e)
                self.stop()
        raise ServerFailed(last_err)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"exited with status {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.h2:   # (granian --http 2 answers no HTTP/1 request)
                    status = h2_get_status(self.port, "/", timeout=2.0, tls=self.tls)
                else:
                    status = http_get_status(self.port, "/", timeout=2.0, tls=self.tls)
                if status is not None:
                    # all the workers up too (the root answers alone only when it is the worker)
                    if self.workers <= 1 or len(worker_pids(self.proc.pid)) >= self.workers:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise ServerFailed(f"not answering after {STARTUP_TIMEOUT:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 8) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        sid = self.proc.pid
        try:
            os.killpg(sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # whatever is left in the session (the group, then any process that left it)
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in session_pids(sid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self in LIVE:
            LIVE.remove(self)


def stop_all() -> None:
    for s in list(LIVE):
        try:
            s.stop()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"could not stop {s.spec.name}: {e}")


def _on_signal(signum, _frame):
    stop_all()
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- HTTP helpers

def _read_response(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if m:
        need = int(m.group(1))
        while len(body) < need:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            body += chunk
    elif re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            body += chunk
    return head


def http_get_status(port: int, path: str, timeout: float, method: str = "GET", body: bytes = b"",
                    content_type: Optional[str] = None, tls: bool = False) -> Optional[int]:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
    if body or method != "GET":
        head += f"Content-Length: {len(body)}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        s = raw
        if tls:
            import ssl

            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(raw)
        s.sendall(head.encode() + b"\r\n" + body)
        head = _read_response(s)
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- wrk

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"err_connect":%.0f,"err_read":%.0f,"err_write":%.0f,"err_status":%.0f,"err_timeout":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"mean_us":%.1f,"max_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def lua_script(method: str, body: Optional[str], content_type: Optional[str], delay_ms: int = 0,
               close: bool = False) -> str:
    parts = []
    if close:
        parts.append('wrk.headers["Connection"] = "close"')
    if delay_ms:
        parts.append(f"delay = function() return {delay_ms} end")
    if method != "GET":
        parts.append(f'wrk.method = "{method}"')
    if body is not None:
        parts.append(f"wrk.body = {body}")
    if content_type:
        parts.append(f'wrk.headers["Content-Type"] = "{content_type}"')
    return "\n".join(parts) + "\n" + LUA_DONE


def _run_client(cmd: List[str], duration: int) -> Tuple[subprocess.CompletedProcess, float]:
    """Runs the load generator (pinned with --pin); returns it and the CPU seconds it used
    (user + system, from the rusage of reaped children: the only child reaped meanwhile)."""
    if PIN_CLIENT is not None:
        cmd = ["taskset", "-c", PIN_CLIENT] + cmd
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} did not finish in time")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, cpu


def run_wrk(port: int, path: str, duration: int, connections: int, threads: int, script: Path,
            tls: bool = False) -> dict:
    if CLIENT == "h2load":
        return run_h2load_h1(port, path, duration, connections, threads, tls)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
           "--timeout", "10s", "-s", str(script), f"{'https' if tls else 'http'}://{HOST}:{port}{path}"]
    proc, client_cpu = _run_client(cmd, duration)
    m = re.search(r"^BENCH_JSON (\{.*\})$", proc.stdout, re.M)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-300:]} {proc.stdout.strip()[-300:]}")
    res = json.loads(m.group(1))
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6) if res["duration_us"] else 0.0
    res["errors"] = sum(res[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    res["client_cpu_s"] = client_cpu
    return res


_H2LOAD_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def run_h2load_h1(port: int, path: str, duration: int, connections: int, threads: int, tls: bool) -> dict:
    """nghttp2's h2load speaking HTTP/1.1 (--h1): the --client h2load load generator, for GET
    workloads on kept-alive connections. It reports a mean latency, not percentiles."""
    cmd = ["h2load", "--h1", "-t", str(threads), "-c", str(connections), "-D", str(duration),
           _h2load_url(port, path, tls)]
    proc, client_cpu = _run_client(cmd, duration)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stderr.strip()[-300:]} {proc.stdout.strip()[-300:]}")
    res = parse_h2load(proc.stdout)
    lat = re.search(r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)",
                    proc.stdout, re.M)
    secs = res["h2load_elapsed_s"]
    res.update({"duration_us": secs * 1e6, "rps": res["requests"] / secs if secs else 0.0,
                "p50_us": None, "p90_us": None, "p99_us": None,
                "mean_us": float(lat.group(5)) * _H2LOAD_UNITS[lat.group(6)] if lat else None,
                "max_us": float(lat.group(3)) * _H2LOAD_UNITS[lat.group(4)] if lat else None,
                "client_cpu_s": client_cpu})
    return res


# --------------------------------------------------------------------------- h2load (HTTP/2)

H2LOAD_FINISHED_RE = re.compile(r"^finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", re.M)
H2LOAD_REQUESTS_RE = re.compile(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                                r"(\d+) failed, (\d+) errored, (\d+) timeout", re.M)
H2LOAD_STATUS_RE = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.M)


def parse_h2load(stdout: str) -> dict:
    """h2load's summary: requests/s and every request that did not succeed with a 2xx.
    Raises if the lines are missing (h2load could not run at all)."""
    fin = H2LOAD_FINISHED_RE.search(stdout)
    req = H2LOAD_REQUESTS_RE.search(stdout)
    st = H2LOAD_STATUS_RE.search(stdout)
    if not (fin and req and st):
        raise RuntimeError(f"h2load printed no summary: {stdout.strip()[-400:]}")
    total, started, done, succeeded, failed, errored, timeout = (int(x) for x in req.groups())
    s2xx, s3xx, s4xx, s5xx = (int(x) for x in st.groups())
    elapsed = float(fin.group(1)) / {"us": 1e6, "ms": 1e3, "s": 1.0}[fin.group(2)]
    res = {"h2load_rps": float(fin.group(3)), "h2load_elapsed_s": elapsed,
           "h2_total": total, "h2_started": started, "h2_done": done, "succeeded": succeeded,
           "failed": failed, "errored": errored, "timeout": timeout,
           "status_2xx": s2xx, "status_3xx": s3xx, "status_4xx": s4xx, "status_5xx": s5xx}
    # h2load's "failed" already holds the errored and timed-out requests and the 4xx/5xx
    # answers (its "succeeded" = a 2xx or 3xx status); a 3xx is an error here too.
    res["errors"] = failed + s3xx
    # What the table calls requests: the ones answered 2xx.
    res["requests"] = s2xx
    return res


def _h2load_url(port: int, path: str, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://{HOST}:{port}{path}"


def h2_get_status(port: int, path: str, timeout: float, tls: bool = False) -> Optional[int]:
    """One HTTP/2 GET with h2load (h2c prior knowledge, or ALPN h2): its status class
    (200 for any 2xx), or None when it got no answer."""
    try:
        proc = subprocess.run(["h2load", "-n", "1", "-c", "1", "-m", "1", "-T", str(max(1, int(timeout))),
                               "-N", str(max(1, int(timeout))), _h2load_url(port, path, tls)],
                              capture_output=True, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return None
    try:
        r = parse_h2load(proc.stdout)
    except RuntimeError:
        return None
    if r["status_2xx"]:
        return 200
    for code in (3, 4, 5):
        if r[f"status_{code}xx"]:
            return code * 100
    return None


def run_h2load(port: int, path: str, duration: int, connections: int, streams: int, tls: bool = False,
               rps_per_client: int = 0, log_file: Optional[Path] = None) -> dict:
    """h2load -c CONNECTIONS -m STREAMS -D DURATION: requests/s, errors, and p50/p90/p99 from
    the per-request log (microseconds until the end of each response)."""
    cmd = ["h2load", "-t", "1", "-c", str(connections), "-m", str(streams), "-D", str(duration)]
    if rps_per_client:
        cmd += [f"--rps={rps_per_client}"]
    own_log = log_file is None
    if own_log:
        fd, name = tempfile.mkstemp(prefix="h2load-", suffix=".tsv")
        os.close(fd)
        log_file = Path(name)
    cmd += ["--log-file", str(log_file), _h2load_url(port, path, tls)]
    try:
        proc, client_cpu = _run_client(cmd, duration)
        if proc.returncode != 0:
            raise RuntimeError(f"h2load failed ({proc.returncode}): {proc.stderr.strip()[-300:]} "
                               f"{proc.stdout.strip()[-300:]}")
        res = parse_h2load(proc.stdout)
        res["client_cpu_s"] = client_cpu
        lat = []
        with open(log_file) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) >= 3 and cols[1].startswith("2"):
                    lat.append(int(cols[2]))
    finally:
        if own_log:
            log_file.unlink(missing_ok=True)
    lat.sort()
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: None)
    res.update({"p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99),
                "max_us": lat[-1] if lat else None,
                "mean_us": (sum(lat) / len(lat)) if lat else None})
    # Requests/s of the 2xx answers over the measured duration (h2load's own figure counts
    # every "succeeded" request, a 5xx included).
    res["duration_us"] = duration * 1e6
    res["rps"] = res["requests"] / duration if duration else 0.0
    return res


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_str(b: bytes) -> bytes:
    assert len(b) < 127   # (one-byte length: enough for the bench's authority and paths)
    return bytes([len(b)]) + b


def _h2_get_request(port: int, path: str, stream: int = 1) -> bytes:
    """HEADERS (END_STREAM, END_HEADERS) of GET path: HPACK static-table entries, literals
    without indexing, no Huffman coding."""
    block = b"\x82\x86"                                    # :method GET, :scheme http
    block += b"\x84" if path == "/" else b"\x04" + _hpack_str(path.encode())   # :path
    block += b"\x01" + _hpack_str(f"{HOST}:{port}".encode())                      # :authority
    return _h2_frame(0x1, 0x5, stream, block)


def _read_h2_until_answered(sock: socket.socket) -> None:
    """Reads frames until the server's SETTINGS came (ACKed) and stream 1 ended."""
    buf = b""
    settings = ended = False
    while not (settings and ended):
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            buf = buf[9 + length:]
            if ftype == 0x4 and not flags & 0x1:          # SETTINGS (not an ACK)
                sock.sendall(_h2_frame(0x4, 0x1, 0))
                settings = True
            elif ftype in (0x0, 0x1) and sid == 1 and flags & 0x1:   # DATA/HEADERS with END_STREAM
                ended = True
            elif ftype == 0x3 and sid == 1:                # RST_STREAM
                raise ConnectionError("stream 1 reset")
            elif ftype == 0x7:                             # GOAWAY
                raise ConnectionError("GOAWAY before the answer")
        if settings and ended:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the HTTP/2 answer")
        buf += chunk


def open_idle_h2_connections(port: int, n: int) -> List[socket.socket]:
    """n HTTP/2 connections (h2c, prior knowledge) that each exchange the preface and SETTINGS
    (both ACKed) and complete one GET /, then stay open and idle."""
    hello = H2_PREFACE + _h2_frame(0x4, 0, 0) + _h2_get_request(port, "/")
    return _open_answered_connections(port, n, hello, _read_h2_until_answered)


# --------------------------------------------------------------------------- workloads

@dataclass
class Workload:
    name: str
    title: str
    app: str
    path: str = "/"
    method: str = "GET"
    body: Optional[str] = None        # Lua expression
    content_type: Optional[str] = None
    workers: int = 1
    connections: int = 64
    idle: bool = False
    delay_ms: int = 0                 # wrk delay() between a connection's requests (a trickle)
    py_body: bytes = b""              # the same body, for the check request before measuring
    tls: bool = False                 # over TLS (the servers with tls_args, and nginx)
    close: bool = False               # a new connection per request (Connection: close): handshake-bound
    static: bool = False              # a file of STATIC_DIR (servers with static_args)
    h2: bool = False                  # HTTP/2 with h2load (servers with h2_argv); connections x streams
    streams: int = 1                  # h2load -m: concurrent streams per connection
    smoke: bool = True                # run by --smoke (the HTTP/2 workloads: only h2c_hello)


POST_JSON = '{"name":"widget","price":9.99,"quantity":3,"tags":["a","b","c"]}'

WORKLOADS = [
    Workload("hello", "Raw ASGI hello world (--workers 1)", "apps:hello"),
    Workload("raw_10k", "Raw ASGI 10 KiB response", "apps:ten_k"),
    Workload("fastapi_json", "FastAPI small JSON (--workers 1)", "apps:fastapi_app", path="/json"),
    Workload("fastapi_post", "FastAPI path + query params + Pydantic JSON POST body", "apps:fastapi_app",
             path="/items/42?q=bench&limit=10", method="POST", body="'" + POST_JSON + "'",
             content_type="application/json", py_body=POST_JSON.encode()),
    Workload("stream_1m", "1 MiB streamed download (16 x 64 KiB, more_body)", "apps:stream", connections=16),
    Workload("upload_1m", "1 MiB upload read by the app", "apps:upload", method="POST",
             body='string.rep("u", 1048576)', content_type="application/octet-stream", connections=16,
             py_body=b"u" * 1048576),
    Workload("idle_1000", f"{IDLE_CONNECTIONS} idle keep-alive connections + a trickle of requests", "apps:hello",
             connections=4, delay_ms=5, idle=True),
    Workload("hello_w2", "Raw ASGI hello world (--workers 2)", "apps:hello", workers=2, connections=128),
    Workload("fastapi_json_w2", "FastAPI small JSON (--workers 2)", "apps:fastapi_app", path="/json", workers=2,
             connections=128),
    Workload("tls_hello", "Raw ASGI hello world over TLS, keep-alive", "apps:hello", tls=True),
    Workload("tls_new_conn", "Raw ASGI hello world over TLS, a new connection (handshake) per request", "apps:hello",
             tls=True, close=True, connections=16),
    Workload("tls_stream_1m", "1 MiB streamed download over TLS", "apps:stream", tls=True, connections=16),
    Workload("static_10k", "10 KiB static file (the server's own static files; uvicorn: Starlette's StaticFiles)",
             STATIC_APP, path="/static/10k.bin", static=True),
    Workload("static_1m", "1 MiB static file (the server's own static files; uvicorn: Starlette's StaticFiles)",
             STATIC_APP, path="/static/1m.bin", static=True, connections=16),
    # HTTP/2 (h2load): 64 connections x 10 concurrent streams; the 1 MiB download with
    # 16 connections x 1 stream (as stream_1m's 16 connections: 160 MiB in flight would
    # measure the loopback's buffers, not the servers).
    *[Workload(f"{proto}_{name}", f"{title} over HTTP/2 ({'TLS, ALPN h2' if proto == 'h2tls' else 'h2c, prior knowledge'})",
               app, path=path, h2=True, tls=proto == "h2tls", connections=conns, streams=streams,
               smoke=proto == "h2c" and name == "hello")
      for proto in ("h2c", "h2tls")
      for name, title, app, path, conns, streams in (
          ("hello", "Raw ASGI hello world", "apps:hello", "/", 64, 10),
          ("raw_10k", "Raw ASGI 10 KiB response", "apps:ten_k", "/", 64, 10),
          ("fastapi_json", "FastAPI small JSON", "apps:fastapi_app", "/json", 64, 10),
          ("stream_1m", "1 MiB streamed download (16 x 64 KiB, more_body)", "apps:stream", "/", 16, 1))],
    Workload(f"h2c_idle_{IDLE_CONNECTIONS}",
             f"{IDLE_CONNECTIONS} idle HTTP/2 connections (h2c) + a trickle of requests", "apps:hello",
             connections=4, idle=True, h2=True, smoke=False),
]
# h2load --rps per connection in the HTTP/2 idle workload's trickle (wrk's 5 ms delay() in idle_1000)
H2_IDLE_TRICKLE_RPS = 200


def open_idle_connections(port: int, n: int) -> List[socket.socket]:
    """n sockets that each send one request, read the response, then stay open and idle."""
    req = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    return _open_answered_connections(port, n, req, _read_response)


def _open_answered_connections(port: int, n: int, request: bytes,
                               read_answer: Callable[[socket.socket], object]) -> List[socket.socket]:
    """n sockets that each send `request` and read its answer (50 at a time), left open."""
    socks: List[socket.socket] = []
    batch = 50
    try:
        for start in range(0, n, batch):
            group = []
            for _ in range(min(batch, n - start)):
                s = socket.create_connection((HOST, port), timeout=15)
                socks.append(s)
                group.append(s)
                s.sendall(request)
            for s in group:
                read_answer(s)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def count_alive(socks: List[socket.socket]) -> int:
    alive = 0
    for s in socks:
        try:
            s.setblocking(False)
            data = s.recv(1)
            alive += 0 if data == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def check_workload(server: Server, wl: Workload) -> None:
    """One request of the workload must answer 200 before it is measured."""
    if wl.h2:
        status = h2_get_status(server.port, wl.path, 15.0, tls=wl.tls)
        if status != 200:
            raise ServerFailed(f"check request (HTTP/2) GET {wl.path} answered {status}: {server.log_tail(3)}")
        return
    status = http_get_status(server.port, wl.path, 15.0, wl.method, wl.py_body, wl.content_type, tls=wl.tls)
    if status != 200:
        raise ServerFailed(f"check request {wl.method} {wl.path} answered {status}: {server.log_tail(3)}")


def measure(server: Server, wl: Workload, duration: int, threads: int, script: Path) -> dict:
    """One measured wrk run against a running server (CPU + RSS around it)."""
    sampler = RssSampler(server.pid)
    sampler.sample_once()
    sampler.start()
    user0, sys0 = tree_cpu_split(server.pid)
    machine0 = cpu_times()
    try:
        if wl.h2:
            res = run_h2load(server.port, wl.path, duration, wl.connections, wl.streams, tls=wl.tls,
                             rps_per_client=H2_IDLE_TRICKLE_RPS if wl.idle else 0)
        else:
            res = run_wrk(server.port, wl.path, duration, wl.connections, threads, script, tls=wl.tls)
    finally:
        user1, sys1 = tree_cpu_split(server.pid)
        machine1 = cpu_times()
        sampler.finish()
    res["cpu_user_s"], res["cpu_sys_s"] = user1 - user0, sys1 - sys0
    res["cpu_s"] = res["cpu_user_s"] + res["cpu_sys_s"]
    n = res["requests"]
    res["cpu_us_per_req"] = (res["cpu_s"] / n * 1e6) if n else None
    res["cpu_user_us_per_req"] = (res["cpu_user_s"] / n * 1e6) if n else None
    res["cpu_sys_us_per_req"] = (res["cpu_sys_s"] / n * 1e6) if n else None
    # Who was the limit: each side's CPU as a share of one CPU over the run (with --pin each
    # has one CPU: near 100% is saturated).
    wall = res["duration_us"] / 1e6 if res.get("duration_us") else None
    res["client_cpu_us_per_req"] = (res["client_cpu_s"] / n * 1e6) if n and "client_cpu_s" in res else None
    res["server_cpu_pct"] = 100 * res["cpu_s"] / wall if wall else None
    res["client_cpu_pct"] = 100 * res["client_cpu_s"] / wall if wall and "client_cpu_s" in res else None
    res["server_cpus"] = server_cpus(server.pid)
    # Each CPU's busy share over the run, every process counted: above the server's and the
    # load generator's own shares, the rest was other work on the machine.
    res["machine_cpu_pct"] = {c: round(100 * (machine1[c][0] - machine0[c][0]) /
                                       max(1, machine1[c][1] - machine0[c][1]), 1)
                              for c in machine1 if c in machine0}
    res["worker_peak_rss_kib"] = max(sampler.peak.values()) if sampler.peak else None
    res["worker_hwm_kib"] = max(sampler.hwm.values()) if sampler.hwm else None
    res["workers_seen"] = len(sampler.peak)
    if server.proc.poll() is not None:
        raise ServerFailed(f"server exited during the run: {server.log_tail()}")
    return res


def measure_idle(server: Server, wl: Workload, duration: int, threads: int, script: Path, n: int) -> dict:
    # warm the code paths (and the allocator) with a short light run first
    if wl.h2:
        run_h2load(server.port, wl.path, 1, wl.connections, 1, rps_per_client=H2_IDLE_TRICKLE_RPS)
    else:
        run_wrk(server.port, wl.path, 1, wl.connections, 1, script)
    time.sleep(0.5)
    before = workers_rss_kib(server.pid)
    socks = (open_idle_h2_connections if wl.h2 else open_idle_connections)(server.port, n)
    try:
        time.sleep(1.0)
        after = 0
        for _ in range(3):
            time.sleep(0.1)
            after = max(after, workers_rss_kib(server.pid))
        res = measure(server, wl, duration, threads, script)
        res["idle_alive"] = count_alive(socks)
    finally:
        for s in socks:
            s.close()
    res["idle_rss_before_kib"] = before
    res["idle_rss_after_kib"] = after
    res["idle_rss_cost_kib"] = after - before
    res["idle_connections"] = n
    return res


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: List[dict]) -> dict:
    keys_median = ["rps", "p50_us", "p99_us", "mean_us", "cpu_us_per_req", "requests", "errors",
                   "client_cpu_us_per_req", "server_cpu_pct", "client_cpu_pct",
                   "idle_rss_cost_kib", "idle_rss_before_kib", "idle_rss_after_kib", "idle_alive"]
    out = {k: median([r.get(k) for r in runs]) for k in keys_median if any(k in r for r in runs)}
    out["worker_peak_rss_kib"] = max((r["worker_peak_rss_kib"] for r in runs if r.get("worker_peak_rss_kib")), default=None)
    out["worker_hwm_kib"] = max((r["worker_hwm_kib"] for r in runs if r.get("worker_hwm_kib")), default=None)
    out["rounds"] = len(runs)
    for k in ("rps", "cpu_us_per_req"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k + "_min"], out[k + "_max"] = min(vals), max(vals)
    return out


def run_workload(wl: Workload, servers: List[ServerSpec], args, logdir: Path, tmp: Path,
                 skipped: Optional[Dict[str, str]] = None) -> dict:
    script = tmp / f"{wl.name}.lua"
    script.write_text(lua_script(wl.method, wl.body, wl.content_type, wl.delay_ms, wl.close))
    result: dict = {"title": wl.title, "app": wl.app, "path": wl.path, "method": wl.method,
                    "delay_ms": wl.delay_ms,
                    "workers": wl.workers, "connections": wl.connections, "servers": {}}
    if wl.h2:
        result.update({"h2": True, "tls": wl.tls, "streams": wl.streams, "idle": wl.idle,
                       "h2_options": {s.name: s.h2_note for s in servers}})
    runs: Dict[str, List[dict]] = {s.name: [] for s in servers}
    failed: Dict[str, str] = {}
    running: Dict[str, Server] = {}
    try:
        if not wl.idle:
            for spec in servers:
                srv = Server(spec, wl.app, wl.workers, logdir, wl.name, tls=wl.tls, h2=wl.h2)
                try:
                    srv.start()
                    check_workload(srv, wl)
                    if args.warmup > 0 and wl.h2:
                        run_h2load(srv.port, wl.path, args.warmup, wl.connections, wl.streams, tls=wl.tls)
                    elif args.warmup > 0:
                        run_wrk(srv.port, wl.path, args.warmup, wl.connections, args.threads, script, tls=wl.tls)
                    running[spec.name] = srv
                except Exception as e:  # noqa: BLE001
                    failed[spec.name] = f"start/warm-up: {e}"
                    log(f"  {spec.name}: FAILED {e}")
                    srv.stop()
        for rnd in range(args.rounds):
            for spec in servers:
                if spec.name in failed:
                    continue
                try:
                    if wl.idle:
                        srv = Server(spec, wl.app, wl.workers, logdir, wl.name, h2=wl.h2)
                        try:
                            srv.start()
                            check_workload(srv, wl)
                            r = measure_idle(srv, wl, args.duration, 1, script, args.idle_connections)
                        finally:
                            srv.stop()
                    else:
                        r = measure(running[spec.name], wl, args.duration, args.threads, script)
                except Exception as e:  # noqa: BLE001
                    failed[spec.name] = f"round {rnd + 1}: {e}"
                    log(f"  {spec.name}: FAILED {e}")
                    if spec.name in running:
                        running.pop(spec.name).stop()
                    continue
                runs[spec.name].append(r)
                extra = ""
                if wl.idle:
                    extra = (f" idle cost {r['idle_rss_cost_kib'] / 1024:.1f} MiB,"
                             f" alive {r['idle_alive']}/{r['idle_connections']}")
                cpu = r["cpu_us_per_req"]
                ccpu = r.get("client_cpu_us_per_req")
                lat = (f"p50 {r['p50_us'] / 1000:.2f} ms  p99 {(r.get('p99_us') or 0) / 1000:.2f} ms"
                       if r.get("p50_us") is not None else f"mean {(r.get('mean_us') or 0) / 1000:.2f} ms")
                log(f"  round {rnd + 1} {spec.name:10s} {r['rps']:9.0f} req/s  {lat}"
                    f"  cpu {cpu if cpu is None else round(cpu, 1)} us/req"
                    f" (client {ccpu if ccpu is None else round(ccpu, 1)}; busy server {r.get('server_cpu_pct') or 0:.0f}%"
                    f" client {r.get('client_cpu_pct') or 0:.0f}%; CPUs "
                    f"{'/'.join(f'{v:.0f}' for v in (r.get('machine_cpu_pct') or {}).values())}%)"
                    f"  errors {r['errors']}{extra}")
    finally:
        for srv in running.values():
            srv.stop()
    for spec in servers:
        entry = {"runs": runs[spec.name]}
        if runs[spec.name]:
            entry["median"] = summarize(runs[spec.name])
        if spec.name in failed:
            entry["failed"] = failed[spec.name]
        result["servers"][spec.name] = entry
    for name, reason in (skipped or {}).items():
        result["servers"][name] = {"runs": [], "skipped": reason}
    return result


# --------------------------------------------------------------------------- report

def machine_info() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        wrk_version = (wrk_v.stdout + wrk_v.stderr).splitlines()[0].split(" Copyright")[0].strip()
    except Exception:  # noqa: BLE001
        wrk_version = "?"
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "wrk": wrk_version,
        "h2load": _h2load_version(),
    }


def _h2load_version() -> Optional[str]:
    if shutil.which("h2load") is None:
        return None
    try:
        v = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=10)
        return v.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "?"


def _fmt(v, nd=0, scale=1.0):
    if v is None:
        return "–"
    return f"{v / scale:,.{nd}f}"


def _ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def write_markdown(data: dict, out: Path) -> None:
    m = data["machine"]
    L = []
    L.append("# Pronghorn benchmark")
    L.append("")
    L.append(f"- Date: {data['date']}")
    L.append(f"- Machine: {m['cores']} cores, {m['cpu_model']}, Linux {m['kernel']}, Python {m['python']}; "
             f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}")
    s = data["settings"]
    client = m["wrk"] if s.get("client", "wrk") == "wrk" else "h2load --h1 (nghttp2)"
    L.append(f"- Load generator: {client} on the same machine (loopback), "
             f"{data['settings']['threads']} thread(s)"
             + (f"; HTTP/2: {m['h2load']}, 1 thread" if m.get("h2load") and
                any(w.get("h2") for w in data["workloads"].values()) else ""))
    if s.get("pin"):
        server_cpus, client_cpus = s["pin"].split(":")
        L.append(f"- Pinned (--pin {s['pin']}): every process of each server on CPU(s) {server_cpus}, the load "
                 f"generator on CPU(s) {client_cpus}. 'busy' = each side's CPU time over the run's wall time, in % "
                 "of one CPU: the side near 100% was the limit; in brackets each CPU's busy share over the run, "
                 "every process counted (what is above the two sides' shares was other work on the machine).")
    L.append(f"- Method: per workload the servers are measured interleaved for {s['rounds']} round(s) of "
             f"{s['duration']} s each (after a {s['warmup']} s warm-up); the table shows the median of the rounds "
             f"(RSS: the maximum; 'req/s range' = lowest–highest round, a measure of the noise). CPU/req = utime+stime (with children) of the server's whole process tree "
             f"per completed request. RSS/worker = peak VmRSS of one worker process sampled every 50 ms; HWM = VmHWM.")
    if s.get("smoke"):
        L.append("- **Smoke mode**: 1 short round; numbers are not meaningful.")
    L.append("")
    L.append("## Servers")
    L.append("")
    L.append("| server | version | status | options |")
    L.append("|---|---|---|---|")
    for name, info in data["servers"].items():
        L.append(f"| {name} | {info.get('version') or '–'} | {info['status']} | {info.get('note', '')} |")
    if data.get("versions"):
        L.append("")
        L.append("Other versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()))
    L.append("")

    # ratio summary
    L.append("## Summary: ratios to uvicorn (median requests/s ratio; CPU time per request ratio)")
    L.append("")
    servers = [n for n in data["servers"] if n != "uvicorn"]
    L.append("| workload | " + " | ".join(f"{n} rps× | {n} cpu/req×" for n in servers) + " |")
    L.append("|---|" + "---|---|" * len(servers))
    for wname, w in data["workloads"].items():
        base = w["servers"].get("uvicorn", {}).get("median")
        cells = []
        for n in servers:
            med = w["servers"].get(n, {}).get("median")
            if not med or not base:
                cells += ["–", "–"]
                continue
            r = _ratio(med.get("rps"), base.get("rps"))
            c = _ratio(med.get("cpu_us_per_req"), base.get("cpu_us_per_req"))
            cells += [_fmt(r, 2) if r is not None else "–", _fmt(c, 2) if c is not None else "–"]
        L.append(f"| {wname} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("rps× > 1: more requests/s than uvicorn; cpu/req× < 1: less server CPU per request than uvicorn.")
    L.append("")
    # Rounds are interleaved, so round i of two servers ran minutes apart at most: the ratio
    # within each round, and its spread, says more than the ratio of medians on a noisy machine.
    pair_rows = []
    for wname, w in data["workloads"].items():
        for a in data["servers"]:
            for b in ("uvicorn", "nginx"):
                if a in (b, "uvicorn"):
                    continue
                ra, rb = w["servers"].get(a, {}).get("runs", []), w["servers"].get(b, {}).get("runs", [])
                if len(ra) < 2 or len(ra) != len(rb):
                    continue
                rps = [x["rps"] / y["rps"] for x, y in zip(ra, rb) if x.get("rps") and y.get("rps")]
                cpu = [x["cpu_us_per_req"] / y["cpu_us_per_req"] for x, y in zip(ra, rb)
                       if x.get("cpu_us_per_req") and y.get("cpu_us_per_req")]
                if rps and cpu:
                    pair_rows.append(f"| {wname} | {a} ÷ {b} | {median(rps):.2f} ({min(rps):.2f}–{max(rps):.2f}) "
                                     f"| {median(cpu):.2f} ({min(cpu):.2f}–{max(cpu):.2f}) |")
    if pair_rows:
        L.append("Ratios within each round (median of the rounds, lowest–highest):")
        L.append("")
        L.append("| workload | servers | req/s ratio | CPU/req ratio |")
        L.append("|---|---|---|---|")
        L.extend(pair_rows)
        L.append("")

    h2_names = [n for n, w in data["workloads"].items() if w.get("h2") and not w.get("idle")]
    if h2_names:
        peers = [n for n in ("granian", "hypercorn", "uvicorn") if n in data["servers"]]
        L.append("## HTTP/2: pronghorn against its peers (median requests/s ratio; CPU time per request ratio)")
        L.append("")
        L.append("| workload | pronghorn req/s | pronghorn CPU µs/req | "
                 + " | ".join(f"{n} req/s | pronghorn ÷ {n} rps | {n} CPU µs/req" for n in peers) + " |")
        L.append("|---|---|---|" + "---|---|---|" * len(peers))
        for wname in h2_names:
            w = data["workloads"][wname]
            ph = (w["servers"].get("pronghorn") or {}).get("median") or {}
            cells = [_fmt(ph.get("rps")), _fmt(ph.get("cpu_us_per_req"), 1)]
            for n in peers:
                e = w["servers"].get(n) or {}
                med = e.get("median")
                if not med:
                    why = "skipped" if e.get("skipped") else ("failed" if e.get("failed") else "–")
                    cells += [why, "–", "–"]
                    continue
                r = _ratio(ph.get("rps"), med.get("rps"))
                cells += [_fmt(med.get("rps")), (_fmt(r, 2) + "×") if r is not None else "–",
                          _fmt(med.get("cpu_us_per_req"), 1)]
            L.append(f"| {wname} | " + " | ".join(cells) + " |")
        L.append("")
        opts = {}
        for wname in h2_names:
            opts.update(data["workloads"][wname].get("h2_options", {}))
        if opts:
            L.append("HTTP/2 options: " + "; ".join(f"{n} {o}" for n, o in opts.items()) + ".")
        skipped = {}
        for w in data["workloads"].values():
            for n, e in w["servers"].items():
                if e.get("skipped"):
                    skipped[n] = e["skipped"]
        if skipped:
            L.append("Skipped in the HTTP/2 workloads: " + "; ".join(f"{n}: {r}" for n, r in skipped.items()) + ".")
        L.append("")

    for wname, w in data["workloads"].items():
        if not (wname.startswith("idle") or w.get("idle")):
            continue
        idle_rows = []
        base = (w["servers"].get("uvicorn", {}).get("median") or {}).get("idle_rss_cost_kib")
        for n, e in w["servers"].items():
            cost = (e.get("median") or {}).get("idle_rss_cost_kib")
            if cost is not None:
                r = _ratio(cost, base) if base and base > 0 else None
                idle_rows.append(f"{n} {_fmt(cost, 1, 1024)} MiB"
                                 + (f" = {_fmt(cost / data['settings']['idle_connections'], 1)} KiB/conn"
                                    if w.get("h2") else "")
                                 + (f" ({_fmt(r, 2)}× uvicorn)" if r is not None else ""))
        if idle_rows:
            kind = f"HTTP/2 connections ({wname})" if w.get("h2") else "keep-alive connections"
            L.append(f"RSS cost of {data['settings']['idle_connections']} idle {kind}: "
                     + "; ".join(idle_rows) + ".")
            L.append("")

    for wname, w in data["workloads"].items():
        idle = wname.startswith("idle") or bool(w.get("idle"))
        L.append(f"## {wname}: {w['title']}")
        L.append("")
        if w.get("h2"):
            L.append(f"`{w['method']} {w['path']}` on `{w['app']}`, --workers {w['workers']}, "
                     f"h2load -c {w['connections']} -m {w['streams']}"
                     + (f" --rps {H2_IDLE_TRICKLE_RPS}" if idle else "")
                     + f" over {'TLS (ALPN h2)' if w.get('tls') else 'h2c (prior knowledge)'}; "
                     "errors = failed (errored, timed out, 4xx, 5xx) + 3xx answers")
        else:
            L.append(f"`{w['method']} {w['path']}` on `{w['app']}`, --workers {w['workers']}, "
                     f"wrk -c {w['connections']}" + (f", {w['delay_ms']} ms pause between a connection's requests"
                                                     if w.get("delay_ms") else ""))
        if idle and w.get("h2"):
            L.append("")
            L.append(f"Each server is started fresh; after a 1 s warm-up, {data['settings']['idle_connections']} "
                     "HTTP/2 connections (h2c) each send the preface and SETTINGS, ACK the server's SETTINGS and "
                     "complete one GET /, then stay open. Cost = workers' VmRSS 1 s later minus before; then the "
                     "light h2load run below runs while they stay open; 'still open' counts the idle connections "
                     "the server had not closed by the end.")
        elif idle:
            L.append("")
            L.append(f"Each server is started fresh; after a 1 s warm-up, {data['settings']['idle_connections']} "
                     "connections each send one request, read the answer and stay open. Cost = workers' VmRSS "
                     "1 s later minus before; then the light wrk run below runs while they stay open; "
                     "'still open' counts the idle connections the server had not closed by the end.")
        L.append("")
        hdr = ("| server | req/s | req/s range | p50 ms | p99 ms | CPU µs/req | CPU µs/req range | client CPU µs/req "
               "| busy server / client % (each CPU, all processes) | RSS/worker MiB | HWM MiB | errors | rps vs uvicorn | CPU/req vs uvicorn |")
        sep = "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        if idle:
            hdr += " idle RSS before MiB | after MiB | cost of idle conns MiB | KiB/conn | still open |"
            sep += "---|---|---|---|---|"
        L.append(hdr)
        L.append(sep)
        base = w["servers"].get("uvicorn", {}).get("median")
        for n, e in w["servers"].items():
            med = e.get("median")
            if not med and e.get("skipped"):
                L.append(f"| {n} | skipped: {e['skipped'][:150].replace('|', '/')} |")
                continue
            if not med:
                L.append(f"| {n} | failed: {e.get('failed', 'no result')[:150].replace('|', '/')} |")
                continue
            r = _ratio(med.get("rps"), base.get("rps")) if base else None
            c = _ratio(med.get("cpu_us_per_req"), base.get("cpu_us_per_req")) if base else None
            rps_all = [r["rps"] for r in e.get("runs", []) if r.get("rps") is not None]
            spread = f"{_fmt(min(rps_all))}–{_fmt(max(rps_all))}" if rps_all else "–"
            cpu_all = [r["cpu_us_per_req"] for r in e.get("runs", []) if r.get("cpu_us_per_req") is not None]
            cpu_spread = f"{_fmt(min(cpu_all), 1)}–{_fmt(max(cpu_all), 1)}" if cpu_all else "–"
            busy = f"{_fmt(med.get('server_cpu_pct'))} / {_fmt(med.get('client_cpu_pct'))}"
            machine = [r["machine_cpu_pct"] for r in e.get("runs", []) if r.get("machine_cpu_pct")]
            if machine:
                busy += " (CPUs " + "/".join(_fmt(median([m.get(c) for m in machine])) for c in machine[0]) + ")"
            row = (f"| {n} | {_fmt(med['rps'])} | {spread} | {_fmt(med.get('p50_us'), 2, 1000)} | {_fmt(med.get('p99_us'), 2, 1000)} "
                   f"| {_fmt(med['cpu_us_per_req'], 1)} | {cpu_spread} | {_fmt(med.get('client_cpu_us_per_req'), 1)} | {busy} "
                   f"| {_fmt(med['worker_peak_rss_kib'], 1, 1024)} "
                   f"| {_fmt(med['worker_hwm_kib'], 1, 1024)} | {_fmt(med['errors'])} "
                   f"| {_fmt(r, 2)} | {_fmt(c, 2)} |")
            if idle:
                cost = med.get("idle_rss_cost_kib")
                nconn = data["settings"]["idle_connections"]
                row += (f" {_fmt(med.get('idle_rss_before_kib'), 1, 1024)} | {_fmt(med.get('idle_rss_after_kib'), 1, 1024)}"
                        f" | {_fmt(cost, 1, 1024)} | {_fmt(cost / nconn if cost is not None else None, 1)}"
                        f" | {_fmt(med.get('idle_alive'))}/{nconn} |").replace(f"{nconn:,}/", f"{nconn}/")
            if e.get("failed"):
                row += f" (failed later: {e['failed'][:80].replace('|', '/')})"
            L.append(row)
        L.append("")
    if data.get("chart"):
        L.append(f"![requests/s per workload]({data['chart']})")
    else:
        L.append(f"(no chart: {data.get('chart_error', 'matplotlib missing')})")
    L.append("")
    (out / "results.md").write_text("\n".join(L))


def write_chart(data: dict, out: Path) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        data["chart_error"] = f"matplotlib not installed ({e})"
        return None
    # the idle workload's requests are paced (wrk delay()), its requests/s say nothing
    wnames = [w for w in data["workloads"]
              if not data["workloads"][w].get("delay_ms") and not data["workloads"][w].get("idle")]
    if not wnames:
        data["chart_error"] = "no unpaced workload"
        return None
    servers = [n for n, i in data["servers"].items() if i["status"] == "ok"]
    width = 0.8 / max(1, len(servers))
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(wnames)), 5))
    for i, sname in enumerate(servers):
        xs, ys = [], []
        for j, w in enumerate(wnames):
            med = data["workloads"][w]["servers"].get(sname, {}).get("median")
            if med and med.get("rps"):
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(med["rps"])
        ax.bar(xs, ys, width, label=sname)
    ax.set_yscale("log")
    ax.set_xticks(range(len(wnames)))
    ax.set_xticklabels(wnames, rotation=25, ha="right")
    ax.set_ylabel("requests/s (log scale, median)")
    ax.set_title(f"ASGI servers, {data['machine']['cores']} cores, {data['date'][:10]}")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "chart.png", dpi=110)
    plt.close(fig)
    return "chart.png"


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", help=f"comma-separated subset of {','.join(ALL_SERVERS)} and the variants "
                                     "pronghorn-send-thread, pronghorn-no-send-thread, pronghorn-asyncio-tasks, pronghorn-metrics, "
                                     "pronghorn-supervised, pronghorn-base "
                                     "(with PRONGHORN_BASE_PYTHON) (default: all; smoke: "
                                     f"{','.join(SMOKE_SERVERS)})")
    p.add_argument("--workloads", help="comma-separated subset of " + ",".join(w.name for w in WORKLOADS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run (integer)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per server and workload (0: none)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--pin", nargs="?", const="1:0", default=None, metavar="SERVER_CPUS:CLIENT_CPUS",
                   help="pin every process of each server to SERVER_CPUS and the load generator to CLIENT_CPUS "
                        "(taskset lists; default with no value 1:0), the same for every server")
    p.add_argument("--client", choices=["wrk", "h2load"], default="wrk",
                   help="load generator: wrk (default), or h2load --h1 (GET workloads on kept-alive connections)")
    p.add_argument("--idle-connections", type=int, default=IDLE_CONNECTIONS)
    p.add_argument("--smoke", action="store_true", help="1 round of 1 s per workload, no warm-up, 2 servers")
    p.add_argument("--out", default=str(BENCH_DIR / "results"))
    p.add_argument("--render-only", action="store_true",
                   help="measure nothing: rewrite results.md and chart.png from OUT/results.json")
    args = p.parse_args(argv)
    if args.pin is not None and not re.fullmatch(r"[\d,-]+:[\d,-]+", args.pin):
        p.error("--pin takes SERVER_CPUS:CLIENT_CPUS, e.g. 1:0")
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1, 0
        if not args.servers:
            args.servers = ",".join(SMOKE_SERVERS)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render_only:
        out = Path(args.out).resolve()
        data = json.loads((out / "results.json").read_text())
        data.pop("chart", None)
        data.pop("chart_error", None)
        chart = write_chart(data, out)
        if chart:
            data["chart"] = chart
        write_markdown(data, out)
        log(f"rewrote {out / 'results.md'}")
        return 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(stop_all)
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    if shutil.which("wrk") is None:
        log("wrk is not installed (apt-get install -y wrk)")
        return 2
    global PIN_SERVER, PIN_CLIENT, CLIENT
    if args.pin is not None:
        if shutil.which("taskset") is None:
            log("--pin needs taskset (util-linux)")
            return 2
        PIN_SERVER, PIN_CLIENT = args.pin.split(":")
    CLIENT = args.client
    if CLIENT == "h2load" and shutil.which("h2load") is None:
        log("h2load is not installed (apt-get install -y nghttp2-client)")
        return 2

    specs = server_specs()
    wanted = args.servers.split(",") if args.servers else list(ALL_SERVERS)
    unknown = [s for s in wanted if s not in specs]
    if unknown:
        log(f"unknown server(s): {unknown}")
        return 2
    workloads = WORKLOADS
    if args.workloads:
        names = args.workloads.split(",")
        bad = [n for n in names if n not in {w.name for w in WORKLOADS}]
        if bad:
            log(f"unknown workload(s): {bad}")
            return 2
        workloads = [w for w in WORKLOADS if w.name in names]
    if CLIENT == "h2load":
        skipped = [w.name for w in workloads if w.close or w.idle or w.method != "GET" or w.delay_ms]
        if skipped:
            log(f"--client h2load runs GET workloads on kept-alive connections only: skipping {', '.join(skipped)}")
        workloads = [w for w in workloads if w.name not in skipped]

    server_info: Dict[str, dict] = {}
    available: List[ServerSpec] = []
    for name in wanted:
        spec = specs[name]
        reason = server_missing_reason(spec)
        info = {"version": _version(spec.package), "note": spec.note}
        if reason:
            info["status"] = f"missing ({reason})"
            log(f"{name}: MISSING - {reason}")
        else:
            info["status"] = "ok"
            available.append(spec)
        server_info[name] = info
    if not _has("fastapi"):
        log("fastapi is not installed: the FastAPI workloads are skipped")
        workloads = [w for w in workloads if "fastapi" not in w.app]
    if args.smoke and not args.workloads:
        workloads = [w for w in workloads if w.smoke]
    if any(w.h2 for w in workloads) and shutil.which("h2load") is None:
        log("h2load is not installed (Debian: nghttp2-client): the HTTP/2 workloads are skipped")
        workloads = [w for w in workloads if not w.h2]
    # Servers installed but without HTTP/2 here (uvicorn without zttp): skipped in the
    # HTTP/2 workloads with the reason, in the log and the tables.
    h2_skipped: Dict[str, str] = {}
    if any(w.h2 for w in workloads):
        for spec in available:
            if spec.h2_argv is not None and (reason := h2_missing_reason(spec)):
                h2_skipped[spec.name] = reason
                log(f"{spec.name}: HTTP/2 workloads skipped - {reason}")

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "machine": machine_info(),
        "settings": {"rounds": args.rounds, "duration": args.duration, "warmup": args.warmup,
                     "threads": args.threads, "smoke": args.smoke, "idle_connections": args.idle_connections,
                     "pin": args.pin, "client": args.client,
                     "keep_alive_s": KEEP_ALIVE_S},
        "servers": server_info,
        "versions": {k: v for k in ("fastapi", "pydantic", "starlette", "uvloop", "httptools", "matplotlib")
                     if (v := _version(k))},
        "workloads": {},
    }
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pronghorn-bench-") as tmpd:
        tmp = Path(tmpd)
        logdir = tmp / "logs"
        logdir.mkdir()
        global NGINX_DIR
        NGINX_DIR = tmp / "tls"
        NGINX_DIR.mkdir()
        global STATIC_DIR
        STATIC_DIR = NGINX_DIR / "static"
        STATIC_DIR.mkdir()
        (STATIC_DIR / "10k.bin").write_bytes(os.urandom(10 * 1024))
        (STATIC_DIR / "1m.bin").write_bytes(os.urandom(1 << 20))
        os.environ["BENCH_STATIC_DIR"] = str(STATIC_DIR)  # for Starlette's StaticFiles (apps:static_files)
        if any(w.tls for w in workloads):
            # One certificate for every server (ECDSA P-256: the common choice for speed).
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", str(NGINX_DIR / "key.pem"), "-out", str(NGINX_DIR / "cert.pem"),
                            "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
        try:
            for wl in workloads:
                if wl.h2:
                    servers = [s for s in available if s.h2_argv is not None and s.name not in h2_skipped
                               and (s.tls_args is not None or not wl.tls)]
                    log(f"workload {wl.name}: {wl.title} — servers {', '.join(s.name for s in servers)}")
                    data["workloads"][wl.name] = run_workload(wl, servers, args, logdir, tmp, skipped=h2_skipped)
                    continue
                if wl.static:
                    servers = [s for s in available if s.static_args is not None]
                else:
                    servers = [s for s in available if (wl.workers > 1 or not s.multi_only) and
                               (s.tls_args is not None if wl.tls else not s.tls_only)]
                log(f"workload {wl.name}: {wl.title} — servers {', '.join(s.name for s in servers)}")
                data["workloads"][wl.name] = run_workload(wl, servers, args, logdir, tmp)
        finally:
            stop_all()
    data["elapsed_s"] = round(time.monotonic() - t0, 1)
    chart = write_chart(data, out)
    if chart:
        data["chart"] = chart
    (out / "results.json").write_text(json.dumps(data, indent=2))
    write_markdown(data, out)
    if not chart and (out / "chart.png").exists():
        (out / "chart.png").unlink()   # never leave a stale chart from an earlier run
    log(f"done in {data['elapsed_s']} s: {out / 'results.md'}")
    missing = [n for n, i in server_info.items() if i["status"] != "ok"]
    if missing:
        log(f"missing servers: {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
