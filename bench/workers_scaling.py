#!/usr/bin/env python3
"""CPU time per request with 2 workers against 1 worker, measured in pairs.

The issue's target "with 2 workers, CPU time per request stays within 10% of
the 1-worker figure" compares two measurements. On a shared machine whose speed
drifts, bench/run.py measures them minutes apart (hello, then hello_w2). This
script starts both servers (1 and 2 workers) side by side and alternates short
wrk runs between them, so each 2-worker figure has a 1-worker figure taken
seconds before it; it reports the median of the per-pair ratios, and the same
split into user and system time, with the context switches per request.

    ../.venv/bin/python workers_scaling.py [--servers pronghorn,uvicorn] [--workloads hello,fastapi_json]
                                            [--pairs 7] [--duration 4]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import run  # bench/run.py: servers, workloads, measurement

PAIRED = {"hello": "hello_w2", "fastapi_json": "fastapi_json_w2"}


def context_switches(sid: int) -> int:
    """Voluntary and involuntary context switches of every live process in the session."""
    total = 0
    for pid in run.session_pids(sid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def measure_with_switches(server: run.Server, wl: run.Workload, duration: int, script: Path) -> dict:
    before = context_switches(server.pid)
    res = run.measure(server, wl, duration, 1, script)
    res["switches_per_req"] = (context_switches(server.pid) - before) / res["requests"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", default="pronghorn,uvicorn")
    p.add_argument("--workloads", default="hello,fastapi_json")
    p.add_argument("--pairs", type=int, default=7)
    p.add_argument("--duration", type=int, default=4)
    args = p.parse_args()
    specs = run.server_specs()
    workloads = {wl.name: wl for wl in run.WORKLOADS}
    tmp = Path(tempfile.mkdtemp(prefix="pronghorn-scaling-"))
    for wl_name in args.workloads.split(","):
        one, two = workloads[wl_name], workloads[PAIRED[wl_name]]
        script = tmp / f"{wl_name}.lua"
        script.write_text(run.lua_script(one.method, one.body, one.content_type))
        for name in args.servers.split(","):
            spec = specs[name]
            servers = [run.Server(spec, one.app, 1, tmp, f"{wl_name}-1"), run.Server(spec, two.app, 2, tmp, f"{wl_name}-2")]
            try:
                for srv, wl in zip(servers, (one, two)):
                    srv.start()
                    run.check_workload(srv, wl)
                    run.run_wrk(srv.port, wl.path, 1, wl.connections, 1, script)  # warm-up
                keys = ("cpu_us_per_req", "cpu_user_us_per_req", "cpu_sys_us_per_req", "switches_per_req")
                rows = {k: ([], [], []) for k in keys}  # 1 worker, 2 workers, ratio per pair
                for _ in range(args.pairs):
                    pair = [measure_with_switches(srv, wl, args.duration, script)
                            for srv, wl in zip(servers, (one, two))]
                    for k in keys:
                        a, b = pair[0][k], pair[1][k]
                        rows[k][0].append(a)
                        rows[k][1].append(b)
                        rows[k][2].append(b / a if a else float("nan"))
                med = {k: tuple(statistics.median(v) for v in rows[k]) for k in keys}
                ratios = rows["cpu_us_per_req"][2]
                print(f"{wl_name:13s} {name:10s} 1 worker {med['cpu_us_per_req'][0]:7.1f} us/req  "
                      f"2 workers {med['cpu_us_per_req'][1]:7.1f} us/req  "
                      f"pair ratios {' '.join(f'{r:.2f}' for r in ratios)}  median {statistics.median(ratios):.2f}",
                      flush=True)
                print(f"{'':24s} user {med['cpu_user_us_per_req'][0]:.1f} -> {med['cpu_user_us_per_req'][1]:.1f} "
                      f"(median ratio {med['cpu_user_us_per_req'][2]:.2f})  "
                      f"system {med['cpu_sys_us_per_req'][0]:.1f} -> {med['cpu_sys_us_per_req'][1]:.1f} "
                      f"(median ratio {med['cpu_sys_us_per_req'][2]:.2f})  "
                      f"context switches/req {med['switches_per_req'][0]:.3f} -> {med['switches_per_req'][1]:.3f}",
                      flush=True)
            finally:
                for srv in servers:
                    srv.stop()


if __name__ == "__main__":
    main()
