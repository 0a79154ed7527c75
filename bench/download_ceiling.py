#!/usr/bin/env python3
"""How far above uvicorn any server can get on the 1 MiB download here.

The issue's target for the 1 MiB streamed download is 2x uvicorn's throughput.
This script measures, interleaved in the same run, with the benchmark's own
load (wrk, 16 connections, bench/run.py's measurement of CPU per request):

- ceiling:   bench/ceiling_server.c, a C server with no application and no
             Python that sends the same bytes from one prebuilt buffer; the
             kernel's cost of the download and nothing else;
- pronghorn: `pronghorn apps:stream`, as in the benchmark;
- uvicorn:   `uvicorn apps:stream`, as in the benchmark;

and, alone, the cost of the Python app call: apps.stream driven with a send()
that does nothing, in CPU time per request.

If the ceiling's throughput is below 2x uvicorn's, no server can meet the
target on this machine.

    cd bench && ../.venv/bin/python download_ceiling.py [--rounds 5] [--duration 4]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import apps
import run  # bench/run.py: servers, workloads, measurement

WORKLOAD = "stream_1m"


def build_ceiling(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler (cc/gcc) to build bench/ceiling_server.c")
    exe = tmp / "ceiling_server"
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(run.BENCH_DIR / "ceiling_server.c")], check=True)
    return exe


def app_call_cost_us(n: int = 2000) -> float:
    """CPU time of one call of apps.stream (17 sends) with a send() that does nothing."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "path": "/", "raw_path": b"/", "query_string": b"", "headers": []}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message):
        return None

    def one() -> None:
        coro = apps.stream(scope, receive, send)
        try:
            coro.send(None)  # nothing in it waits: it runs to the end in one step
        except StopIteration:
            return
        raise RuntimeError("apps.stream suspended")

    for _ in range(200):
        one()
    t0 = time.process_time()
    for _ in range(n):
        one()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--servers", default="ceiling,ceiling-64k,ceiling-256k,ceiling-sendfile,pronghorn,uvicorn",
                   help="ceiling variants and any of bench/run.py's servers; uvicorn is needed for the ratios")
    args = p.parse_args()
    assert asyncio  # the app is a coroutine function; no event loop is needed to drive it
    workloads = {wl.name: wl for wl in run.WORKLOADS}
    wl = workloads[WORKLOAD]
    tmp = Path(tempfile.mkdtemp(prefix="pronghorn-ceiling-"))
    exe = build_ceiling(tmp)
    specs = run.server_specs()
    # The ceiling server sending the whole response per send() call, and in 64 KiB
    # and 256 KiB calls (which of them is fastest differs from run to run).
    # ceiling-sendfile sends from a memfd with no copy on the sending side: a floor no
    # server of Python bytes bodies can reach, shown for how much the send copy weighs.
    for label, per_send in (("ceiling", 0), ("ceiling-64k", 65536), ("ceiling-256k", 262144),
                            ("ceiling-sendfile", "sendfile")):
        specs[label] = run.ServerSpec(label, label, label,
                                      lambda _app, port, _w, n=per_send: [str(exe), str(port), str(n)])
    servers = [run.Server(specs[name], wl.app, 1, tmp, WORKLOAD) for name in args.servers.split(",")]
    script = tmp / "stream.lua"
    script.write_text(run.lua_script(wl.method, wl.body, wl.content_type))
    results = {s.spec.name: [] for s in servers}
    try:
        for srv in servers:
            srv.start()
            run.check_workload(srv, wl)
            run.run_wrk(srv.port, wl.path, 1, wl.connections, 1, script)  # warm-up
        for rnd in range(args.rounds):
            for srv in servers:
                r = run.measure(srv, wl, args.duration, 1, script)
                rps = r["requests"] / (r["duration_us"] / 1e6)
                results[srv.spec.name].append((rps, r["cpu_us_per_req"]))
                print(f"round {rnd + 1} {srv.spec.name:10s} {rps:8.0f} req/s  {r['cpu_us_per_req']:7.0f} us CPU/req",
                      flush=True)
    finally:
        for srv in servers:
            srv.stop()
    uv = statistics.median(r for r, _ in results["uvicorn"])
    print()
    print("| server | req/s (median) | × uvicorn | server CPU µs/req (median) | rounds (req/s) |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        rps = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"| {name} | {rps:,.0f} | {rps / uv:.2f}× | {cpu:,.0f} | {' '.join(f'{r:.0f}' for r, _ in rows)} |")
    print()
    print(f"apps.stream called alone (17 sends to a send() that does nothing): {app_call_cost_us():.1f} µs CPU/call")


if __name__ == "__main__":
    main()
