#!/usr/bin/env python3
"""WebSocket benchmark: Pronghorn against uvicorn (websockets-sansio and wsproto), granian and
hypercorn, with a C load client (bench/ws_load.c) that is not the bottleneck.

Workloads (each server measured in interleaved rounds; the median is reported):
  echo_1       small text messages (32 B) echoed on 1 connection: messages/s, server CPU per message
  echo_64      the same on 64 connections
  broadcast_32 one message to 32 clients (the server's app sends it to each): deliveries/s
  bin64k       64 KiB binary messages echoed on 8 connections, without compression
  bin64k_defl  the same with permessage-deflate offered by the client
  idle_10k     RSS per idle WebSocket with 10,000 connections open (with and without compression)

Usage: python bench/ws_bench.py [--servers pronghorn,uvicorn,...] [--rounds 3] [--duration 5]
       [--workloads echo_1,echo_64,...] [--idle 10000] [--out bench/results/ws]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (the HTTP benchmark's server handling, CPU and RSS accounting)

BENCH = Path(__file__).resolve().parent
CLIENT = BENCH / "build" / "ws_load"

WORKLOADS = {
    # name: (path, mode, connections, size, binary, deflate)
    "echo_1": ("/echo", "echo", 1, 32, 0, 0),
    "echo_64": ("/echo", "echo", 64, 32, 0, 0),
    "broadcast_32": ("/broadcast", "broadcast", 32, 32, 0, 0),
    "bin64k": ("/echo", "echo", 8, 65536, 1, 0),
    "bin64k_defl": ("/echo", "echo", 8, 65536, 1, 1),
}


def server_specs() -> dict:
    specs = harness.server_specs()
    out = {name: specs[name] for name in ("pronghorn", "granian", "hypercorn") if name in specs}
    uv = specs["uvicorn"]
    for impl in ("websockets-sansio", "wsproto"):
        out[f"uvicorn-{impl}"] = harness.ServerSpec(
            f"uvicorn-{impl}", "uvicorn", "uvicorn",
            (lambda build, impl: lambda app, port, w: build(app, port, w) + ["--ws", impl])(uv.build, impl),
            note=f"{uv.note} --ws {impl}")
    return out


def build_client() -> None:
    CLIENT.parent.mkdir(exist_ok=True)
    src = BENCH / "ws_load.c"
    if not CLIENT.exists() or CLIENT.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-o", str(CLIENT), str(src), "-lz"], check=True)


def run_client(port: int, path: str, mode: str, conns: int, seconds: float, size: int, binary: int,
               deflate: int) -> dict:
    out = subprocess.run([str(CLIENT), str(port), path, mode, str(conns), str(seconds), str(size), str(binary),
                          str(deflate)], capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise harness.ServerFailed(f"ws_load failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(server: "harness.Server", workload: str, seconds: float) -> dict:
    path, mode, conns, size, binary, deflate = WORKLOADS[workload]
    cpu0 = harness.tree_cpu_seconds(server.pid)
    res = run_client(server.port, path, mode, conns, seconds, size, binary, deflate)
    cpu = harness.tree_cpu_seconds(server.pid) - cpu0
    n = res["messages"]
    res["messages_per_s"] = n / res["seconds"] if res["seconds"] else 0
    res["cpu_us_per_message"] = cpu / n * 1e6 if n else None
    res["server_cpu_s"] = cpu
    return res


def measure_idle(server: "harness.Server", n: int, deflate: int) -> dict:
    base = harness.workers_rss_kib(server.pid)
    proc = subprocess.Popen([str(CLIENT), str(server.port), "/idle", "idle", str(n), "30", "8", "0", str(deflate)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise harness.ServerFailed(f"idle client: {line} {proc.stderr.read()[-300:]}")
        time.sleep(1.0)
        held = harness.workers_rss_kib(server.pid)
    finally:
        proc.kill()
        proc.wait()
    return {"connections": n, "rss_base_kib": base, "rss_kib": held,
            "kib_per_connection": (held - base) / n if n else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="pronghorn,uvicorn-websockets-sansio,uvicorn-wsproto,granian,hypercorn")
    ap.add_argument("--workloads", default="echo_1,echo_64,broadcast_32,bin64k,bin64k_defl,idle")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--idle", type=int, default=10000, help="connections for the idle workload")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "ws")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4 * args.idle + 1024)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    build_client()
    specs = server_specs()
    names = [s for s in args.servers.split(",") if s]
    missing = [s for s in names if s not in specs or harness.server_missing_reason(specs[s])]
    for s in missing:
        harness.log(f"skipping {s}: not installed")
    names = [s for s in names if s not in missing]
    workloads = [w for w in args.workloads.split(",") if w]
    args.out.mkdir(parents=True, exist_ok=True)
    logdir = args.out / "logs"
    logdir.mkdir(exist_ok=True)
    results: dict = {w: {s: [] for s in names} for w in workloads}
    if "idle" in workloads:
        # Memory, once per server and setting, each in a fresh server: freed memory is not
        # given back to the system, so a second measurement in the same process would start
        # from a higher baseline.
        for name in names:
            for deflate in (0, 1):
                server = harness.Server(specs[name], "apps:ws", 1, logdir, f"ws-idle{deflate}")
                try:
                    server.start()
                    r = measure_idle(server, args.idle, deflate)
                    results["idle"][name].append({"deflate": deflate, **r})
                    harness.log(f"{name} idle deflate={deflate}: {r['kib_per_connection']:.1f} KiB/conn")
                except harness.ServerFailed as e:
                    harness.log(f"{name}: {e}")
                finally:
                    server.stop()
    for rnd in range(args.rounds):
        for name in (names if rnd % 2 == 0 else list(reversed(names))):
            server = harness.Server(specs[name], "apps:ws", 1, logdir, f"ws-r{rnd}")
            try:
                server.start()
                for w in workloads:
                    if w == "idle":
                        continue
                    r = measure(server, w, args.duration)
                    results[w][name].append(r)
                    cpu = r["cpu_us_per_message"]
                    harness.log(f"round {rnd} {name} {w}: {r['messages_per_s']:.0f} msg/s, "
                                f"{cpu if cpu is None else round(cpu, 1)} us CPU/msg, errors {r['errors']}")
            except harness.ServerFailed as e:
                harness.log(f"{name}: {e}")
            finally:
                server.stop()
    summary: dict = {}
    for w in workloads:
        summary[w] = {}
        for name in names:
            runs = results[w][name]
            if not runs:
                continue
            if w == "idle":
                summary[w][name] = {f"deflate{r['deflate']}_kib_per_conn": r["kib_per_connection"] for r in runs}
                continue
            summary[w][name] = {
                "messages_per_s": statistics.median(r["messages_per_s"] for r in runs),
                "cpu_us_per_message": statistics.median(r["cpu_us_per_message"] for r in runs
                                                        if r["cpu_us_per_message"] is not None),
                "errors": sum(r["errors"] for r in runs),
                "deflate_negotiated": all(r.get("deflate") for r in runs),
            }
    (args.out / "results.json").write_text(json.dumps({"runs": results, "summary": summary}, indent=1))
    lines = ["| workload | server | messages/s | CPU µs/message | pronghorn's ratio |", "|---|---|---|---|---|"]
    for w in workloads:
        if w == "idle":
            continue
        base = summary[w].get("pronghorn", {}).get("messages_per_s")
        for name, s in summary[w].items():
            ratio = f"{base / s['messages_per_s']:.2f}×" if base and s["messages_per_s"] else ""
            note = "" if not WORKLOADS[w][5] or s["deflate_negotiated"] else " (no compression negotiated)"
            lines.append(f"| {w} | {name}{note} | {s['messages_per_s']:.0f} | {s['cpu_us_per_message']:.1f} | {ratio} |")
    if "idle" in summary:
        lines += ["", f"| idle ({args.idle} connections) | KiB/conn, no compression | KiB/conn, deflate offered |",
                  "|---|---|---|"]
        for name, s in summary["idle"].items():
            lines.append(f"| {name} | {s.get('deflate0_kib_per_conn', 0):.1f} | {s.get('deflate1_kib_per_conn', 0):.1f} |")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
