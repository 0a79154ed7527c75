"""Apps whose lifespan misbehaves, one per attribute."""

from apps.raw_app import app as _raw


async def startup_failed(scope, receive, send):
    """Sends lifespan.startup.failed with a message: exit code 3 in every lifespan mode but off."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "startup-failed-marker"})
        return
    await _raw(scope, receive, send)


async def startup_raises(scope, receive, send):
    """Raises during lifespan startup: exit 3 with --lifespan on; ignored with --lifespan auto."""
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("startup-raises-marker")
    await _raw(scope, receive, send)


async def no_lifespan(scope, receive, send):
    """Does not support lifespan at all (raises immediately on that scope type)."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    await _raw(scope, receive, send)


async def shutdown_slow(scope, receive, send):
    """Lifespan that records startup/shutdown into a file given via env var."""
    import os

    if scope["type"] == "lifespan":
        out = os.environ.get("LIFESPAN_LOG")
        while True:
            msg = await receive()
            if out:
                with open(out, "a") as f:
                    f.write(msg["type"] + "\n")
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await _raw(scope, receive, send)


not_callable = 42
