"""Measures worker memory with and without --preload, and the parent's RSS.

Starts `pronghorn examples.main:app --workers N` twice (with and without
--preload), waits until every worker is ready, and reads Pss/Rss from
/proc/PID/smaps_rollup of each worker and of the parent. Prints a markdown table.

    .venv/bin/python scripts/measure_memory.py [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRONGHORN = Path(sys.executable).parent / "pronghorn"


def rollup(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        m = re.match(r"(\w+):\s+(\d+) kB", line)
        if m:
            values[m.group(1)] = int(m.group(2))
    return values


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def measure(workers: int, preload: bool) -> dict:
    args = [str(PRONGHORN), "examples.main:app", "--port", "0", "--workers", str(workers), "--no-access-log"]
    if preload:
        args.append("--preload")
    proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready = 0
        deadline = time.monotonic() + 60
        while ready < workers and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError("server exited")
            if "Application startup complete." in line:
                ready += 1
        time.sleep(1.0)
        parent = proc.pid
        kids = children(parent)
        return {
            "parent_rss_kib": rollup(parent)["Rss"],
            "parent_pss_kib": rollup(parent)["Pss"],
            "worker_pss_kib": [rollup(k)["Pss"] for k in kids],
            "worker_rss_kib": [rollup(k)["Rss"] for k in kids],
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4)
    workers = parser.parse_args().workers
    print(f"| mode ({workers} workers, examples.main:app) | parent RSS | parent PSS | worker PSS (mean) | worker RSS (mean) | total PSS |")
    print("|---|---|---|---|---|---|")
    for preload in (False, True):
        m = measure(workers, preload)
        mean_pss = sum(m["worker_pss_kib"]) / len(m["worker_pss_kib"])
        mean_rss = sum(m["worker_rss_kib"]) / len(m["worker_rss_kib"])
        total = m["parent_pss_kib"] + sum(m["worker_pss_kib"])
        print(
            f"| {'--preload' if preload else 'default'} | {m['parent_rss_kib'] / 1024:.1f} MiB | "
            f"{m['parent_pss_kib'] / 1024:.1f} MiB | {mean_pss / 1024:.1f} MiB | {mean_rss / 1024:.1f} MiB | "
            f"{total / 1024:.1f} MiB |"
        )


if __name__ == "__main__":
    main()
