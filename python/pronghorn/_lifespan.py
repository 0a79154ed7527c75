"""The ASGI lifespan protocol. Runs twice per worker (startup, shutdown), so it
stays in Python; the per-request path is C++."""

from __future__ import annotations

import asyncio
import logging
from typing import Any


class Lifespan:
    def __init__(self, app: Any, mode: str, logger: logging.Logger, state: dict) -> None:
        self.app = app
        self.mode = mode
        self.logger = logger
        self.state = state
        self.queue: asyncio.Queue = asyncio.Queue()
        self.startup_event = asyncio.Event()
        self.shutdown_event = asyncio.Event()
        self.startup_failed = False
        self.shutdown_failed = False
        self.error_occurred = False
        self.closing = False  # set when the worker exits without lifespan shutdown (a forced stop)
        self.task: asyncio.Task | None = None

    async def startup(self) -> bool:
        """Returns False when the server must exit (code 3)."""
        self.logger.info("Waiting for application startup.")
        self.task = asyncio.get_running_loop().create_task(self._main())
        await self.queue.put({"type": "lifespan.startup"})
        await self.startup_event.wait()
        if self.startup_failed or (self.error_occurred and self.mode == "on"):
            self.logger.error("Application startup failed. Exiting.")
            return False
        self.logger.info("Application startup complete.")
        return True

    async def shutdown(self) -> None:
        if self.error_occurred or self.task is None:
            return
        self.logger.info("Waiting for application shutdown.")
        await self.queue.put({"type": "lifespan.shutdown"})
        await self.shutdown_event.wait()
        if self.shutdown_failed or (self.error_occurred and self.mode == "on"):
            self.logger.error("Application shutdown failed. Exiting.")
        else:
            self.logger.info("Application shutdown complete.")

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            self.error_occurred = True
            if self.startup_failed or self.shutdown_failed:
                return
            if isinstance(exc, asyncio.CancelledError) and self.closing:
                # Cancelled as the worker exits after a forced stop (which
                # skips lifespan shutdown): nothing to report.
                return
            if self.mode == "auto":
                self.logger.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                self.logger.error("Exception in 'lifespan' protocol\n", exc_info=exc)
        finally:
            self.startup_event.set()
            self.shutdown_event.set()

    async def _receive(self) -> dict:
        return await self.queue.get()

    async def _send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.startup_event.set()
        elif kind == "lifespan.startup.failed":
            self.startup_failed = True
            self.startup_event.set()
            if message.get("message"):
                self.logger.error(message["message"])
        elif kind == "lifespan.shutdown.complete":
            self.shutdown_event.set()
        elif kind == "lifespan.shutdown.failed":
            self.shutdown_failed = True
            self.shutdown_event.set()
            if message.get("message"):
                self.logger.error(message["message"])
        else:
            raise RuntimeError(f"Unexpected ASGI lifespan message type {kind!r}.")
