"""Static files served by the engine (--static-path-route / --static-path-mount /
--static-path-expires): the installed `pronghorn` as a real process, with httpx, raw
sockets and curl. Requests under a route never reach the app (raw_app answers every other
path); one test per rule: HEAD, ranges (206, 416), 304 both ways, content types, the
precompressed siblings and Vary, 405, no directory listings, each traversal form and
symlinks leaving the mount (404) or staying inside (served), a 50 MiB download with the
server's RSS flat, over plain TCP and TLS, the access log, and bad mounts (exit 1)."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import httpx
import pytest

from conftest import UNDER_ASAN, ResponseReader, ServerProcess, client_env, raw_request

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(120)]

APP = "apps.raw_app:app"
HELLO = b"hello, world\n"
CSS = b"body { color: #333; }\n" * 20
BR_BYTES = b"\x1b\x00fake-brotli-bytes"  # served as they are: the test only checks which file was chosen
SECRET = b"top secret outside the mount\n"
BIG_SIZE = 50 * 1024 * 1024

TYPES = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "data.json": "application/json",
    "notes.txt": "text/plain; charset=utf-8",
    "logo.svg": "image/svg+xml",
    "image.png": "image/png",
    "PHOTO.JPG": "image/jpeg",
    "font.woff2": "font/woff2",
    "module.wasm": "application/wasm",
    "README": "application/octet-stream",
}


def _make_tree(root: Path) -> Path:
    public = root / "public"
    (public / "css").mkdir(parents=True)
    (public / "sub").mkdir()
    (public / "hello.txt").write_bytes(HELLO)
    for name in TYPES:
        (public / name).write_bytes(b"content of " + name.encode())
    (public / "css" / "site.css").write_bytes(CSS)
    (public / "css" / "site.css.gz").write_bytes(gzip.compress(CSS))
    (public / "css" / "site.css.br").write_bytes(BR_BYTES)
    (public / "only-gz.js").write_bytes(b"console.log(1)\n" * 10)
    (public / "only-gz.js.gz").write_bytes(gzip.compress(b"console.log(1)\n" * 10))
    (public / "sub" / "page.txt").write_bytes(b"sub page\n")
    (root / "secret.txt").write_bytes(SECRET)
    os.symlink("hello.txt", public / "inside-link.txt")
    os.symlink(public / "hello.txt", public / "absolute-inside.txt")
    os.symlink("../secret.txt", public / "escape.txt")
    os.symlink(root / "secret.txt", public / "absolute-escape.txt")
    os.symlink("..", public / "escape-dir")
    (root / "other").mkdir()
    (root / "other" / "a.txt").write_bytes(b"other mount\n")
    return public


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return _make_tree(tmp_path_factory.mktemp("static"))


def _start(tmp_path_factory, name: str, *args: str) -> ServerProcess:
    srv = ServerProcess(APP, args, log_dir=tmp_path_factory.mktemp(name), name=name)
    return srv.start()


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tree):
    server = _start(tmp_path_factory, "static", "--static-path-route", "/static", "--static-path-mount", str(tree),
                    "--static-path-route", "/scope/other", "--static-path-mount", str(tree.parent / "other"))
    yield server
    assert server.stop() == 0, server.stderr


def get(srv: ServerProcess, path: str, **headers: str) -> httpx.Response:
    return httpx.get(srv.url + path, headers={k.replace("_", "-"): v for k, v in headers.items()}, timeout=10)


def raw_get(srv: ServerProcess, target: str, method: str = "GET", headers: str = ""):
    request = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
    return raw_request(srv, request, method=method)


# -- serving -------------------------------------------------------------------------------

def test_get_serves_the_file(srv, tree):
    r = get(srv, "/static/hello.txt")
    assert r.status_code == 200
    assert r.content == HELLO
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-length"] == str(len(HELLO))
    assert r.headers["accept-ranges"] == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', r.headers["etag"])
    mtime = (tree / "hello.txt").stat().st_mtime
    assert parsedate_to_datetime(r.headers["last-modified"]).timestamp() == int(mtime)
    assert "vary" not in r.headers  # no precompressed sibling
    assert "cache-control" not in r.headers and "expires" not in r.headers  # no --static-path-expires


def test_query_string_is_ignored(srv):
    assert get(srv, "/static/hello.txt?v=123").content == HELLO


def test_head_has_the_headers_and_no_body(srv):
    r = raw_get(srv, "/static/hello.txt", method="HEAD")
    assert r.status == 200
    assert r.header("content-length") == str(len(HELLO))
    assert r.header("etag")
    with srv.connect() as s:  # nothing follows the head
        s.sendall(b"HEAD /static/hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.endswith(b"\r\n\r\n")


def test_keep_alive_serves_many_requests_on_one_connection(srv):
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for _ in range(20):
            assert client.get("/static/hello.txt").content == HELLO
            assert client.get("/scope/x").status_code == 200


def test_second_mount_and_routes_in_order(srv):
    assert get(srv, "/scope/other/a.txt").content == b"other mount\n"


def test_app_still_serves_other_paths(srv):
    r = get(srv, "/scope/static/hello.txt")
    assert r.status_code == 200
    assert r.json()["path"] == "/scope/static/hello.txt"
    # A path that only starts like a route is the app's too (a route is "/scope/other").
    r = get(srv, "/scope/otherx/a.txt")
    assert r.status_code == 200
    assert r.json()["path"] == "/scope/otherx/a.txt"


def test_missing_file_is_404_from_the_engine(srv):
    r = get(srv, "/static/missing.txt")
    assert r.status_code == 404
    assert r.content == b"Not Found"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


# -- ranges --------------------------------------------------------------------------------

def test_range_206(srv):
    r = get(srv, "/static/hello.txt", range="bytes=0-4")
    assert r.status_code == 206
    assert r.content == b"hello"
    assert r.headers["content-range"] == f"bytes 0-4/{len(HELLO)}"
    assert r.headers["content-length"] == "5"
    r = get(srv, "/static/hello.txt", range="bytes=-6")
    assert (r.status_code, r.content) == (206, b"world\n")
    r = get(srv, "/static/hello.txt", range="bytes=7-")
    assert (r.status_code, r.content) == (206, b"world\n")


def test_range_416(srv):
    r = get(srv, "/static/hello.txt", range=f"bytes={len(HELLO)}-")
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(HELLO)}"


def test_multiple_ranges_get_the_whole_file(srv):
    r = get(srv, "/static/hello.txt", range="bytes=0-1,3-4")
    assert (r.status_code, r.content) == (200, HELLO)


def test_if_range_with_another_etag_gets_the_whole_file(srv):
    etag = get(srv, "/static/hello.txt").headers["etag"]
    assert get(srv, "/static/hello.txt", range="bytes=0-4", if_range=etag).status_code == 206
    r = get(srv, "/static/hello.txt", range="bytes=0-4", if_range='"stale"')
    assert (r.status_code, r.content) == (200, HELLO)


# -- conditional requests --------------------------------------------------------------------

def test_if_none_match_304_both_ways(srv):
    etag = get(srv, "/static/hello.txt").headers["etag"]
    r = get(srv, "/static/hello.txt", if_none_match=etag)
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    assert get(srv, "/static/hello.txt", if_none_match=f'"other", W/{etag}').status_code == 304
    r = get(srv, "/static/hello.txt", if_none_match='"other"')
    assert (r.status_code, r.content) == (200, HELLO)


def test_if_modified_since_304_both_ways(srv):
    last_modified = get(srv, "/static/hello.txt").headers["last-modified"]
    assert get(srv, "/static/hello.txt", if_modified_since=last_modified).status_code == 304
    later = formatdate(time.time() + 3600, usegmt=True)
    assert get(srv, "/static/hello.txt", if_modified_since=later).status_code == 304
    earlier = formatdate(parsedate_to_datetime(last_modified).timestamp() - 1, usegmt=True)
    r = get(srv, "/static/hello.txt", if_modified_since=earlier)
    assert (r.status_code, r.content) == (200, HELLO)


# -- content types --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TYPES))
def test_content_type_from_extension(srv, name):
    r = get(srv, f"/static/{name}")
    assert r.status_code == 200
    assert r.headers["content-type"] == TYPES[name]


# -- precompressed siblings -----------------------------------------------------------------

def test_br_chosen_when_accepted(srv):
    r = raw_get(srv, "/static/css/site.css", headers="Accept-Encoding: gzip, deflate, br\r\n")
    assert r.status == 200
    assert r.body == BR_BYTES
    assert r.header("content-encoding") == "br"
    assert r.header("vary") == "Accept-Encoding"
    assert r.header("content-type") == "text/css; charset=utf-8"


def test_gzip_chosen_when_br_is_not_accepted(srv):
    r = raw_get(srv, "/static/css/site.css", headers="Accept-Encoding: gzip\r\n")
    assert r.header("content-encoding") == "gzip"
    assert gzip.decompress(r.body) == CSS
    assert r.header("vary") == "Accept-Encoding"
    # httpx decodes it as a browser would.
    assert get(srv, "/static/css/site.css", accept_encoding="gzip").content == CSS


def test_q0_refuses_a_coding(srv):
    r = raw_get(srv, "/static/css/site.css", headers="Accept-Encoding: br;q=0, gzip;q=0.5\r\n")
    assert r.header("content-encoding") == "gzip"
    r = raw_get(srv, "/static/css/site.css", headers="Accept-Encoding: br;q=0, gzip;q=0\r\n")
    assert r.header("content-encoding") is None
    assert r.body == CSS


def test_higher_q_wins(srv):
    r = raw_get(srv, "/static/css/site.css", headers="Accept-Encoding: br;q=0.4, gzip;q=0.9\r\n")
    assert r.header("content-encoding") == "gzip"


def test_vary_on_the_uncompressed_variant_when_a_sibling_exists(srv):
    r = raw_get(srv, "/static/css/site.css")
    assert r.header("content-encoding") is None
    assert r.body == CSS
    assert r.header("vary") == "Accept-Encoding"
    r = raw_get(srv, "/static/only-gz.js", headers="Accept-Encoding: br\r\n")  # no .br: identity
    assert r.header("content-encoding") is None
    assert r.header("vary") == "Accept-Encoding"
    assert raw_get(srv, "/static/hello.txt", headers="Accept-Encoding: br, gzip\r\n").header("vary") is None


def test_compressed_variants_have_their_own_etag(srv):
    tags = {raw_get(srv, "/static/css/site.css", headers=f"Accept-Encoding: {c}\r\n").header("etag")
            for c in ("br", "gzip", "identity")}
    assert len(tags) == 3


# -- methods and directories -----------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_405(srv, method):
    r = httpx.request(method, srv.url + "/static/hello.txt", timeout=10)
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/static", "/static/", "/static/sub", "/static/sub/", "/static/css/"])
def test_directory_is_404_no_listing(srv, path):
    r = raw_get(srv, path)
    assert r.status == 404
    assert b"page.txt" not in r.body and b"site.css" not in r.body


# -- traversal -----------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    "/static/../secret.txt",
    "/static/sub/../../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/.%2e/secret.txt",
    "/static/%2e./secret.txt",
    "/static/sub%2f..%2f..%2fsecret.txt",
    "/static/sub%2F..%2F..%2Fsecret.txt",
    "/static/..%2fsecret.txt",
    "/static/hello.txt%00.png",
    "/static/%00",
    "/static/./hello.txt",
], ids=lambda t: t.replace("/", "|"))
def test_traversal_forms_are_404(srv, target):
    r = raw_get(srv, target)
    assert r.status == 404, r
    assert SECRET not in r.body and HELLO not in r.body


@pytest.mark.parametrize("name", ["escape.txt", "absolute-escape.txt", "escape-dir/secret.txt"])
def test_symlink_escaping_the_mount_is_404(srv, name):
    r = raw_get(srv, f"/static/{name}")
    assert r.status == 404
    assert SECRET not in r.body


@pytest.mark.parametrize("name", ["inside-link.txt", "absolute-inside.txt"])
def test_symlink_inside_the_mount_is_served(srv, name):
    r = get(srv, f"/static/{name}")
    assert (r.status_code, r.content) == (200, HELLO)


def test_curl_cannot_traverse(srv):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(["curl", "-s", "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                          srv.url + "/static/../../etc/passwd"], capture_output=True, text=True, timeout=30,
                         env=client_env())
    assert out.stdout == "404"


# -- logs ----------------------------------------------------------------------------------

def test_access_log_line(srv):
    get(srv, "/static/hello.txt?from=log-test")
    srv.wait_for_log(r'"GET /static/hello.txt\?from=log-test HTTP/1.1" 200 OK', stream="stdout")
    get(srv, "/static/nope-log-test.txt")
    srv.wait_for_log(r'"GET /static/nope-log-test.txt HTTP/1.1" 404 Not Found', stream="stdout")


def test_access_log_format(server_factory, tree):
    server = server_factory(APP, "--static-path-mount", str(tree), "--access-log-format", '%(r)s %(s)s %(B)s')
    httpx.get(server.url + "/static/hello.txt", timeout=10)
    httpx.get(server.url + "/static/css/site.css", headers={"range": "bytes=0-9"}, timeout=10)
    server.wait_for_log(rf"GET /static/hello.txt HTTP/1.1 200 {len(HELLO)}", stream="stdout")
    server.wait_for_log(r"GET /static/css/site.css HTTP/1.1 206 10", stream="stdout")


# -- options -------------------------------------------------------------------------------

def test_expires(server_factory, tree):
    server = server_factory(APP, "--static-path-route", "/s", "--static-path-mount", str(tree),
                            "--static-path-expires", "3600")
    r = httpx.get(server.url + "/s/hello.txt", timeout=10)
    assert r.headers["cache-control"] == "max-age=3600"
    expires = parsedate_to_datetime(r.headers["expires"]).timestamp()
    assert abs(expires - (time.time() + 3600)) < 5
    r = httpx.get(server.url + "/s/hello.txt", headers={"if-none-match": r.headers["etag"]}, timeout=10)
    assert r.status_code == 304 and r.headers["cache-control"] == "max-age=3600"


def test_default_route_and_environment(server_factory, tree):
    server = server_factory(APP, env={"PRONGHORN_STATIC_PATH_MOUNT": str(tree), "PRONGHORN_STATIC_PATH_EXPIRES": "60"})
    r = httpx.get(server.url + "/static/hello.txt", timeout=10)  # granian's default route
    assert r.content == HELLO
    assert r.headers["cache-control"] == "max-age=60"
    server = server_factory(APP, env={"PRONGHORN_STATIC_PATH_ROUTE": "/a,/b",
                                      "PRONGHORN_STATIC_PATH_MOUNT": f"{tree},{tree / 'sub'}"})
    assert httpx.get(server.url + "/b/page.txt", timeout=10).content == b"sub page\n"


def test_config_fields():
    from pronghorn.config import Config, static_spec

    config = Config(APP, static_path_mount="public", static_path_expires=10).validate()
    assert static_spec(config) == {"routes": ["/static"], "mounts": ["public"], "expires": 10}
    config = Config(APP, static_path_route=["/a", "/b"], static_path_mount=["x", "y"]).validate()
    assert static_spec(config) == {"routes": ["/a", "/b"], "mounts": ["x", "y"], "expires": None}
    assert static_spec(Config(APP).validate()) is None


def test_static_files_spec_is_read_by_name():
    """The engine reads the spec by name (src/bridge/options.h): a misspelt key is an error."""
    from pronghorn import _core

    with pytest.raises(TypeError, match="unknown static_files option 'mount'"):
        _core.check_static({"routes": ["/s"], "mount": ["."]})
    with pytest.raises(ValueError, match="in pairs"):
        _core.check_static({"routes": ["/s", "/t"], "mounts": ["."]})


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "pronghorn"), APP, "--port", "0", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_missing_directory_exits_1_with_one_line(tree, workers):
    r = _run("--workers", workers, "--static-path-mount", "/nonexistent/dir", cwd=Path(__file__).parent)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == ["ERROR:    --static-path-mount '/nonexistent/dir': No such file or directory"], r.stderr
    assert "Started" not in r.stderr and "Spawned" not in r.stderr


def test_mount_that_is_a_file_exits_1(tree):
    r = _run("--static-path-mount", str(tree / "hello.txt"), cwd=Path(__file__).parent)
    assert r.returncode == 1
    assert r.stderr.strip() == f"ERROR:    --static-path-mount '{tree / 'hello.txt'}': not a directory"


def test_route_without_slash_exits_1(tree):
    r = _run("--static-path-route", "static", "--static-path-mount", str(tree), cwd=Path(__file__).parent)
    assert r.returncode == 1
    assert r.stderr.strip() == "ERROR:    --static-path-route 'static': a route must start with '/'"


def test_unpaired_options_exit_2(tree):
    r = _run("--static-path-route", "/a", "--static-path-route", "/b", "--static-path-mount", str(tree),
             cwd=Path(__file__).parent)
    assert r.returncode == 2
    assert "give them in pairs" in r.stderr
    r = _run("--static-path-route", "/a", cwd=Path(__file__).parent)
    assert r.returncode == 2
    r = _run("--static-path-mount", str(tree), "--static-path-expires", "-1", cwd=Path(__file__).parent)
    assert r.returncode == 2


def test_workers_serve_static_files(server_factory, tree):
    server = server_factory(APP, "--workers", "2", "--static-path-mount", str(tree))
    for _ in range(10):
        assert httpx.get(server.url + "/static/hello.txt", headers={"connection": "close"}, timeout=10).content == HELLO


# -- large files: sendfile, bounded memory ---------------------------------------------------

@pytest.fixture(scope="module")
def big_file(tree) -> tuple[str, str]:
    path = tree / "big.bin"
    block = hashlib.sha256(b"pronghorn").digest() * (1 << 15)  # 1 MiB
    with open(path, "wb") as f:
        for i in range(BIG_SIZE // len(block)):
            f.write(block[i % 32:] + block[:i % 32])
    return "/static/big.bin", hashlib.sha256(path.read_bytes()).hexdigest()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _slow_download(sock: socket.socket, target: str, pid: int, host: str = "x") -> tuple[str, int, int]:
    """Reads the response slowly (the server's queue stays full), sampling the server's RSS;
    returns (sha256 of the body, bytes, the largest RSS seen in KiB)."""
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    reader = ResponseReader(sock, timeout=30)
    _, status, _, headers = reader.read_head()
    assert status == 200
    length = int(dict(headers)["content-length"])
    digest = hashlib.sha256(reader.buf)
    got, peak, chunks = len(reader.buf), 0, 0
    while got < length:
        data = sock.recv(min(1 << 20, length - got))
        assert data, f"closed after {got} of {length} bytes"
        digest.update(data)
        got += len(data)
        chunks += 1
        if chunks % 64 == 0:
            peak = max(peak, _rss_kib(pid))
            time.sleep(0.002)
    return digest.hexdigest(), got, peak


def test_50_mib_download_rss_stays_flat(srv, big_file):
    target, expected = big_file
    get(srv, "/static/hello.txt")
    before = _rss_kib(srv.pid)
    with srv.connect(30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        digest, size, peak = _slow_download(s, target, srv.pid)
    assert size == BIG_SIZE
    assert digest == expected
    if not UNDER_ASAN:
        assert peak - before < 8 * 1024, (before, peak)


def test_50_mib_range_from_the_middle(srv, tree, big_file):
    target, _ = big_file
    r = get(srv, target, range=f"bytes={BIG_SIZE // 2}-{BIG_SIZE // 2 + 99}")
    assert r.status_code == 206 and len(r.content) == 100
    with open(tree / "big.bin", "rb") as f:
        f.seek(BIG_SIZE // 2)
        assert r.content == f.read(100)


# -- TLS -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_srv(tmp_path_factory, tree):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("static-certs")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   cwd=d, check=True, capture_output=True, timeout=60, env=client_env())
    server = _start(tmp_path_factory, "static-tls", "--static-path-mount", str(tree),
                    "--ssl-certfile", str(d / "cert.pem"), "--ssl-keyfile", str(d / "key.pem"))
    server.cafile = str(d / "cert.pem")
    yield server
    assert server.stop() == 0, server.stderr


def test_tls_small_file_range_and_304(tls_srv):
    url = f"https://localhost:{tls_srv.port}"
    with httpx.Client(verify=ssl.create_default_context(cafile=tls_srv.cafile), timeout=10) as client:
        r = client.get(url + "/static/hello.txt")
        assert (r.status_code, r.content) == (200, HELLO)
        assert client.get(url + "/static/hello.txt", headers={"range": "bytes=0-4"}).content == b"hello"
        assert client.get(url + "/static/hello.txt", headers={"if-none-match": r.headers["etag"]}).status_code == 304
        assert client.get(url + "/static/../secret.txt").status_code in (200, 404)  # httpx normalises the path
        assert client.get(url + "/scope/x").json()["scheme"] == "https"


def test_tls_50_mib_download_rss_stays_flat(tls_srv, big_file):
    target, expected = big_file
    ctx = ssl.create_default_context(cafile=tls_srv.cafile)
    before = _rss_kib(tls_srv.pid)
    raw = socket.create_connection(("127.0.0.1", tls_srv.port), timeout=30)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        digest, size, peak = _slow_download(s, target, tls_srv.pid, host="localhost")
    assert size == BIG_SIZE
    assert digest == expected
    if not UNDER_ASAN:
        assert peak - before < 8 * 1024, (before, peak)


def test_pipelined_large_files_hold_one_file_at_a_time(srv, big_file):
    """A client that pipelines file requests and does not read holds one queued file, not
    one open file per request (a queued file counts as queued output)."""
    target, _ = big_file
    get(srv, "/static/hello.txt")
    baseline = len(os.listdir(f"/proc/{srv.pid}/fd"))
    with srv.connect(30) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 20)
        time.sleep(0.5)
        open_fds = len(os.listdir(f"/proc/{srv.pid}/fd"))
        assert open_fds - baseline <= 3, (baseline, open_fds)  # the connection, one file
