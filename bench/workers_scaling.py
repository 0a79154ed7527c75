#!/usr/bin/env python3
"""CPU time per request with 2 workers against 1 worker, measured in pairs.

The issue's target "with 2 workers, CPU time per request stays within 10% of
the 1-worker figure" compares two measurements. On a shared machine whose speed
drifts, bench/run.py measures them minutes apart (hello, then hello_w2). This
script starts both servers (1 and 2 workers) side by side and alternates short
wrk runs between them, so each 2-worker figure has a 1-worker figure taken
seconds before it; it reports the median of the per-pair ratios.

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
                ratios, cpu1, cpu2 = [], [], []
                for _ in range(args.pairs):
                    r1 = run.measure(servers[0], one, args.duration, 1, script)
                    r2 = run.measure(servers[1], two, args.duration, 1, script)
                    cpu1.append(r1["cpu_us_per_req"])
                    cpu2.append(r2["cpu_us_per_req"])
                    ratios.append(r2["cpu_us_per_req"] / r1["cpu_us_per_req"])
                print(f"{wl_name:13s} {name:10s} 1 worker {statistics.median(cpu1):7.1f} us/req  "
                      f"2 workers {statistics.median(cpu2):7.1f} us/req  "
                      f"pair ratios {' '.join(f'{r:.2f}' for r in ratios)}  median {statistics.median(ratios):.2f}",
                      flush=True)
            finally:
                for srv in servers:
                    srv.stop()


if __name__ == "__main__":
    main()
