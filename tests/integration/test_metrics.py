"""--metrics: the supervisor's /metrics endpoint (docs/metrics.md), scraped as
Prometheus would and parsed with prometheus_client's parser; and a real
Prometheus server (Debian's `prometheus`) scraping a server under load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import HERE

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(90)]

PRONGHORN = str(Path(sys.executable).parent / "pronghorn")
APP = "apps.raw_app:app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout: float, what: str, srv=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    extra = f"\n--- stderr ---\n{srv.stderr}" if srv is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")


def children(ppid: int) -> set[int]:
    """Live children of ppid, from /proc."""
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
        if int(fields[1]) == ppid and fields[0] not in ("Z", "X"):
            out.add(int(entry))
    return out


class Metrics:
    """One scrape: the samples by name and labels, parsed by prometheus_client."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, tuple], float] = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name: str, **labels) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def total(self, name: str, **match) -> float:
        """The sum of the samples named `name` whose labels include `match`."""
        return sum(v for (n, labels), v in self.samples.items()
                   if n == name and all(dict(labels).get(k) == x for k, x in match.items()))

    def requests(self) -> float:
        return self.total("pronghorn_requests_total")


def scrape(port: int) -> Metrics:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Metrics(r.text)


def raw_request(port: int, request: bytes) -> bytes:
    """Sends one request on its own connection and reads the response to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def get_fixed(port: int, times: int) -> None:
    """GET /fixed `times` times, each on its own connection (Connection:
    close, so that every worker gets some). Raw sockets: httpx.get costs
    ~55 ms a call (its SSL context), ~190 ms in the ASan run."""
    for _ in range(times):
        response = raw_request(port, b"GET /fixed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 200 "), response[:200]


def start(server_factory, *args, workers: int = 2, app: str = APP):
    port = free_port()
    srv = server_factory(app, "--workers", str(workers), "--metrics", "--metrics-bind", f"127.0.0.1:{port}", *args)
    srv.wait_for_log(r"Metrics on http://127\.0\.0\.1:\d+/metrics")
    wait_until(lambda: srv.stderr.count("is ready") >= workers, 20, "workers ready", srv)
    return srv, port


def test_counts_over_two_workers(server_factory):
    srv, mport = start(server_factory)
    n = 200
    # A connection each (Connection: close), so both workers serve some.
    get_fixed(srv.port, n)
    statuses = {"/status?code=404": 3, "/status?code=500": 2, "/redirect": 1, "/status?code=204": 4}
    for path, times in statuses.items():
        for _ in range(times):
            httpx.get(srv.url + path, timeout=5)
    httpx.post(f"{srv.url}/echo", content=b"x" * 100, timeout=5)
    httpx.request("PROPFIND", f"{srv.url}/status?code=207", timeout=5)
    m = scrape(mport)
    assert m.get("pronghorn_requests_total", method="GET", status="2xx") == n + 4
    assert m.get("pronghorn_requests_total", method="GET", status="4xx") == 3
    assert m.get("pronghorn_requests_total", method="GET", status="5xx") == 2
    assert m.get("pronghorn_requests_total", method="GET", status="3xx") == 1
    assert m.get("pronghorn_requests_total", method="POST", status="2xx") == 1
    assert m.get("pronghorn_requests_total", method="other", status="2xx") == 1
    total = n + 10 + 2
    assert m.requests() == total
    # The histogram saw every request, and is cumulative.
    assert m.get("pronghorn_request_duration_seconds_count") == total
    assert m.get("pronghorn_request_duration_seconds_bucket", le="+Inf") == total
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in m.samples.items()
                     if name == "pronghorn_request_duration_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert 0 < m.get("pronghorn_request_duration_seconds_sum") < total
    # Both workers served: each has its resident memory and loop lag shown.
    assert m.get("pronghorn_workers") == 2
    rss = m.total("pronghorn_worker_resident_memory_bytes")
    assert rss > 2 * 5 << 20
    assert len([1 for (name, _), _ in m.samples.items() if name == "pronghorn_event_loop_lag_seconds"]) == 2
    assert m.get("pronghorn_worker_starts_total", reason="initial") == 2
    assert m.get("pronghorn_open_connections") == 0
    assert m.get("pronghorn_requests_in_flight") == 0
    assert m.get("pronghorn_accept_queue_length") == 0
    assert m.get("pronghorn_accept_queue_capacity") == 2048
    for family in m.families.values():
        assert family.name.startswith("pronghorn_")
        assert family.documentation, family.name


def test_bytes_are_exact(server_factory):
    srv, mport = start(server_factory, workers=1)
    before = scrape(mport)
    sent = received = 0
    for i in range(5):
        request = f"GET /fixed?i={i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        response = raw_request(srv.port, request)
        assert response.startswith(b"HTTP/1.1 200 ")
        sent += len(request)
        received += len(response)
    after = scrape(mport)
    assert after.get("pronghorn_received_bytes_total") - before.get("pronghorn_received_bytes_total") == sent
    assert after.get("pronghorn_sent_bytes_total") - before.get("pronghorn_sent_bytes_total") == received


def test_in_flight_and_open_connections(server_factory):
    srv, mport = start(server_factory, workers=1)
    idle = socket.create_connection(srv.addr, timeout=5)
    busy = socket.create_connection(srv.addr, timeout=5)
    busy.sendall(b"GET /sleep?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    m = wait_until(lambda: (x := scrape(mport)).get("pronghorn_requests_in_flight") == 1 and x, 5, "in flight")
    assert m.get("pronghorn_open_connections") == 2
    idle.close()
    busy.close()
    m = wait_until(lambda: (x := scrape(mport)).get("pronghorn_open_connections") == 0 and x, 5, "closed")
    # The request the client left is counted with status "none".
    m = wait_until(lambda: (x := scrape(mport)).get("pronghorn_requests_in_flight") == 0 and x, 5, "ended")
    assert m.get("pronghorn_requests_total", method="GET", status="none") == 1


def test_invalid_heads_are_counted_apart(server_factory):
    srv, mport = start(server_factory, workers=1)
    assert raw_request(srv.port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    m = scrape(mport)
    assert m.get("pronghorn_invalid_requests_total") == 1
    assert m.requests() == 0


def test_killed_worker_is_a_crash_and_counters_do_not_go_backwards(server_factory):
    srv, mport = start(server_factory)
    get_fixed(srv.port, 50)
    before = scrape(mport)
    assert before.requests() == 50
    workers = children(srv.pid)
    assert len(workers) == 2
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    srv.wait_for_log(rf"Child process \[{victim}\] died")
    wait_until(lambda: srv.stderr.count("is ready") >= 3, 20, "the replacement", srv)
    after = scrape(mport)
    assert after.get("pronghorn_worker_exits_total", reason="crash") == 1
    assert after.get("pronghorn_worker_starts_total", reason="crash") == 1
    assert after.get("pronghorn_workers") == 2
    # The dead worker's counts were folded into the totals: nothing was lost.
    assert after.requests() == before.requests()
    for key, value in before.samples.items():
        if key[0].endswith(("_total", "_count", "_bucket", "_sum")):
            assert after.samples[key] >= value, key
    get_fixed(srv.port, 10)
    assert scrape(mport).requests() == 60


def test_recycling_by_max_requests_shows_its_reason(server_factory):
    srv, mport = start(server_factory, "--limit-max-requests", "10", workers=1)
    get_fixed(srv.port, 15)
    wait_until(lambda: scrape(mport).get("pronghorn_worker_exits_total", reason="max_requests") >= 1, 20,
               "the recycled worker's exit", srv)
    m = scrape(mport)
    assert m.get("pronghorn_worker_starts_total", reason="max_requests") >= 1
    assert m.get("pronghorn_worker_exits_total", reason="crash") == 0
    # The recycled worker's requests were folded into the totals, exactly.
    assert m.requests() == 15
    get_fixed(srv.port, 10)
    assert scrape(mport).requests() == 25


def test_sighup_reload_and_scaling_show_their_reasons(server_factory):
    srv, mport = start(server_factory)
    srv.send_signal(signal.SIGHUP)
    srv.wait_for_log("Reload complete", timeout=30)
    wait_until(lambda: scrape(mport).get("pronghorn_worker_exits_total", reason="reload") == 2, 10, "reload exits",
               srv)
    srv.send_signal(signal.SIGTTIN)
    wait_until(lambda: scrape(mport).get("pronghorn_worker_starts_total", reason="scale") == 1, 10, "scale up", srv)
    wait_until(lambda: srv.stderr.count("is ready") >= 5, 20, "the added worker", srv)
    srv.send_signal(signal.SIGTTOU)
    wait_until(lambda: scrape(mport).get("pronghorn_worker_exits_total", reason="scale") == 1, 10, "scale down",
               srv)
    m = scrape(mport)
    assert m.get("pronghorn_worker_starts_total", reason="reload") == 2
    assert m.get("pronghorn_workers") == 2


def _listening_ports(pids) -> set[int]:
    """TCP ports the processes listen on (their socket inodes matched against /proc/net/tcp*)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_off_listens_on_no_other_port(server_factory):
    srv = server_factory(APP, "--workers", "2")
    wait_until(lambda: srv.stderr.count("is ready") >= 2, 20, "workers ready", srv)
    assert _listening_ports({srv.pid} | children(srv.pid)) == {srv.port}
    assert "Metrics on" not in srv.stderr


def test_metrics_with_one_worker_and_from_the_environment(server_factory):
    port = free_port()
    srv = server_factory(APP, env={"PRONGHORN_METRICS": "1", "PRONGHORN_METRICS_BIND": f"127.0.0.1:{port}"})
    wait_until(lambda: "is ready" in srv.stderr, 20, "the worker", srv)
    # One worker, under a supervisor: the parent serves the metrics, the worker the app.
    assert _listening_ports({srv.pid}) == {port, srv.port}
    httpx.get(f"{srv.url}/fixed", timeout=5)
    assert scrape(port).requests() == 1


def test_only_get_metrics_is_served(server_factory):
    srv, mport = start(server_factory, workers=1)
    assert httpx.get(f"http://127.0.0.1:{mport}/", timeout=5).status_code == 404
    assert httpx.post(f"http://127.0.0.1:{mport}/metrics", timeout=5).status_code == 405
    assert httpx.head(f"http://127.0.0.1:{mport}/metrics", timeout=5).status_code == 200
    # A head that never ends is refused at its bound; the server goes on.
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 8192)
        assert s.recv(100).startswith(b"HTTP/1.1 431 ")
    assert scrape(mport).requests() == 0


def run_pronghorn(*args, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([PRONGHORN, APP, *args], cwd=HERE, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1"})


def test_a_metrics_bind_that_cannot_be_bound_is_one_line_and_exit_1():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_pronghorn("--port", str(free_port()), "--metrics", "--metrics-bind", f"127.0.0.1:{port}")
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == [f"ERROR:    --metrics-bind 127.0.0.1:{port}: bind failed: Address already in use (errno 98)"], \
        r.stderr
    assert "Spawned worker" not in r.stderr


@pytest.mark.parametrize("value", ["nonsense", "127.0.0.1", "127.0.0.1:99999", "::1:9090", ":9090"])
def test_a_malformed_metrics_bind_is_a_usage_error(value):
    r = run_pronghorn("--metrics", "--metrics-bind", value)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--metrics-bind" in lines[0], r.stderr


def test_metrics_bind_without_metrics_is_a_usage_error():
    r = run_pronghorn("--metrics-bind", "127.0.0.1:9999")
    assert r.returncode == 2
    assert "--metrics-bind needs --metrics" in r.stderr


# -- a real Prometheus server ------------------------------------------------------------------

PROMETHEUS = shutil.which("prometheus")


def prometheus_query(port: int, query: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    body = httpx.get(url, timeout=5).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def prometheus_value(port: int, query: str) -> float | None:
    result = prometheus_query(port, query)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed (scripts/setup.sh installs it)")
def test_prometheus_scrapes_the_supervisor(server_factory, tmp_path):
    srv, mport = start(server_factory)
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: pronghorn\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                return prometheus_value(prom_port, 'up{job="pronghorn"}') == 1
            except (httpx.HTTPError, json.JSONDecodeError):
                return False

        wait_until(up, 60, "Prometheus scraping the supervisor")
        # Bounded load: 2,000 requests over a few keep-alive connections each to
        # a new connection, so that both workers serve.
        sent = 0
        for _ in range(40):
            with httpx.Client(headers={"connection": "keep-alive"}, timeout=5) as client:
                for _ in range(50):
                    assert client.get(f"{srv.url}/fixed").status_code == 200
                    sent += 1
        assert sent == 2000
        query = 'sum(pronghorn_requests_total{job="pronghorn"})'
        wait_until(lambda: prometheus_value(prom_port, query) == sent, 30,
                   f"Prometheus to see {sent} requests (last: {prometheus_value(prom_port, query)})")
        assert prometheus_value(prom_port, 'sum(pronghorn_requests_total{method="GET",status="2xx"})') == sent
        assert prometheus_value(prom_port, "pronghorn_request_duration_seconds_count") == sent

        # A worker killed: a crash exit and a crash start, and the request
        # count does not drop (Prometheus would read a drop as a counter reset).
        victim = min(children(srv.pid))
        os.kill(victim, signal.SIGKILL)
        srv.wait_for_log(rf"Child process \[{victim}\] died")
        wait_until(lambda: prometheus_value(prom_port, 'pronghorn_worker_exits_total{reason="crash"}') == 1, 30,
                   "Prometheus to see the crash")
        wait_until(lambda: prometheus_value(prom_port, 'pronghorn_worker_starts_total{reason="crash"}') == 1, 30,
                   "Prometheus to see the replacement")
        assert prometheus_value(prom_port, query) == sent
        assert prometheus_value(prom_port, "sum(resets(pronghorn_requests_total[5m]))") == 0
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()


def test_a_blocked_loop_shows_as_lag_then_as_a_health_check_exit(server_factory):
    srv, mport = start(server_factory, "--timeout-worker-healthcheck", "3", workers=1, app="apps.workers_app:app")
    assert scrape(mport).get("pronghorn_event_loop_lag_seconds", slot="0") < 0.5
    blocked = socket.create_connection(srv.addr, timeout=10)
    blocked.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
    # While the loop is blocked no heartbeat comes: the lag grows.
    wait_until(lambda: scrape(mport).get("pronghorn_event_loop_lag_seconds", slot="0") >= 1.0, 10, "lag", srv)
    wait_until(lambda: scrape(mport).get("pronghorn_worker_exits_total", reason="healthcheck") == 1, 15,
               "the health check's kill", srv)
    m = scrape(mport)
    assert m.get("pronghorn_worker_starts_total", reason="healthcheck") == 1
    assert m.get("pronghorn_worker_exits_total", reason="crash") == 0
    blocked.close()


def test_a_websocket_counts_once_as_1xx_and_its_bytes(server_factory):
    from websockets.sync.client import connect

    srv, mport = start(server_factory, workers=1, app="apps.ws_app:raw")
    with connect(f"ws://127.0.0.1:{srv.port}/echo", compression=None) as ws:
        ws.send("x" * 1000)
        assert ws.recv() == "x" * 1000
        m = scrape(mport)
        # Accepted: one request, 1xx, in flight while open; no duration observed.
        assert m.get("pronghorn_requests_total", method="GET", status="1xx") == 1
        assert m.get("pronghorn_requests_in_flight") == 1
        assert m.get("pronghorn_open_connections") == 1
        assert m.get("pronghorn_request_duration_seconds_count") == 0
        assert m.get("pronghorn_received_bytes_total") > 1000
        assert m.get("pronghorn_sent_bytes_total") > 1000
    wait_until(lambda: scrape(mport).get("pronghorn_requests_in_flight") == 0, 5, "the WebSocket's end", srv)
    assert scrape(mport).requests() == 1


def test_http2_streams_are_counted(server_factory):
    """Each HTTP/2 stream is a request: counted by method and status, with its duration."""
    srv, mport = start(server_factory, "--http2", workers=1)
    with httpx.Client(http1=False, http2=True, base_url=srv.url, timeout=5) as client:  # h2c, prior knowledge
        for _ in range(5):
            r = client.get("/fixed")
            assert r.status_code == 200 and r.http_version == "HTTP/2"
        assert client.get("/status?code=404").status_code == 404
        assert client.post("/echo", content=b"abc").status_code == 200
    m = scrape(mport)
    assert m.get("pronghorn_requests_total", method="GET", status="2xx") == 5
    assert m.get("pronghorn_requests_total", method="GET", status="4xx") == 1
    assert m.get("pronghorn_requests_total", method="POST", status="2xx") == 1
    assert m.get("pronghorn_request_duration_seconds_count") == 7
