"""Many instances behind a load balancer (docs/load-balancing.md): three Pronghorn instances, each
in its own network namespace joined to this one by a veth pair (or, where namespaces cannot be
made, on 127.0.0.2-4), behind HAProxy and behind nginx, run with the configurations in deploy/
(only the addresses, ports and paths filled in), under a bounded load of a few concurrent
clients that count every failed request:

- a rolling deploy (SIGHUP to each instance in turn, waiting for its new workers): no failure;
- an instance drained in HAProxy (runtime API), stopped with SIGTERM and started again: no failure;
- an instance killed with SIGKILL (every process of it): the proxy routes around it; only
  non-idempotent requests that were running there fail (GETs are retried), counted and bounded;
- behind nginx: the app sees the client's address and scheme from X-Forwarded-For/-Proto
  (trusted through --forwarded-allow-ips), and nginx reuses its connections to the instances.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import HERE, RUNNING_RE, alive, client_env, server_command

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SBIN_PATH = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
HAPROXY = shutil.which("haproxy", path=SBIN_PATH)
NGINX = shutil.which("nginx", path=SBIN_PATH)
IP = shutil.which("ip", path=SBIN_PATH)
OPENSSL = shutil.which("openssl")

INSTANCES = 3
WORKERS = 2
CONCURRENCY = 6        # client threads, each with one keep-alive connection to the proxy
REQUEST_MS = 20        # what each /work request sleeps in the app
CLIENT_ADDR = "127.0.0.77"  # the clients' source address: what the app must see as the client
KILL_POST_MS = 300     # the POSTs of the SIGKILL tests: long, so that some run at the kill
SPOOFED = "6.6.6.6"    # an X-Forwarded-For the clients send themselves: it must not win

if IP is None:
    pytestmark.append(pytest.mark.skip(reason="the `ip` command (Debian: iproute2) is not installed"))
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (Debian: haproxy)")
needs_nginx = pytest.mark.skipif(NGINX is None or OPENSSL is None,
                                 reason="nginx (Debian: nginx-light) or openssl is not installed")


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=check, env=client_env())


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- the network: one namespace per instance, or 127.0.0.x ----------------------------------

class Network:
    """Where the instances live. mode "netns": instance i runs in namespace ns[i] and listens on
    addr[i]:8000, reached over a veth pair whose host end has peer[i] (the address the proxy's
    connections come from, which the instance trusts). mode "loopback": 127.0.0.(2+i) with a
    free port each, and the proxy connects from 127.0.0.1."""

    def __init__(self):
        self.mode = "loopback"
        self.ns: list[str | None] = [None] * INSTANCES
        self.addr: list[str] = []
        self.port: list[int] = []
        self.peer: list[str] = []
        self.host_ifs: list[str] = []
        self.why_not_netns = ""

    def setup(self) -> None:
        if os.geteuid() != 0:
            self.why_not_netns = "not root"
        elif os.environ.get("PRONGHORN_LB_NO_NETNS"):
            self.why_not_netns = "PRONGHORN_LB_NO_NETNS is set"
        else:
            try:
                self._setup_netns()
                self.mode = "netns"
                return
            except subprocess.CalledProcessError as e:
                self.why_not_netns = f"{' '.join(e.cmd)}: {e.stderr.strip()}"
                self.teardown()
        self.ns = [None] * INSTANCES
        self.addr = [f"127.0.0.{2 + i}" for i in range(INSTANCES)]
        self.port = [_free_port(a) for a in self.addr]
        self.peer = ["127.0.0.1"] * INSTANCES

    def _subnet(self) -> str:
        used = _run(IP, "-4", "-o", "addr", "show").stdout
        pid = os.getpid()
        for k in range(250):
            third = (pid + k) % 250 + 1
            prefix = f"10.213.{third}."
            if prefix not in used:
                return prefix
        raise subprocess.CalledProcessError(1, ["choose a subnet"], "", "no free 10.213.x.0/24")

    def _setup_netns(self) -> None:
        pid = os.getpid()
        prefix = self._subnet()
        for i in range(INSTANCES):
            ns, host_if, ns_if = f"pronghorn-lb-{pid}-{i}", f"ph{pid}h{i}", f"ph{pid}n{i}"
            self.ns[i] = ns
            _run(IP, "netns", "add", ns)
            self.host_ifs.append(host_if)
            _run(IP, "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
            host_addr, ns_addr = f"{prefix}{4 * i + 1}", f"{prefix}{4 * i + 2}"
            _run(IP, "addr", "add", f"{host_addr}/30", "dev", host_if)
            _run(IP, "link", "set", host_if, "up")
            _run(IP, "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", ns_if)
            _run(IP, "-n", ns, "link", "set", ns_if, "up")
            _run(IP, "-n", ns, "link", "set", "lo", "up")
            self.addr.append(ns_addr)
            self.port.append(8000)
            self.peer.append(host_addr)

    def teardown(self) -> None:
        for ns in self.ns:
            if ns is None:
                continue
            # Whatever is still running in our namespace (it can only be ours) goes first.
            pids = _run(IP, "netns", "pids", ns, check=False).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run(IP, "netns", "del", ns, check=False)
        for host_if in self.host_ifs:  # gone with its peer's namespace; in case it is not
            _run(IP, "link", "del", host_if, check=False)

    def describe(self) -> str:
        if self.mode == "netns":
            return f"network namespaces {self.ns} at {self.addr} port 8000 (veth pairs)"
        return f"127.0.0.x addresses {list(zip(self.addr, self.port))} (namespaces unavailable: {self.why_not_netns})"

    def connections(self, i: int) -> int | set:
        """A count to compare before and after a load: with namespaces, the TCP connections the
        instance's namespace has accepted (Tcp PassiveOpens is counted per network namespace);
        on 127.0.0.x, the client ends (address, port) of the sockets to the instance's port in
        any state, TIME-WAIT included (60 s: each connection closed since then leaves one)."""
        if self.mode != "netns":
            me = f"{self.addr[i]}:{self.port[i]}"
            ends = set()
            for line in _run("ss", "-tanH").stdout.splitlines():
                fields = line.split()
                if len(fields) >= 5 and fields[0] != "LISTEN" and me in (fields[3], fields[4]):
                    ends.add(fields[4] if fields[3] == me else fields[3])
            return ends
        lines = [ln.split() for ln in _run(IP, "netns", "exec", self.ns[i], "cat", "/proc/net/snmp").stdout.splitlines()
                 if ln.startswith("Tcp:")]
        return int(lines[1][lines[0].index("PassiveOpens")])


_plugins = None  # pytest's plugin manager: the measurements go to the terminal without -s too


def _say(line: str) -> None:
    terminal = _plugins.get_plugin("terminalreporter") if _plugins else None
    capture = _plugins.get_plugin("capturemanager") if _plugins else None
    if terminal is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(line)


@pytest.fixture(scope="module")
def network(request):
    global _plugins
    _plugins = request.config.pluginmanager
    net = Network()
    try:
        net.setup()
        _say(f"\nload balancer tests: {net.describe()}")
        yield net
    finally:
        net.teardown()


# -- the instances -------------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            out.add(int(d))
    return out


class Instance:
    def __init__(self, net: Network, i: int, log_dir: Path):
        self.net, self.i, self.name = net, i, f"web{i + 1}"
        self.addr, self.port = net.addr[i], net.port[i]
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.stderr_path: Path | None = None

    @property
    def target(self) -> str:
        return f"{self.addr}:{self.port}"

    def start(self) -> "Instance":
        self.starts += 1
        prefix = [IP, "netns", "exec", self.net.ns[self.i]] if self.net.mode == "netns" else []
        cmd = prefix + server_command() + [
            "apps.lb_app:app", "--host", self.addr, "--port", str(self.port), "--workers", str(WORKERS),
            "--forwarded-allow-ips", self.net.peer[self.i], "--no-access-log", "--timeout-graceful-shutdown", "10"]
        env = dict(os.environ, LB_INSTANCE=self.name, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
                   NO_COLOR="1")
        self.stderr_path = self.log_dir / f"{self.name}.{self.starts}.stderr.log"
        with open(self.stderr_path, "wb") as err:
            # A session of its own: SIGKILL to the group is the whole instance (parent and workers).
            self.proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready()
        return self

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}\n{self.stderr}")
            if RUNNING_RE.search(self.stderr) and len(self.worker_pids()) == WORKERS:
                try:
                    if httpx.get(f"http://{self.target}/healthz", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready within {timeout}s\n{self.stderr}")

    def worker_pids(self) -> set[int]:
        return _children(self.proc.pid) if self.proc and self.proc.poll() is None else set()

    def reload(self, timeout: float = 30) -> None:
        """SIGHUP, then wait until the supervisor says every worker was replaced."""
        done = self.stderr.count("Reload complete")
        old = self.worker_pids()
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.stderr.count("Reload complete") == done:
            assert time.monotonic() < deadline, f"{self.name}: no 'Reload complete' in {timeout}s\n{self.stderr}"
            assert self.proc.poll() is None, self.stderr
            time.sleep(0.05)
        # The old workers finish what they were serving and exit on their own.
        new = self.worker_pids() - old
        assert len(new) == WORKERS, (old, new)
        _wait_until(lambda: not (self.worker_pids() & old), 15, f"{self.name}'s old workers to exit")
        self.new_workers = new
        # Serving with the new workers: fresh connections straight to the instance land on them.
        for _ in range(4):
            pid = httpx.get(f"http://{self.target}/work", timeout=5).json()["pid"]
            assert pid in new, (pid, new)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL to every process of the instance, as when its machine or container dies."""
        if self.proc is None or self.proc.poll() is not None:
            return
        workers = self.worker_pids()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        _wait_until(lambda: not any(alive(p) for p in workers), 5, f"{self.name}'s workers to die")


@pytest.fixture
def instances(network, tmp_path):
    """The three instances; each one still running at the end must stop with exit code 0."""
    started: list[Instance] = []
    errors = []
    try:
        for i in range(INSTANCES):
            started.append(Instance(network, i, tmp_path).start())
        yield started
    finally:
        for inst in started:
            if inst.proc is None or inst.proc.poll() is not None:
                continue
            try:
                rc = inst.stop(signal.SIGTERM)
            except subprocess.TimeoutExpired:
                rc = "no exit within 20 s"
            if rc != 0:
                errors.append(f"{inst.name}: {rc} after SIGTERM\n{inst.stderr}")
            try:  # a straggler of its own process group
                os.killpg(inst.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if errors:
        pytest.fail("\n".join(errors))


# -- the load ------------------------------------------------------------------------------

class Load:
    """CONCURRENCY client threads, each with one keep-alive connection to the proxy, sending
    /work?ms=REQUEST_MS until stopped (or max_requests / max_seconds, so it is bounded). Every
    request that does not end in a 200 from an instance is a failure."""

    def __init__(self, url: str, *, post_every: int = 0, post_ms: int = REQUEST_MS, verify=False,
                 max_requests: int = 6000, max_seconds: float = 40):
        self.url = url
        self.post_every = post_every
        self.post_ms = post_ms
        self.verify = verify
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.rng = random.Random(13)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.ok: list[dict] = []
        self.failed: list[tuple[str, str]] = []  # (method, what happened)
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CONCURRENCY)]
        self.started_at = 0.0
        self.elapsed = 0.0

    def _next(self) -> tuple[int, str] | None:
        with self.lock:
            if self.stop_event.is_set() or self.sent >= self.max_requests or \
                    time.monotonic() - self.started_at > self.max_seconds:
                return None
            self.sent += 1
            n = self.sent
            # Random, not every n-th: with round robin over 3 instances, every 3rd request would
            # always land on the same instance.
            post = self.post_every and self.rng.randrange(self.post_every) == 0
        return n, ("POST" if post else "GET")

    def _client(self) -> None:
        transport = httpx.HTTPTransport(local_address=CLIENT_ADDR, verify=self.verify)
        with httpx.Client(transport=transport, timeout=15,
                          headers={"x-forwarded-for": SPOOFED, "x-forwarded-proto": "ws"}) as client:
            while (nxt := self._next()) is not None:
                n, method = nxt
                try:
                    ms = self.post_ms if method == "POST" else REQUEST_MS
                    r = client.request(method, f"{self.url}/work?ms={ms}",
                                       content=b"x" * 100 if method == "POST" else None)
                    if r.status_code == 200:
                        self.ok.append(r.json())
                    else:
                        self.failed.append((method, f"{r.status_code} {r.text[:100]!r}"))
                except httpx.HTTPError as e:
                    self.failed.append((method, repr(e)))

    def __enter__(self) -> "Load":
        self.started_at = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)
        self.elapsed = time.monotonic() - self.started_at

    def run_for(self, seconds: float) -> None:
        time.sleep(seconds)

    def served_by(self, name: str) -> set[int]:
        return {r["pid"] for r in list(self.ok) if r["instance"] == name}

    def count(self, name: str) -> int:
        return sum(1 for r in list(self.ok) if r["instance"] == name)

    def summary(self) -> str:
        per = {f"web{i + 1}": self.count(f"web{i + 1}") for i in range(INSTANCES)}
        return (f"{len(self.ok) + len(self.failed)} requests in {self.elapsed:.1f}s from {CONCURRENCY} clients, "
                f"{len(self.failed)} failed; served: {per}")


def _wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


# -- HAProxy -------------------------------------------------------------------------------

class HAProxy:
    def __init__(self, instances: list[Instance], log_dir: Path):
        self.port = _free_port()
        self.admin_path = log_dir / "haproxy-admin.sock"
        self.log_path = log_dir / "haproxy.log"
        self.instances = instances
        env = dict(client_env(), PRONGHORN_LB_BIND=f"127.0.0.1:{self.port}", PRONGHORN_LB_LOG="stdout",
                   PRONGHORN_LB_ADMIN_SOCKET=str(self.admin_path))
        for inst in instances:
            env[f"PRONGHORN_{inst.name.upper()}"] = inst.target
        # The deploy/ file itself; -db: foreground, no daemon.
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        _wait_until(lambda: self.proc.poll() is not None or self.admin_path.exists(), 10, "haproxy's admin socket")
        assert self.proc.poll() is None, self.log
        self.wait_status({inst.name: "UP" for inst in instances})

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.admin_path))
            s.sendall(command.encode() + b"\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out.decode()

    def servers(self) -> dict[str, dict]:
        lines = self.admin("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, ln.split(","))) for ln in lines[1:] if ln]
        return {r["svname"]: r for r in rows if r["pxname"] == "pronghorn" and r["svname"].startswith("web")}

    def wait_status(self, want: dict[str, str], timeout: float = 15) -> None:
        _wait_until(lambda: all(self.servers()[k]["status"] == v for k, v in want.items()), timeout,
                    f"haproxy server states {want} (now { {k: v['status'] for k, v in self.servers().items()} })")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # soft stop
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def haproxy(instances, tmp_path):
    lb = HAProxy(instances, tmp_path)
    try:
        yield lb
    finally:
        lb.close()


def _report(scenario: str, network: Network, load: Load, extra: str = "") -> None:
    _say(f"\n{scenario} [{network.mode}]: {load.summary()}{extra}")
    for method, what in load.failed[:20]:
        _say(f"  failed {method}: {what}")


def _check_forwarded(load: Load, scheme: str) -> None:
    clients = {tuple(r["client"])[0] for r in load.ok}
    schemes = {r["scheme"] for r in load.ok}
    assert clients == {CLIENT_ADDR}, clients
    assert schemes == {scheme}, schemes


@needs_haproxy
def test_haproxy_rolling_deploy(network, instances, haproxy):
    """SIGHUP to each instance in turn under load, each waited for until its new workers serve:
    not one request fails, and every instance ends up serving from new workers."""
    with Load(haproxy.url) as load:
        time.sleep(0.5)
        for inst in instances:
            before = set(load.served_by(inst.name))
            inst.reload()
            haproxy.wait_status({inst.name: "UP"})
            new = inst.new_workers
            _wait_until(lambda: load.served_by(inst.name) & new, 5, f"{inst.name}'s new workers behind haproxy")
            assert before, f"{inst.name} served nothing before its reload"
        time.sleep(0.3)
    _report("haproxy rolling deploy (SIGHUP x3)", network, load)
    assert not load.failed
    assert all(load.count(inst.name) for inst in instances)
    _check_forwarded(load, "http")


@needs_haproxy
def test_haproxy_drain_stop_and_start(network, instances, haproxy):
    """The runtime API drains web2 (no new requests; those running finish), then SIGTERM stops
    it (exit 0), it starts again and is put back: not one request fails."""
    target = instances[1]
    with Load(haproxy.url, post_every=3) as load:
        time.sleep(0.5)
        haproxy.admin(f"set server pronghorn/{target.name} state drain")
        _wait_until(lambda: haproxy.servers()[target.name]["scur"] == "0", 10, "web2's running requests to finish")
        served_while_draining = load.count(target.name)
        assert target.stop(signal.SIGTERM) == 0, target.stderr
        time.sleep(1.0)  # the others carry the load; haproxy's check sees it down
        target.start()
        haproxy.admin(f"set server pronghorn/{target.name} state ready")
        haproxy.wait_status({target.name: "UP"})
        _wait_until(lambda: load.count(target.name) > served_while_draining, 5, "web2 serving again")
        time.sleep(0.3)
    _report("haproxy drain + SIGTERM + start", network, load)
    assert not load.failed


@needs_haproxy
def test_haproxy_sigkill(network, instances, haproxy):
    """Every process of web2 gets SIGKILL under a load where one request in three is a POST that
    takes 300 ms (so that some are running there at the kill): haproxy marks web2 down and sends
    the rest elsewhere. A GET that was running there is retried on another instance; a POST that
    was running there fails (it may have had its effect), so the failures are at most the
    requests in flight there: fewer than the number of clients."""
    target = instances[1]
    with Load(haproxy.url, post_every=3, post_ms=KILL_POST_MS) as load:
        time.sleep(1.0)
        assert load.count(target.name)
        in_flight = int(haproxy.servers()[target.name]["scur"])
        killed_at = time.monotonic()
        target.kill()
        haproxy.wait_status({target.name: "DOWN"})
        down_after = time.monotonic() - killed_at
        time.sleep(0.5)
    _report_kill("haproxy SIGKILL", network, load, in_flight, f"; marked down after {down_after:.1f}s")
    redispatched = len(re.findall(r" \d+/\d+/\d+/\d+/\+\d+ \d+/\d+ \"", haproxy.log))
    _say(f"  requests haproxy redispatched to another instance: {redispatched}")
    assert len(load.failed) <= CONCURRENCY
    assert not [f for f in load.failed if f[0] == "GET"], "a GET is retried elsewhere"
    assert len(load.ok) > 50


def _report_kill(scenario: str, network: Network, load: Load, in_flight: int | None, extra: str = "") -> None:
    failed_posts = sum(1 for f in load.failed if f[0] == "POST")
    where = "" if in_flight is None else f"; {in_flight} request(s) in flight there just before the kill"
    _report(scenario, network, load, f"{where}; failed POSTs {failed_posts}, "
                                     f"failed GETs {len(load.failed) - failed_posts}{extra}")


# -- nginx ---------------------------------------------------------------------------------

class Nginx:
    def __init__(self, instances: list[Instance], log_dir: Path):
        self.port = _free_port()
        d = log_dir / "nginx"
        d.mkdir()
        _openssl = [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")]
        subprocess.run(_openssl, check=True, capture_output=True, timeout=60, env=client_env())
        values = {"PRONGHORN_LB_LISTEN": f"127.0.0.1:{self.port}", "PRONGHORN_TLS_CERT": str(d / "cert.pem"),
                  "PRONGHORN_TLS_KEY": str(d / "key.pem")}
        for inst in instances:
            values[f"PRONGHORN_{inst.name.upper()}"] = inst.target
        text = (DEPLOY / "nginx" / "pronghorn.conf").read_text()
        for name, value in values.items():  # as `envsubst '${NAME} ...'` does
            text = text.replace("${" + name + "}", value)
        left = [ln for ln in text.splitlines() if "${" in ln and not ln.lstrip().startswith("#")]
        assert not left, f"placeholders the test does not fill in: {left}"
        (d / "pronghorn.conf").write_text(text)
        # The part a distribution's nginx.conf provides; as root, nginx's worker would switch to
        # "nobody", which cannot read pytest's temporary directory.
        user = "user root;" if os.geteuid() == 0 else ""
        (d / "nginx.conf").write_text(f"""{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  include {d}/pronghorn.conf;
}}
""")
        self.dir = d
        self.proc = subprocess.Popen([NGINX, "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(d / "stderr.log", "wb"), env=client_env())
        self.url = f"https://127.0.0.1:{self.port}"

        def up():
            assert self.proc.poll() is None, (d / "error.log").read_text(errors="replace")
            try:
                return httpx.get(f"{self.url}/healthz", verify=False, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        _wait_until(up, 10, "nginx answering")

    @property
    def error_log(self) -> str:
        return (self.dir / "error.log").read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def nginx(instances, tmp_path):
    lb = Nginx(instances, tmp_path)
    try:
        yield lb
    finally:
        lb.close()


@needs_nginx
def test_nginx_rolling_deploy_forwarded_headers_and_keepalive(network, instances, nginx):
    """Behind nginx (TLS at nginx, HTTP/1.1 keep-alive to the instances): a rolling deploy fails
    no request; the app sees the clients' real address and scheme (https) through X-Forwarded-
    For/-Proto from nginx, never what the clients put there themselves; and the instances accept
    far fewer connections than they serve requests (nginx reuses them)."""
    before = [network.connections(i) for i in range(INSTANCES)]
    with Load(nginx.url) as load:
        time.sleep(1.0)
        for inst in instances:
            inst.reload()
            new = inst.new_workers
            _wait_until(lambda: load.served_by(inst.name) & new, 10, f"{inst.name}'s new workers behind nginx")
        time.sleep(0.5)
    after = [network.connections(i) for i in range(INSTANCES)]
    # Instance.reload's 4 direct requests are connections of their own.
    opened = [len(a - b) if isinstance(a, set) else a - b for a, b in zip(after, before)]
    opened = [n - 4 for n in opened]
    _report("nginx rolling deploy (SIGHUP x3)", network, load,
            f"; connections accepted by the instances: {opened} (sum {sum(opened)})")
    assert not load.failed
    _check_forwarded(load, "https")
    # Each instance's workers are replaced once: nginx reconnects after that, and otherwise
    # keeps its connections (at most CONCURRENCY in use at once).
    assert sum(opened) <= len(load.ok) / 10, (opened, len(load.ok))


@needs_nginx
def test_nginx_stop_and_start(network, instances, nginx):
    """Open-source nginx has no runtime API: web2 is stopped with SIGTERM as it is and started
    again. Its port refuses connections from the start of the stop (the supervisor closes its
    copy of the listening socket too), so nginx passes those requests to the next instance;
    those running there finish. Not one request fails."""
    target = instances[1]
    with Load(nginx.url) as load:
        time.sleep(0.7)
        assert target.stop(signal.SIGTERM) == 0, target.stderr
        stopped = load.count(target.name)
        time.sleep(1.0)
        target.start()
        # nginx tries it again once fail_timeout has passed since its last failure.
        _wait_until(lambda: load.count(target.name) > stopped, 10, "web2 serving again behind nginx")
        time.sleep(0.3)
    _report("nginx SIGTERM + start", network, load)
    assert not load.failed


@needs_nginx
def test_nginx_sigkill(network, instances, nginx):
    """Every process of web2 gets SIGKILL under the same load as test_haproxy_sigkill: nginx
    passes the GETs that were running there to the next instance (proxy_next_upstream) and
    skips web2 for fail_timeout once it has failed max_fails times; only the POSTs running there
    fail."""
    target = instances[1]
    with Load(nginx.url, post_every=3, post_ms=KILL_POST_MS) as load:
        time.sleep(1.0)
        assert load.count(target.name)
        target.kill()
        time.sleep(1.5)
    _report_kill("nginx SIGKILL", network, load, None)
    assert len(load.failed) <= CONCURRENCY
    assert not [f for f in load.failed if f[0] == "GET"], "a GET is retried elsewhere"
    assert len(load.ok) > 50
