"""Type stubs for the C++ extension module."""

import asyncio
import logging
from typing import Any, Awaitable, Callable

class ClientDisconnected(OSError):
    """Raised by send() after the client went away (ASGI spec 2.4)."""

class Server:
    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        loop: asyncio.AbstractEventLoop,
        logger: logging.Logger,
        *,
        state: dict[str, Any] | None = ...,
        root_path: str = ...,
        proxy_headers: bool = ...,
        forwarded_allow_ips: str = ...,
        timeout_keep_alive: float = ...,
        timeout_header_read: float = ...,
        limit_concurrency: int = ...,
        server_header: bool = ...,
        date_header: bool = ...,
        headers: list[tuple[str, str]] | None = ...,
        access_log: bool = ...,
        access_log_colours: bool = ...,
        limit_request_line: int = ...,
        limit_request_head: int = ...,
        limit_request_fields: int = ...,
        reset_contextvars: bool = ...,
        control_fd: int = ...,
        max_requests: int = ...,
        access_logger: object = ...,
        send_thread: bool = ...,
        send_thread_always: bool = ...,
    ) -> None: ...
    def listen_tcp(self, host: str, port: int, backlog: int = ..., reuse_port: bool = ...) -> tuple[str, int]: ...
    def listen_unix(self, path: str, backlog: int = ...) -> tuple[str, None]: ...
    def listen_fd(self, fd: int) -> tuple[str, int | None]: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def begin_shutdown(self) -> None: ...
    def close_all(self) -> None: ...
    def notify_ready(self) -> None: ...
    @property
    def tasks(self) -> set[asyncio.Task[None]]: ...
    @property
    def connection_count(self) -> int: ...
    @property
    def active_requests(self) -> int: ...
    @property
    def requests_served(self) -> int: ...
    state: dict[str, Any] | None

def set_log_level(level: int) -> None: ...
def supervise(
    workers: int,
    *,
    timeout_worker_healthcheck: float = ...,
    timeout_graceful_shutdown: float = ...,
    limit_max_requests: int = ...,
    limit_max_requests_jitter: int = ...,
    limit_worker_memory: int = ...,
    worker_lifetime: float = ...,
    pid_file: str = ...,
) -> int | tuple[int, int]: ...
def bind_tcp(host: str, port: int, backlog: int, reuse_port: bool = ...) -> tuple[int, str, int]: ...
def bind_unix(path: str, backlog: int) -> int: ...
