"""HTTPS (issue 10): the installed server with --ssl-* options, against httpx, curl,
`openssl s_client` and Python's ssl module. The certificates are made by the `openssl`
command in a session fixture: a CA, server certificates (RSA, ECDSA, an encrypted key, a
renewed one), a client certificate, and a key that matches nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import IS_UVICORN, ResponseReader, ServerProcess, client_env

RAW = "apps.raw_app:app"
WORKERS = "apps.workers_app:app"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60, env=client_env())


def _server_cert(d: Path, name: str, ca: str, key_args: list[str], cn: str = "localhost") -> None:
    _openssl("req", "-new", *key_args, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
             f"/CN={cn}", cwd=d)
    # The extensions Python 3.13's default context insists on (VERIFY_X509_STRICT).
    (d / f"{name}.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
             "-subj", "/CN=Pronghorn Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _server_cert(d, "server", "ca", ["-newkey", "rsa:2048"])
    _server_cert(d, "renewed", "ca", ["-newkey", "rsa:2048"])
    _server_cert(d, "ecdsa", "ca", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
    _server_cert(d, "client", "ca", ["-newkey", "rsa:2048"], cn="test-client")
    _openssl("pkey", "-in", "server.key", "-aes256", "-passout", "pass:s3cret", "-out", "server-encrypted.key", cwd=d)
    _openssl("genpkey", "-algorithm", "RSA", "-out", "other.key", cwd=d)
    return d


def _tls_args(certs: Path, cert: str = "server", key: str | None = None, *extra: str) -> list[str]:
    return ["--ssl-certfile", str(certs / f"{cert}.pem"), "--ssl-keyfile", str(certs / f"{key or cert}.key"), *extra]


def _client_context(certs: Path, *, version: ssl.TLSVersion | None = None, client: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if client:
        ctx.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    return ctx


def _https(srv: ServerProcess) -> str:
    return f"https://localhost:{srv.port}"


def _scope(srv: ServerProcess, ctx: ssl.SSLContext) -> dict:
    r = httpx.get(f"{_https(srv)}/scope", verify=ctx, timeout=10)
    assert r.status_code == 200
    return r.json()


# -- serving -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_httpx_over_tls_1_2_and_1_3(server_factory, certs, version):
    srv = server_factory(RAW, *_tls_args(certs))
    assert "running on https://127.0.0.1:" in srv.stderr
    ctx = _client_context(certs, version=version)
    with httpx.Client(verify=ctx, timeout=10) as client:
        for _ in range(3):  # keep-alive over one TLS connection
            r = client.get(f"{_https(srv)}/fixed")
            assert r.status_code == 200 and r.text == "hello, world"
        r = client.post(f"{_https(srv)}/echo", content=b"x" * 300_000)
        assert r.content == b"x" * 300_000


@pytest.mark.pronghorn_only  # uvicorn starts a pipelined request in the previous one's context
def test_pipelined_requests_over_tls_each_start_in_the_servers_context(server_factory, certs):
    """The requests after the first arrive in the same records and stay in the
    TLS buffer; they are read from a callback the loop runs later
    (Engine::defer_readable), never in the context of the task whose send
    made the connection read again."""
    srv = server_factory("apps.task_app:app", *_tls_args(certs))
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    with _client_context(certs).wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"GET /contextvar HTTP/1.1\r\nHost: x\r\n\r\n" * 4)
        reader = ResponseReader(sock)
        assert [reader.read_response().body for _ in range(4)] == [b"unset"] * 4


@pytest.mark.pronghorn_only
def test_scope_scheme_and_tls_extension(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    d = _scope(srv, _client_context(certs, version=ssl.TLSVersion.TLSv1_3))
    assert d["scheme"] == "https"
    tls = d["extensions"]["tls"]
    assert tls["server_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert tls["server_cert"] == (certs / "server.pem").read_text()
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None and tls["client_cert_error"] is None
    d = _scope(srv, _client_context(certs, version=ssl.TLSVersion.TLSv1_2))
    assert d["extensions"]["tls"]["tls_version"] == 0x0303


@pytest.mark.pronghorn_only  # uvicorn negotiates no ALPN
def test_curl_and_alpn(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs, "ecdsa"))
    out = subprocess.run(["curl", "-sv", "--cacert", str(certs / "ca.pem"), f"{_https(srv)}/fixed"],
                         capture_output=True, text=True, timeout=20, env=client_env())
    assert out.stdout == "hello, world", out.stderr
    assert "ALPN: server accepted http/1.1" in out.stderr or "ALPN, server accepted to use http/1.1" in out.stderr
    s_client = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-alpn", "h2,http/1.1",
                               "-CAfile", str(certs / "ca.pem"), "-servername", "localhost"],
                              input="", capture_output=True, text=True, timeout=20, env=client_env())
    assert "ALPN protocol: http/1.1" in s_client.stdout, s_client.stdout[-2000:]
    assert "Verify return code: 0 (ok)" in s_client.stdout


@pytest.mark.pronghorn_only  # the TLS 1.3 suite order is Pronghorn's own
@pytest.mark.parametrize("offered,chosen", [
    ("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),  # the server's order
    ("TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"),  # no AES hardware
])
def test_tls13_suite_is_the_servers_choice_but_chacha_first_is_honoured(server_factory, certs, offered, chosen):
    srv = server_factory(RAW, *_tls_args(certs, "ecdsa"))
    s_client = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-tls1_3",
                               "-ciphersuites", offered, "-CAfile", str(certs / "ca.pem"), "-servername", "localhost"],
                              input="", capture_output=True, text=True, timeout=20, env=client_env())
    assert f"Cipher is {chosen}" in s_client.stdout, s_client.stdout[-2000:]


def test_tls_1_0_and_1_1_refused(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this Python's OpenSSL cannot even offer TLS 1.0/1.1: {exc}")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                pass
    assert httpx.get(f"{_https(srv)}/fixed", verify=_client_context(certs), timeout=10).status_code == 200


@pytest.mark.pronghorn_only
def test_tls_1_2_only_with_ssl_version_5(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs, "server", None, "--ssl-version", "5"))
    d = _scope(srv, _client_context(certs))
    assert d["extensions"]["tls"]["tls_version"] == 0x0303


# -- client certificates -----------------------------------------------------------------------

def test_client_certificate_required(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs, "server", None, "--ssl-cert-reqs", "2", "--ssl-ca-certs",
                                         str(certs / "ca.pem")))
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(f"{_https(srv)}/fixed", verify=_client_context(certs), timeout=10)
    r = httpx.get(f"{_https(srv)}/fixed", verify=_client_context(certs, client=True), timeout=10)
    assert r.status_code == 200


@pytest.mark.pronghorn_only
def test_client_certificate_in_the_scope(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs, "server", None, "--ssl-cert-reqs", "2", "--ssl-ca-certs",
                                         str(certs / "ca.pem")))
    tls = _scope(srv, _client_context(certs, client=True))["extensions"]["tls"]
    assert tls["client_cert_name"] == "CN=test-client"
    assert tls["client_cert_chain"][0] == (certs / "client.pem").read_text()
    assert tls["client_cert_error"] is None


@pytest.mark.pronghorn_only
def test_client_certificate_optional(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs, "server", None, "--ssl-cert-reqs", "1", "--ssl-ca-certs",
                                         str(certs / "ca.pem")))
    assert _scope(srv, _client_context(certs))["extensions"]["tls"]["client_cert_chain"] == []
    assert _scope(srv, _client_context(certs, client=True))["extensions"]["tls"]["client_cert_name"] == "CN=test-client"


# -- keys and start-up errors -------------------------------------------------------------------

def test_encrypted_key_with_password(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs, "server", "server-encrypted", "--ssl-keyfile-password", "s3cret"))
    assert httpx.get(f"{_https(srv)}/fixed", verify=_client_context(certs), timeout=10).status_code == 200


@pytest.mark.pronghorn_only
@pytest.mark.parametrize("case,args,message", [
    ("encrypted key without password", ("server", "server-encrypted"), "cannot load the private key"),
    ("wrong password", ("server", "server-encrypted", "--ssl-keyfile-password", "nope"), "cannot load the private key"),
    ("key of another certificate", ("server", "other"), "does not match the certificate"),
])
def test_bad_key_stops_before_any_worker(server_factory, certs, case, args, message):
    cert, key, *extra = args
    srv = server_factory(RAW, *_tls_args(certs, cert, key, *extra), "--workers", "2", wait=False)
    assert srv.wait_exit(20) == 1
    err = srv.stderr
    assert message in err, err
    assert len([line for line in err.splitlines() if line.startswith("ERROR")]) == 1, err
    assert "Spawned worker" not in err and "Started server process" not in err, err


@pytest.mark.pronghorn_only
def test_missing_certificate_file_exits_1(server_factory, certs, tmp_path):
    srv = server_factory(RAW, "--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile",
                         str(certs / "server.key"), wait=False)
    assert srv.wait_exit(20) == 1
    assert "cannot load the certificate from" in srv.stderr and "nope.pem" in srv.stderr


def test_a_resumed_tls13_connection_gets_a_fresh_ticket(server_factory, certs, tmp_path):
    """TLS 1.3 tickets are single-use for clients (RFC 8446 appendix C.4): a client that
    resumes must get a new ticket, or its next connection is a full handshake. Seen with wrk
    (which keeps only its latest session): every other connection was a full handshake."""
    srv = server_factory(RAW, *_tls_args(certs))
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-CAfile", str(certs / "ca.pem"),
            "-servername", "localhost", "-ign_eof", "-tls1_3"]
    request = "GET /fixed HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    session = tmp_path / "s0.pem"
    first = subprocess.run(base + ["-sess_out", str(session)], input=request, capture_output=True, text=True,
                           timeout=20, env=client_env())
    assert first.returncode == 0 and "New, TLSv1.3" in first.stdout, first.stderr
    for i in range(1, 4):
        following = tmp_path / f"s{i}.pem"
        again = subprocess.run(base + ["-sess_in", str(session), "-sess_out", str(following)], input=request,
                               capture_output=True, text=True, timeout=20, env=client_env())
        assert "Reused, TLSv1.3" in again.stdout, again.stdout
        assert "New Session Ticket arrived" in again.stdout, f"resumption {i} issued no ticket"
        session = following


# -- workers: tickets, reload ----------------------------------------------------------------------

@pytest.mark.pronghorn_only
def test_session_resumes_across_workers(server_factory, certs, tmp_path):
    srv = server_factory(WORKERS, *_tls_args(certs), "--workers", "2")
    sess = tmp_path / "session.pem"
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", "-CAfile", str(certs / "ca.pem"),
            "-servername", "localhost", "-ign_eof"]
    request = "GET /pid HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    first = subprocess.run(base + ["-sess_out", str(sess)], input=request, capture_output=True, text=True, timeout=20,
                           env=client_env())
    assert first.returncode == 0, first.stderr
    pid_of = lambda out: int(re.search(r'"pid": (\d+)', out).group(1))  # noqa: E731
    pids = {pid_of(first.stdout)}
    reused = 0
    for _ in range(12):
        again = subprocess.run(base + ["-sess_in", str(sess)], input=request, capture_output=True, text=True,
                               timeout=20, env=client_env())
        reused += "Reused, TLSv1.3" in again.stdout or "Reused, TLSv1.2" in again.stdout
        pids.add(pid_of(again.stdout))
    assert reused == 12
    assert len(pids) == 2, "every connection went to one worker: the test did not cross workers"


@pytest.mark.pronghorn_only
@pytest.mark.slow
def test_sighup_loads_a_renewed_certificate_with_no_failed_request(server_factory, certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(certs / "server.pem", live / "cert.pem")
    shutil.copy(certs / "server.key", live / "key.pem")
    srv = server_factory(WORKERS, "--ssl-certfile", str(live / "cert.pem"), "--ssl-keyfile", str(live / "key.pem"),
                         "--workers", "2")
    ctx = _client_context(certs)

    def served_cert() -> bytes:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.getpeercert(binary_form=True)

    old = served_cert()
    failures, done = [], threading.Event()
    count = [0]

    def load():
        # A keep-alive client; a request on an idle connection that the stopping worker closed
        # before any response byte is retried, as clients do (RFC 9112 §9.3.1), as in
        # test_workers' zero-failure reload test.
        with httpx.Client(verify=ctx, timeout=10) as client:
            while not done.is_set():
                try:
                    for attempt in range(4):
                        try:
                            r = client.get(f"{_https(srv)}/pid")
                            break
                        except httpx.RemoteProtocolError as exc:
                            if "without sending a response" not in str(exc) or attempt == 3:
                                raise
                    assert r.status_code == 200
                    count[0] += 1
                except Exception as exc:  # noqa: BLE001 - every failure counts
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        shutil.copy(certs / "renewed.pem", live / "cert.pem")
        shutil.copy(certs / "renewed.key", live / "key.pem")
        srv.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while served_cert() == old:
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            time.sleep(0.2)
        time.sleep(1.0)  # both new workers up, the old ones drained
    finally:
        done.set()
        for t in threads:
            t.join(15)
    assert served_cert() != old
    assert failures == [], failures[:5]
    assert count[0] > 20


# -- apps and clients ---------------------------------------------------------------------------

def test_fastapi_over_https(server_factory, certs, fastapi_workdir):
    srv = server_factory("apps.fastapi_app:app", *_tls_args(certs),
                         env={"PRONGHORN_TEST_WORKDIR": str(fastapi_workdir)})
    with httpx.Client(verify=_client_context(certs), timeout=10) as client:
        r = client.get(f"{_https(srv)}/openapi.json")
        assert r.status_code == 200 and r.json()["openapi"].startswith("3.")


@pytest.mark.pronghorn_only
def test_same_answers_as_uvicorn_over_tls(server_factory, certs):
    ours = server_factory(RAW, *_tls_args(certs))
    theirs = server_factory(RAW, *_tls_args(certs), kind="uvicorn")
    ctx = _client_context(certs)
    for path in ("/fixed", "/status?code=204", "/stream?n=100000", "/headers", "/no%20such"):
        a = httpx.get(f"{_https(ours)}{path}", verify=ctx, timeout=10)
        b = httpx.get(f"{_https(theirs)}{path}", verify=ctx, timeout=10)
        assert (a.status_code, a.content) == (b.status_code, b.content), path
        skip = {"date", "server"}
        assert sorted((k, v) for k, v in a.headers.items() if k not in skip) == \
               sorted((k, v) for k, v in b.headers.items() if k not in skip), path
    assert _scope(ours, ctx)["scheme"] == _scope(theirs, ctx)["scheme"] == "https"


# -- hostile peers -------------------------------------------------------------------------------

def test_plain_http_on_the_tls_port_is_closed(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/1.1 200" not in data
    assert httpx.get(f"{_https(srv)}/fixed", verify=_client_context(certs), timeout=10).status_code == 200
    assert "ERROR" not in srv.stderr and "Traceback" not in srv.stderr


@pytest.mark.pronghorn_only
def test_handshake_that_never_finishes_is_closed(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs), "--timeout-keep-alive", "1", "--timeout-header-read", "2")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x10")  # the start of a ClientHello record, never finished
        s.settimeout(5)
        t0 = time.monotonic()
        try:
            assert s.recv(4096) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 3.5


@pytest.mark.pronghorn_only
def test_half_open_handshake_flood_does_not_stop_a_client(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    flood = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"\x16\x03\x01\x02\x00\x01")
            flood.append(s)
        t0 = time.monotonic()
        r = httpx.get(f"{_https(srv)}/fixed", verify=_client_context(certs), timeout=10)
        assert r.status_code == 200
        assert time.monotonic() - t0 < 2.0
    finally:
        for s in flood:
            s.close()


@pytest.mark.pronghorn_only
@pytest.mark.slow
def test_many_handshakes_leak_no_fds_or_memory(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    ctx = _client_context(certs)

    def handshakes(n: int) -> None:
        for i in range(n):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
                if i % 3 == 0:
                    raw.sendall(b"not tls at all\r\n\r\n")  # a failed handshake too
                    continue
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while s.recv(4096):
                        pass

    handshakes(300)  # warm-up: allocator and OpenSSL caches
    time.sleep(0.5)
    fds, rss = len(os.listdir(f"/proc/{srv.pid}/fd")), srv.rss_kib()
    handshakes(10_000)
    time.sleep(0.5)
    assert len(os.listdir(f"/proc/{srv.pid}/fd")) <= fds + 2
    grown = (srv.rss_kib() - rss) / 1024
    print(f"10,000 handshakes: fds {fds} -> {len(os.listdir(f'/proc/{srv.pid}/fd'))}, RSS +{grown:.1f} MiB")
    assert grown < 8, f"RSS grew by {grown:.1f} MiB"


@pytest.mark.pronghorn_only
@pytest.mark.slow
def test_large_file_over_tls_keeps_memory_flat(server_factory, certs, tmp_path):
    f = tmp_path / "big.bin"
    size = 1024 * 1024 * 1024  # 1 GiB
    with open(f, "wb") as out:
        out.truncate(size)  # sparse: zeros
    srv = server_factory(RAW, *_tls_args(certs), "--asgi-pathsend")
    before = srv.rss_kib()
    peak = before
    got = 0
    with httpx.Client(verify=_client_context(certs), timeout=30) as client:
        with client.stream("GET", f"{_https(srv)}/pathsend", params={"path": str(f)}) as r:
            assert r.status_code == 200
            for chunk in r.iter_raw(1 << 20):
                got += len(chunk)
                if got % (64 << 20) < (1 << 20):
                    peak = max(peak, srv.rss_kib())
    assert got == size
    grown = (peak - before) / 1024
    print(f"1 GiB over TLS: RSS +{grown:.1f} MiB")
    assert grown < 16, f"RSS grew by {grown:.1f} MiB while sending a file over TLS"


def test_client_that_reads_late_gets_everything(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with _client_context(certs).wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /stream?n=3000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1.0)  # the server's queue fills and waits
            resp = ResponseReader(s, timeout=10).read_response()
    assert resp.status == 200 and len(resp.body) == 3_000_000


@pytest.mark.pronghorn_only
def test_graceful_stop_sends_close_notify(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s = _client_context(certs).wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    try:
        s.sendall(b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = ResponseReader(s).read_response()
        assert resp.status == 200
        srv.send_signal(signal.SIGINT)
        s.settimeout(5)
        # An idle keep-alive connection is closed at once on a graceful stop: with close_notify,
        # the read ends cleanly; without it, suppress_ragged_eofs=False raises SSLEOFError.
        assert s.recv(4096) == b""
    finally:
        s.close()
    assert srv.wait_exit(10) == 0


@pytest.mark.pronghorn_only
@pytest.mark.parametrize("args,message", [
    (("--ssl-version", "3"), "TLS 1.0 and 1.1 are not supported"),
    (("--ssl-cert-reqs", "2"), "--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs"),
])
def test_tls_option_errors_exit_2(server_factory, certs, args, message):
    srv = server_factory(RAW, *_tls_args(certs), *args, wait=False)
    assert srv.wait_exit(20) == 2
    assert message in srv.stderr


def test_pipelined_request_after_a_body_over_tls(server_factory, certs):
    """The end of a body and the next request in one TLS record: both are answered (a read
    shorter than the record must not leave the rest inside OpenSSL with no event)."""
    srv = server_factory(RAW, *_tls_args(certs))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with _client_context(certs).wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                      b"GET /fixed HTTP/1.1\r\nHost: x\r\n\r\n")
            reader = ResponseReader(s, timeout=5)
            first, second = reader.read_response(), reader.read_response()
    assert (first.status, first.body) == (200, b"hello")
    assert (second.status, second.body) == (200, b"hello, world")


class _BioTls:
    """A TLS client over memory BIOs: it decides how its records meet the socket (every
    write() is its own record; flush() sends all of them in one sendall). recv() makes it a
    socket for ResponseReader."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                data = sock.recv(65536)
                if not data:
                    raise EOFError("closed in the handshake")
                self.incoming.write(data)
        self.flush()

    def write(self, data: bytes) -> None:
        self.obj.write(data)

    def flush(self) -> None:
        pending = self.outgoing.read()
        if pending:
            self.sock.sendall(pending)

    def settimeout(self, timeout: float) -> None:
        self.sock.settimeout(timeout)

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return b""
                self.incoming.write(data)
            except ssl.SSLZeroReturnError:
                return b""


def test_many_records_in_one_segment_with_pauses_are_all_answered(server_factory, certs):
    """A 2 MiB upload whose app stops reading for a while, then 40 pipelined requests of one TLS
    record each, all written at once: the server takes up to 64 KiB of records per recv() and
    keeps what its read had no room for, and the HTTP/1 session stops reading (the app's pause,
    each pipelined request in turn): every request must still be answered, with nothing new on
    the socket to wake it."""
    srv = server_factory(RAW, *_tls_args(certs))
    body = os.urandom(2 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        s = _BioTls(raw, _client_context(certs))
        s.write(b"POST /upload?pause_after=100000&pause=0.5 HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        for at in range(0, len(body), 16384):
            s.write(body[at:at + 16384])
        for i in range(40):
            s.write(b"GET /fixed?i=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        records = s.outgoing.read()
        sender = threading.Thread(target=raw.sendall, args=(records,))  # read while the app pauses
        sender.start()
        reader = ResponseReader(s, timeout=10)
        first = reader.read_response()
        rest = [reader.read_response() for _ in range(40)]
        sender.join(10)
    assert first.status == 200 and json.loads(first.body)["bytes"] == len(body)
    assert [(r.status, r.body) for r in rest] == [(200, b"hello, world")] * 40


def test_forwarded_proto_http_from_a_trusted_proxy_over_tls(server_factory, certs):
    srv = server_factory(RAW, *_tls_args(certs))
    r = httpx.get(f"{_https(srv)}/scope", headers={"x-forwarded-proto": "http"}, verify=_client_context(certs),
                  timeout=10)
    assert r.json()["scheme"] == "http"  # uvicorn: the proxy's scheme, either way


@pytest.mark.pronghorn_only
def test_tls_secrets_are_not_in_the_config_repr():
    from pronghorn.config import Config

    config = Config(app="x:y", ssl_certfile="c.pem", ssl_keyfile_password="hunter2")
    assert "hunter2" not in repr(config)
    assert repr(config.tls_ticket_secret) not in repr(config)


def test_websocket_over_tls(server_factory, certs):
    """wss: the websocket scope says wss, carries the TLS extension, and messages (compressed
    too) cross the TLS transport both ways."""
    import asyncio
    import json as _json

    from websockets.asyncio.client import connect

    srv = server_factory("apps.ws_app:raw", *_tls_args(certs))
    host, port = srv.addr
    ctx = _client_context(certs)

    async def main():
        async with connect(f"wss://localhost:{port}/scope", ssl=ctx) as ws:
            scope = _json.loads(await ws.recv())
        async with connect(f"wss://localhost:{port}/echo", ssl=ctx, compression="deflate") as ws:
            for message in ["over tls", "z" * 200000, b"\x00" * 70000]:
                await ws.send(message)
                assert await ws.recv() == message
        return scope
    scope = asyncio.run(asyncio.wait_for(main(), 20))
    assert scope["scheme"] == "wss"
    if not IS_UVICORN:
        assert scope["extensions"]["tls"]["tls_version"] in (0x0303, 0x0304)


def test_websocket_burst_over_tls_with_reading_paused(server_factory, certs):
    """wss: 400 messages sent without waiting for their echoes. The server stops reading while
    the app's queue is full or its echoes are not read, with TLS records possibly held in user
    space; every echo must still come back, in order."""
    import asyncio

    from websockets.asyncio.client import connect

    srv = server_factory("apps.ws_app:raw", *_tls_args(certs))
    port = srv.addr[1]
    messages = [os.urandom(100 + 37 * (i % 50)) for i in range(400)]

    async def main():
        async with connect(f"wss://localhost:{port}/echo", ssl=_client_context(certs), max_size=None) as ws:
            async def send_all():
                for m in messages:
                    await ws.send(m)
            sender = asyncio.create_task(send_all())
            await asyncio.sleep(0.3)  # the server's queue and the socket fill meanwhile
            got = [await ws.recv() for _ in messages]
            await sender
            return got
    assert asyncio.run(asyncio.wait_for(main(), 30)) == messages
