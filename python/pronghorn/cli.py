"""Command line and worker start-up: parse options, load the app, run lifespan,
hand the sockets to the C++ engine and wait for a shutdown signal.

Everything per request happens in pronghorn._core; this module runs once."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any

from pronghorn import _logging

EXIT_OK = 0
EXIT_IMPORT_ERROR = 1
EXIT_USAGE = 2
EXIT_STARTUP_FAILURE = 3


@dataclass
class Config:
    app: str | Any
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    loop: str = "auto"
    lifespan: str = "auto"
    log_level: str = "info"
    access_log: bool = True
    use_colors: bool | None = None
    proxy_headers: bool = True
    forwarded_allow_ips: str | None = None
    root_path: str = ""
    limit_concurrency: int | None = None
    backlog: int = 2048
    timeout_keep_alive: float = 5.0
    timeout_graceful_shutdown: float | None = None
    timeout_header_read: float = 10.0
    limit_request_line: int = 8192
    limit_request_head: int = 65536
    limit_request_fields: int = 100
    headers: list[tuple[str, str]] = field(default_factory=list)
    server_header: bool = True
    date_header: bool = True
    factory: bool = False
    app_dir: str = "."
    reset_contextvars: bool = False
    workers: int = 1
    preload: bool = False
    timeout_worker_healthcheck: float = 30.0
    limit_max_requests: int | None = None
    limit_max_requests_jitter: int = 0
    limit_worker_memory: int | None = None
    worker_lifetime: float | None = None
    pid_file: str | None = None

    @property
    def supervised(self) -> bool:
        """A parent process is needed for several workers or any recycling."""
        return (
            self.workers > 1
            or bool(self.limit_max_requests)
            or bool(self.limit_worker_memory)
            or bool(self.worker_lifetime)
        )


class ImportFromStringError(Exception):
    pass


def import_from_string(import_str: Any) -> Any:
    if not isinstance(import_str, str):
        return import_str
    module_str, _, attrs_str = import_str.partition(":")
    if not module_str or not attrs_str:
        raise ImportFromStringError(f'Import string "{import_str}" must be in format "<module>:<attribute>".')
    try:
        module = importlib.import_module(module_str)
    except ModuleNotFoundError as exc:
        if exc.name != module_str:
            raise
        raise ImportFromStringError(f'Could not import module "{module_str}".') from None
    instance: Any = module
    try:
        for attr in attrs_str.split("."):
            instance = getattr(instance, attr)
    except AttributeError:
        raise ImportFromStringError(f'Attribute "{attrs_str}" not found in module "{module_str}".') from None
    return instance


def load_app(config: Config, logger) -> Any:
    """Returns the ASGI app or exits with code 1, as uvicorn does."""
    sys.path.insert(0, os.path.abspath(config.app_dir))
    try:
        app = import_from_string(config.app)
    except ImportFromStringError as exc:
        logger.error("Error loading ASGI app. %s", exc)
        sys.exit(EXIT_IMPORT_ERROR)
    except BaseException:
        traceback.print_exc()
        sys.exit(EXIT_IMPORT_ERROR)
    if config.factory:
        try:
            app = app()
        except TypeError as exc:
            logger.error("Error loading ASGI app factory: %s", exc)
            sys.exit(EXIT_IMPORT_ERROR)
    return app


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


class Worker:
    """One serving process: the engine inside one asyncio loop."""

    def __init__(self, config: Config, app: Any, logger, control_fd: int = -1, max_requests: int = 0) -> None:
        self.config = config
        self.app = app
        self.logger = logger
        self.control_fd = control_fd
        self.max_requests = max_requests
        self.stop_event: asyncio.Event | None = None
        self.force_exit = False

    def _on_signal(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            self.force_exit = True
        if self.stop_event is not None:
            self.stop_event.set()

    async def serve(self) -> int:
        from pronghorn import _core
        from pronghorn._lifespan import Lifespan

        config, logger = self.config, self.logger
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        logger.info("Started server process [%d]", os.getpid())

        state: dict = {}
        lifespan = Lifespan(self.app, config.lifespan, logger, state) if config.lifespan != "off" else None
        if lifespan is not None and not await lifespan.startup():
            return EXIT_STARTUP_FAILURE

        forwarded = config.forwarded_allow_ips
        if forwarded is None:
            forwarded = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
        server = _core.Server(
            self.app,
            loop,
            logger,
            state=state,
            root_path=config.root_path,
            proxy_headers=config.proxy_headers,
            forwarded_allow_ips=forwarded,
            timeout_keep_alive=config.timeout_keep_alive,
            timeout_header_read=config.timeout_header_read,
            limit_concurrency=config.limit_concurrency or 0,
            server_header=config.server_header,
            date_header=config.date_header,
            headers=config.headers,
            access_log=config.access_log,
            access_log_colours=sys.stdout.isatty() if config.use_colors is None else config.use_colors,
            limit_request_line=config.limit_request_line,
            limit_request_head=config.limit_request_head,
            limit_request_fields=config.limit_request_fields,
            reset_contextvars=config.reset_contextvars,
            control_fd=self.control_fd,
            max_requests=self.max_requests,
        )
        try:
            if config.fd is not None:
                where = server.listen_fd(config.fd)
                message = f"Pronghorn running on socket {where} (Press CTRL+C to quit)"
            elif config.uds:
                server.listen_unix(config.uds, config.backlog)
                message = f"Pronghorn running on unix socket {config.uds} (Press CTRL+C to quit)"
            else:
                host, port = server.listen_tcp(config.host, config.port, config.backlog)
                message = f"Pronghorn running on {_url(config.host, port)} (Press CTRL+C to quit)"
        except OSError:
            # The engine logged the failing call with its errno.
            if lifespan is not None:
                await lifespan.shutdown()
            return EXIT_IMPORT_ERROR
        server.start()
        if self.control_fd >= 0:
            server.notify_ready()
        else:
            logger.info(message)
            _core.sd_notify("READY=1\nSTATUS=serving")

        await self.stop_event.wait()
        if self.control_fd < 0:
            _core.sd_notify("STOPPING=1")
        logger.info("Shutting down")
        server.begin_shutdown()
        await self._drain(server)
        server.stop()
        server.close_all()
        if lifespan is not None and not self.force_exit:
            await lifespan.shutdown()
        logger.info("Finished server process [%d]", os.getpid())
        return EXIT_OK

    async def _drain(self, server) -> None:
        """Waits for open connections and running tasks, within the graceful timeout."""
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout_graceful_shutdown
        deadline = None if timeout is None else loop.time() + timeout
        said_connections = said_tasks = False
        while not self.force_exit:
            connections, tasks = server.connection_count, server.tasks
            if connections == 0 and not tasks:
                return
            if connections and not said_connections:
                self.logger.info("Waiting for connections to close. (CTRL+C to force quit)")
                said_connections = True
            elif not connections and tasks and not said_tasks:
                self.logger.info("Waiting for background tasks to complete. (CTRL+C to force quit)")
                said_tasks = True
            if deadline is not None and loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        tasks = server.tasks
        if tasks:
            self.logger.error(
                "Cancel %d running task(s), timeout graceful shutdown exceeded" % len(tasks)
                if not self.force_exit
                else "Cancel %d running task(s) on forced exit" % len(tasks)
            )
            server.close_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def run_worker(config: Config, logger, app: Any = None, control_fd: int = -1, max_requests: int = 0) -> int:
    """Runs one worker in this process; returns the exit code."""
    if control_fd >= 0:
        import faulthandler

        # The supervisor sends SIGUSR2 when this worker's loop stops answering:
        # the dump shows which line blocked it.
        faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)
        signal.signal(signal.SIGUSR1, lambda *_: _logging.reopen_files())
    if app is None:
        app = load_app(config, logger)
    loop = new_event_loop(config.loop)
    asyncio.set_event_loop(loop)
    worker = Worker(config, app, logger, control_fd, max_requests)
    try:
        return loop.run_until_complete(worker.serve())
    finally:
        loop.close()


def _bind(config: Config, logger) -> str:
    """Binds the listening socket in the parent; sets config.fd. Returns the log line."""
    from pronghorn import _core

    if config.fd is not None:
        return f"Pronghorn running on socket fd {config.fd} (Press CTRL+C to quit)"
    if config.uds:
        config.fd = _core.bind_unix(config.uds, config.backlog)
        return f"Pronghorn running on unix socket {config.uds} (Press CTRL+C to quit)"
    fd, _host, port = _core.bind_tcp(config.host, config.port, config.backlog)
    config.fd = fd
    return f"Pronghorn running on {_url(config.host, port)} (Press CTRL+C to quit)"


SD_LISTEN_FDS_START = 3


def _systemd_socket(config: Config) -> None:
    """Socket activation: serve the socket systemd passed (LISTEN_FDS/LISTEN_PID)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    # Not for the workers or the app's own subprocesses.
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count >= 1 and config.fd is None and not config.uds:
        config.fd = SD_LISTEN_FDS_START


def run(config: Config) -> int:
    """Serves `config`: in this process, or as a supervisor of worker processes."""
    logger = _logging.configure(config.log_level, config.use_colors)
    from pronghorn import _core

    _systemd_socket(config)

    _core.set_log_level(_logging.LEVELS[config.log_level])
    if not config.supervised:
        if config.pid_file:
            with open(config.pid_file, "w") as f:
                f.write(f"{os.getpid()}\n")
        try:
            return run_worker(config, logger)
        finally:
            if config.pid_file and os.path.exists(config.pid_file):
                os.unlink(config.pid_file)
    try:
        message = _bind(config, logger)
    except OSError:
        return EXIT_IMPORT_ERROR
    logger.info(message)
    app = load_app(config, logger) if config.preload else None
    graceful = config.timeout_graceful_shutdown
    result = _core.supervise(
        config.workers,
        timeout_worker_healthcheck=config.timeout_worker_healthcheck,
        timeout_graceful_shutdown=-1.0 if graceful is None else graceful,
        limit_max_requests=config.limit_max_requests or 0,
        limit_max_requests_jitter=config.limit_max_requests_jitter,
        limit_worker_memory=config.limit_worker_memory or 0,
        worker_lifetime=config.worker_lifetime or 0.0,
        pid_file=config.pid_file or "",
    )
    if isinstance(result, int):
        if config.uds and os.path.exists(config.uds):
            os.unlink(config.uds)
        return result
    control_fd, max_requests = result
    return run_worker(config, logger, app, control_fd, max_requests)


def _header(value: str) -> tuple[str, str]:
    name, sep, val = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"invalid header {value!r}: expected name:value")
    return name.strip(), val.strip()


def build_parser() -> argparse.ArgumentParser:
    from pronghorn import __version__

    p = argparse.ArgumentParser(prog="pronghorn", description="Run an ASGI application with Pronghorn.")
    p.add_argument("app", metavar="APP", help="The ASGI app, as module:attribute")
    p.add_argument("--host", default="127.0.0.1", help="Bind socket to this host. [default: 127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="Bind socket to this port (0: any free port). [default: 8000]")
    p.add_argument("--uds", help="Bind to a UNIX domain socket.")
    p.add_argument("--fd", type=int, help="Bind to socket from this file descriptor.")
    p.add_argument("--workers", type=int, default=None, help="Number of worker processes. [default: $WEB_CONCURRENCY or 1]")
    p.add_argument("--preload", action="store_true", help="Import the app in the parent before forking workers (copy-on-write).")
    p.add_argument("--timeout-worker-healthcheck", type=float, default=30.0, help="Replace a worker whose event loop has not answered this long (s). [default: 30]")
    p.add_argument("--limit-max-requests", type=int, default=None, help="Recycle a worker after this many requests.")
    p.add_argument("--limit-max-requests-jitter", type=int, default=0, help="Each worker's request limit is drawn in N..N+jitter.")
    p.add_argument("--limit-worker-memory", type=int, default=None, help="Recycle a worker whose RSS passes this many MiB.")
    p.add_argument("--worker-lifetime", type=float, default=None, help="Recycle a worker after this many seconds.")
    p.add_argument("--pid-file", default=None, help="Write the server's PID to this file.")
    p.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto", help="Event loop. [default: auto]")
    p.add_argument("--lifespan", choices=["auto", "on", "off"], default="auto", help="Lifespan mode. [default: auto]")
    p.add_argument("--log-level", choices=list(_logging.LEVELS), default="info", help="Log level. [default: info]")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True, help="Enable/disable access log.")
    p.add_argument("--use-colors", action=argparse.BooleanOptionalAction, default=None, help="Enable/disable colours.")
    p.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Use X-Forwarded-Proto and X-Forwarded-For from trusted peers to set scheme and client.",
    )
    p.add_argument("--forwarded-allow-ips", default=None, help="Comma-separated IPs/networks to trust with proxy headers.")
    p.add_argument("--root-path", default="", help="Set the ASGI 'root_path' for applications behind a path prefix.")
    p.add_argument("--limit-concurrency", type=int, default=None, help="Maximum concurrent connections or requests before 503.")
    p.add_argument("--backlog", type=int, default=2048, help="Maximum number of connections to hold in backlog.")
    p.add_argument("--timeout-keep-alive", type=float, default=5.0, help="Close keep-alive connections idle this long (s).")
    p.add_argument("--timeout-graceful-shutdown", type=float, default=None, help="Maximum time to wait for graceful shutdown (s).")
    p.add_argument("--timeout-header-read", type=float, default=10.0, help="Maximum time to receive a request head (s).")
    p.add_argument("--limit-request-line", type=int, default=8192, help="Maximum request line length (414 beyond).")
    p.add_argument("--limit-request-head", type=int, default=65536, help="Maximum request head size (431 beyond).")
    p.add_argument("--limit-request-fields", type=int, default=100, help="Maximum number of request headers (431 beyond).")
    p.add_argument("--header", dest="headers", action="append", type=_header, default=[], help="Default response header name:value.")
    p.add_argument("--server-header", action=argparse.BooleanOptionalAction, default=True, help="Enable/disable the Server header.")
    p.add_argument("--date-header", action=argparse.BooleanOptionalAction, default=True, help="Enable/disable the Date header.")
    p.add_argument("--factory", action="store_true", help="Treat APP as an application factory.")
    p.add_argument("--app-dir", default=".", help="Look for APP in this directory. [default: .]")
    p.add_argument("--reset-contextvars", action="store_true", help="Run each request in a fresh contextvars.Context.")
    p.add_argument("--version", action="version", version=f"Running pronghorn {__version__} with "
                   f"{sys.implementation.name} {'.'.join(map(str, sys.version_info[:3]))} on {sys.platform}")
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers is None:
        try:
            args.workers = int(os.environ.get("WEB_CONCURRENCY", "1") or 1)
        except ValueError:
            parser.error("WEB_CONCURRENCY must be a whole number")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.uds and args.fd is not None:
        parser.error("--uds and --fd cannot be used together")
    config = Config(**vars(args))
    sys.exit(run(config))


if __name__ == "__main__":
    main()
