"""An app that leaves orphaned grandchildren behind (as apps that shell out do): GET /orphan
starts `sh`, which starts a background `sleep` and exits at once; the app waits for `sh` only.
The `sleep` is reparented to PID 1 and becomes a zombie when it ends, unless PID 1 reaps it."""

import subprocess


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    subprocess.run(["sh", "-c", "sleep 0.2 & exit 0"], check=True)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
