"""Smoke test of the benchmark driver (bench/run.py): it runs end to end and writes its outputs.

Runs `bench/run.py --smoke` (1 round of 1 s per workload) against pronghorn and uvicorn
and checks that results.json / results.md (and chart.png when matplotlib is there) exist
with a row with positive requests/s for every workload and server.  No assertion on speed.
Of the HTTP/2 workloads (h2load) the smoke run has h2c_hello; uvicorn serves it only with
the zttp package, and is reported skipped with that reason otherwise.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_PY = REPO / "bench" / "run.py"
SERVERS = ["pronghorn", "uvicorn"]


def _workload_names():
    import importlib.util

    name = "_pronghorn_bench_run"
    spec = importlib.util.spec_from_file_location(name, RUN_PY)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        return [w.name for w in mod.WORKLOADS if w.smoke], {w.name for w in mod.WORKLOADS if w.h2}
    finally:
        sys.modules.pop(name, None)


def _has(mod):
    import importlib.util

    return importlib.util.find_spec(mod) is not None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_smoke(tmp_path):
    if shutil.which("wrk") is None or shutil.which("h2load") is None:
        pytest.skip("wrk or h2load is not installed")
    for mod in ("pronghorn", "uvicorn", "fastapi", "uvloop", "httptools"):
        if not _has(mod):
            pytest.skip(f"{mod} is not installed")
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--smoke", "--servers", ",".join(SERVERS), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    results_json = out / "results.json"
    results_md = out / "results.md"
    assert results_json.is_file() and results_md.is_file()
    if _has("matplotlib"):
        assert (out / "chart.png").is_file() and (out / "chart.png").stat().st_size > 0

    data = json.loads(results_json.read_text())
    md = results_md.read_text()
    workloads, h2_workloads = _workload_names()
    assert set(data["workloads"]) == set(workloads)
    assert "h2c_hello" in workloads
    for name in workloads:
        w = data["workloads"][name]
        assert f"## {name}:" in md
        for server in SERVERS:
            entry = w["servers"].get(server)
            assert entry is not None, f"{name}: no entry for {server}"
            if name in h2_workloads and server == "uvicorn" and not _has("zttp"):
                assert "zttp is not installed" in entry.get("skipped", ""), entry
                assert f"| {server} | skipped: " in md
                continue
            assert "failed" not in entry, f"{name}/{server}: {entry.get('failed')}"
            med = entry["median"]
            assert med["rps"] > 0, f"{name}/{server}: {med}"
            assert med["requests"] > 0
            assert f"| {server} | " in md
        if name.startswith("idle"):
            for server in SERVERS:
                assert "idle_rss_cost_kib" in w["servers"][server]["median"]
    for server in SERVERS:
        assert data["servers"][server]["status"] == "ok"
    # HTTP/2: errors are counted, not hidden (none expected from a working server)
    h2 = data["workloads"]["h2c_hello"]["servers"]["pronghorn"]["runs"][0]
    assert h2["errors"] == 0 and h2["failed"] == 0 and h2["status_2xx"] == h2["requests"] > 0, h2
    assert "## HTTP/2: pronghorn against its peers" in md


@pytest.mark.timeout(300)
def test_a_peer_that_is_not_installed_is_reported_missing(tmp_path):
    """The issue: "a peer that cannot be installed is reported as missing, not skipped silently"."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    # Hide hypercorn from the driver's Python (an import hook in sitecustomize).
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'hypercorn' or name.startswith('hypercorn.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(hide))
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--smoke", "--servers", "pronghorn,hypercorn", "--workloads", "hello",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hypercorn: MISSING - hypercorn is not installed" in proc.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["servers"]["hypercorn"]["status"] == "missing (hypercorn is not installed)"
    assert data["servers"]["pronghorn"]["status"] == "ok"
    md = (out / "results.md").read_text()
    assert "| hypercorn |" in md and "missing (hypercorn is not installed)" in md
    assert data["workloads"]["hello"]["servers"]["pronghorn"]["median"]["rps"] > 0


def _decode_chunked_responses(raw: bytes):
    """Splits raw bytes into (head, body) pairs of chunked HTTP/1.1 responses."""
    out = []
    while raw:
        head, sep, raw = raw.partition(b"\r\n\r\n")
        assert sep, f"incomplete head: {head[:100]!r}"
        body = b""
        while True:
            size_line, _, raw = raw.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                assert raw.startswith(b"\r\n"), "no CRLF after the last chunk"
                raw = raw[2:]
                break
            body += raw[:size]
            assert raw[size:size + 2] == b"\r\n", "chunk not followed by CRLF"
            raw = raw[size + 2:]
        out.append((head, body))
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_download_ceiling(tmp_path):
    """bench/download_ceiling.py, the measured ceiling of the 1 MiB download (docs/performance.md):
    its C server sends the bytes apps:stream sends, answers pipelined requests on one kept-alive
    connection, honours Connection: close, and the script reports every server it measured."""
    if shutil.which("wrk") is None or shutil.which("cc") is None:
        pytest.skip("wrk or cc is not installed")
    import importlib.util
    import socket
    import time

    spec = importlib.util.spec_from_file_location("_pronghorn_bench_apps", REPO / "bench" / "apps.py")
    apps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(apps)
    expected = apps.CHUNK * apps.CHUNKS

    exe = tmp_path / "ceiling_server"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(REPO / "bench" / "ceiling_server.c")],
                   check=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(exe), str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "the ceiling server did not listen"
                time.sleep(0.05)
        with sock:
            req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(req + req + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(1 << 20):  # ends only if the server closes after the third
                raw += chunk
    finally:
        server.kill()
        server.wait()
    responses = _decode_chunked_responses(raw)
    assert len(responses) == 3
    for head, body in responses:
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert body == expected

    proc = subprocess.run(
        [sys.executable, "download_ceiling.py", "--rounds", "1", "--duration", "1",
         "--servers", "ceiling,ceiling-sendfile,pronghorn,uvicorn"],
        cwd=REPO / "bench", capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("ceiling", "ceiling-sendfile", "pronghorn", "uvicorn"):
        row = [line for line in proc.stdout.splitlines() if line.startswith(f"| {name} |")]
        assert len(row) == 1, proc.stdout
        rps = float(row[0].split("|")[2].replace(",", ""))
        assert rps > 0, row
    assert "| uvicorn | " in proc.stdout and "| 1.00× |" in proc.stdout
    assert "apps.stream called alone" in proc.stdout
