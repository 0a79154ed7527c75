"""A FastAPI application for the HTTP/2 tests with real clients (test_http2_real.py): served by
Pronghorn, hypercorn and uvicorn alike.

  GET  /                   an HTML page with N_ASSETS images, style sheets and scripts (/assets/...)
  /assets/...              StaticFiles (made at import in the work directory)
  GET  /json               JSON
  GET  /items/{id}?q=      path and query parameters
  POST /upload             the body read with request.stream(): {"bytes": N, "sha256": ...}
  POST /echo               the body back (x-body-length header)
  GET  /stream?n=&size=    StreamingResponse: n pieces of `size` bytes
  GET  /big                FileResponse of BIG_SIZE bytes
  GET  /headers            the request headers as a JSON list of pairs
  GET  /cookies            the request cookies; sets two cookies (two set-cookie fields)
  GET  /connection-headers a response with connection-specific fields set by the app
  GET  /raise              an exception: 500
  GET  /extensions         the scope's extensions (names)
  GET  /short-body         content-length: 10 and a body of 3 bytes (an application's mistake)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

WORK_DIR = Path(os.environ.get("PRONGHORN_TEST_WORKDIR") or tempfile.mkdtemp(prefix="pronghorn-h2-"))
ASSETS = WORK_DIR / "assets"
BIG_FILE = WORK_DIR / "big.bin"
BIG_SIZE = 24 * 1024 * 1024
N_ASSETS = 30


def _make_files() -> None:
    """The same bytes every time; a file is written only when missing (the differential test
    compares etags, made of the size and mtime, across servers that share the directory)."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    if not BIG_FILE.exists():
        tmp = BIG_FILE.with_suffix(f".{os.getpid()}.tmp")  # (workers may start at once)
        piece = bytes(range(256)) * 4096  # 1 MiB
        with open(tmp, "wb") as f:
            for i in range(BIG_SIZE // len(piece)):
                f.write(piece[i % 256:] + piece[:i % 256])
        os.replace(tmp, BIG_FILE)
    for i in range(N_ASSETS):
        kind = i % 3
        if kind == 0:  # a 24x24 SVG square of its own colour
            name, body = f"img{i}.svg", (f'<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24">'
                                         f'<rect width="24" height="24" fill="#{(i * 40) % 256:02x}'
                                         f'{(i * 90) % 256:02x}{(i * 150) % 256:02x}"/></svg>')
        elif kind == 1:
            name, body = f"style{i}.css", f".box{i} {{ background: #{(i * 70) % 256:02x}40{(i * 20) % 256:02x}; }}\n"
        else:
            name, body = f"script{i}.js", (f"document.getElementById('s{i}').textContent = 'script {i} ran';\n")
        path = ASSETS / name
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(body)
            os.replace(tmp, path)


_make_files()

app = FastAPI()
app.mount("/assets", StaticFiles(directory=ASSETS), name="assets")


def page() -> str:
    links, imgs, scripts, boxes = [], [], [], []
    for i in range(N_ASSETS):
        if i % 3 == 0:
            imgs.append(f'<img src="/assets/img{i}.svg" width="24" height="24">')
        elif i % 3 == 1:
            links.append(f'<link rel="stylesheet" href="/assets/style{i}.css">')
            boxes.append(f'<div class="box box{i}"></div>')
        else:
            scripts.append(f'<script src="/assets/script{i}.js"></script>')
            boxes.append(f'<p id="s{i}">script {i} not run</p>')
    return ("<!doctype html><html><head><meta charset='utf-8'><title>h2 page</title>"
            "<style>body{font:14px monospace;margin:8px;background:#fff} .box{width:40px;height:24px;"
            "display:inline-block;margin:2px} p{margin:1px}</style>" + "".join(links) + "</head><body>"
            + "<div>" + "".join(imgs) + "</div><div>" + "".join(boxes[:N_ASSETS]) + "</div>"
            + "".join(scripts) + "</body></html>")


@app.get("/", response_class=HTMLResponse)
async def index():
    return page()


@app.api_route("/json", methods=["GET", "HEAD"])
async def json_route():
    return {"hello": "world", "numbers": list(range(10)), "nested": {"ok": True}}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None):
    return {"item_id": item_id, "q": q}


@app.post("/upload")
async def upload(request: Request):
    digest, size = hashlib.sha256(), 0
    async for piece in request.stream():
        digest.update(piece)
        size += len(piece)
    return {"bytes": size, "sha256": digest.hexdigest()}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    return Response(body, media_type="application/octet-stream", headers={"x-body-length": str(len(body))})


@app.api_route("/stream", methods=["GET", "HEAD"])
async def stream(n: int = 10, size: int = 10):
    async def pieces():
        for i in range(n):
            yield bytes([97 + i % 26]) * size
            await asyncio.sleep(0)

    return StreamingResponse(pieces(), media_type="application/octet-stream")


@app.api_route("/big", methods=["GET", "HEAD"])
async def big():
    return FileResponse(BIG_FILE, media_type="application/octet-stream")


@app.get("/headers")
async def headers(request: Request):
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]]


@app.get("/cookies")
async def cookies(request: Request):
    response = Response(content=repr(sorted(request.cookies.items())), media_type="text/plain")
    response.set_cookie("first", "1")
    response.set_cookie("second", "2", httponly=True)
    return response


@app.get("/connection-headers")
async def connection_headers():
    return Response("hop", media_type="text/plain",
                    headers={"connection": "keep-alive", "keep-alive": "timeout=5", "x-kept": "yes"})


@app.get("/raise")
async def raise_error():
    raise RuntimeError("h2-app-failure-marker")


@app.get("/extensions")
async def extensions(request: Request):
    return sorted(request.scope.get("extensions") or {})


@app.get("/short-body")
async def short_body():
    return Response(b"abc", media_type="text/plain", headers={"content-length": "10"})
