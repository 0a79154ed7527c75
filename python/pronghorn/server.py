"""Serving: load the app, run lifespan, hand sockets to the C++ engine, wait
for a shutdown signal; or, for several workers, hand over to the C++
supervisor. Runs once per process; everything per request is in _core."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import logging.config
import os
import signal
import sys
import traceback
from typing import Any

from pronghorn import _logging
from pronghorn.config import (Config, ConfigError, metrics_address, options_for, reload_patterns, static_spec,
                               tls_spec, ws_spec)

EXIT_OK = 0
EXIT_IMPORT_ERROR = 1
EXIT_USAGE = 2
EXIT_STARTUP_FAILURE = 3


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


class ASGI2Middleware:
    """Runs an ASGI 2 app (scope -> instance; await instance(receive, send))."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def _is_asgi3(app: Any) -> bool:
    if inspect.isclass(app):
        return hasattr(app, "__await__")
    if inspect.isfunction(app):
        return asyncio.iscoroutinefunction(app)
    return asyncio.iscoroutinefunction(getattr(app, "__call__", None))


def load_app(config: Config, logger) -> Any:
    """Returns the ASGI app or exits with code 1, as uvicorn does."""
    sys.path.insert(0, os.path.abspath(config.app_dir or "."))
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
    interface = config.interface
    if interface == "auto":
        interface = "asgi3" if _is_asgi3(app) else "asgi2"
    if interface == "asgi2":
        app = ASGI2Middleware(app)
    return app


def configure_logging(config: Config) -> logging.Logger:
    """The default uvicorn-style handlers, then the user's --log-config on top."""
    level = config.log_level if isinstance(config.log_level, str) else logging.getLevelName(config.log_level).lower()
    logger = _logging.configure(level if level in _logging.LEVELS else "info", config.use_colors)
    log_config = config.log_config
    if log_config is None:
        return logger
    try:
        if isinstance(log_config, dict):
            logging.config.dictConfig(log_config)
        elif str(log_config).endswith(".json"):
            with open(log_config) as f:
                logging.config.dictConfig(json.load(f))
        elif str(log_config).endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError:
                raise ConfigError("--log-config: YAML files need PyYAML (pip install pyyaml)") from None
            with open(log_config) as f:
                logging.config.dictConfig(yaml.safe_load(f))
        else:
            logging.config.fileConfig(log_config, disable_existing_loggers=False)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"--log-config {log_config}: {type(exc).__name__}: {exc}".replace("\n", " ")) from None
    return logging.getLogger("pronghorn.error")


def load_env_file(config: Config) -> None:
    if not config.env_file:
        return
    try:
        from dotenv import load_dotenv
    except ImportError:
        raise ConfigError("--env-file needs python-dotenv (pip install python-dotenv)") from None
    load_dotenv(dotenv_path=config.env_file, override=True)


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


def _use_send_thread(config: Config) -> bool:
    """--send-thread: always used; --no-send-thread: never; by default the
    thread exists with a spare CPU and is used while the app is costly
    (docs/performance.md)."""
    if config.send_thread is not None:
        return config.send_thread
    return (config.workers or 1) < len(os.sched_getaffinity(0))


def _tls_files_ok(tls: dict | None, logger) -> bool:
    """Builds the TLS context once to check the files: a bad path, a wrong
    password or a key that does not match its certificate is one line."""
    if tls is None:
        return True
    from pronghorn import _core

    try:
        _core.check_tls(tls)
    except ValueError as exc:
        logger.error("TLS: %s", exc)
        return False
    return True


def _static_files_ok(spec: dict | None, logger) -> bool:
    """Checks the static routes and opens their directories once, as a worker
    would: a missing directory or a bad route is one line (exit 1)."""
    if spec is None:
        return True
    from pronghorn import _core

    try:
        _core.check_static(spec)
    except ValueError as exc:
        logger.error("%s", exc)
        return False
    return True


def _url(host: str, port: int, tls: bool = False) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


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
        # Kept until the loop is finished: request tasks cancelled then still
        # reach the engine.
        self.server = None
        self.signals: list[int] = []
        # The supervisor replaces this worker (SIGHUP from it: a reload, a
        # recycle) while the server goes on: open WebSockets get 1012.
        self.restart = False

    def _on_signal(self, sig: int = signal.SIGTERM) -> None:
        if sig == signal.SIGHUP:
            self.restart = True
        # Only a second SIGINT (CTRL+C again) forces the exit, as in uvicorn.
        # Another SIGTERM is the same request again: under systemd
        # (KillMode=control-group), `timeout` or `kill -- -PGID` a worker gets
        # one from there and one from the supervisor, and must still run the
        # lifespan shutdown.
        if sig == signal.SIGINT and self.stop_event is not None and self.stop_event.is_set():
            self.force_exit = True
        if self.stop_event is not None:
            self.stop_event.set()

    async def serve(self) -> int:
        from pronghorn import _core
        from pronghorn._lifespan import Lifespan

        config, logger = self.config, self.logger
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        if self.control_fd >= 0:
            # Under the supervisor, Ctrl+C in a terminal reaches every process
            # of the group: the parent owns it (it sends SIGTERM, then SIGKILL
            # on a second Ctrl+C), so a worker ignores SIGINT.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.signals = [signal.SIGTERM, signal.SIGHUP]
        else:
            self.signals = [signal.SIGINT, signal.SIGTERM]
        for sig in self.signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        logger.info("Started server process [%d]", os.getpid())

        # Read here too under a supervisor: the files may have changed since
        # the parent checked them (before a SIGHUP). One line, before lifespan.
        tls = tls_spec(config)
        if not _tls_files_ok(tls, logger):
            return EXIT_IMPORT_ERROR
        statics = static_spec(config)
        if not _static_files_ok(statics, logger):
            return EXIT_IMPORT_ERROR
        state: dict = {}
        lifespan = Lifespan(self.app, config.lifespan, logger, state) if config.lifespan != "off" else None
        if lifespan is not None and not await lifespan.startup():
            return EXIT_STARTUP_FAILURE

        forwarded = config.forwarded_allow_ips
        if forwarded is None:
            forwarded = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
        elif isinstance(forwarded, (list, tuple)):
            forwarded = ",".join(forwarded)
        options = options_for(config, "engine")
        options.update(
            state=state,
            forwarded_allow_ips=forwarded,
            headers=config.header_pairs,
            access_log=config.access_log and logging.getLogger("pronghorn.access").isEnabledFor(logging.INFO),
            access_logger=logging.getLogger("pronghorn.access") if config.log_config else None,
            access_log_colours=sys.stdout.isatty() if config.use_colors is None else config.use_colors,
            control_fd=self.control_fd,
            max_requests=self.max_requests,
            send_thread=_use_send_thread(config),
            send_thread_always=config.send_thread is True,
            tls=tls,
            ws=ws_spec(config),
            # --metrics (a supervisor option): count into this worker's slot.
            metrics=config.metrics,
            static_files=statics,
        )
        server = _core.Server(self.app, loop, logger, options)
        self.server = server
        try:
            if config.fd is not None:
                where = server.listen_fd(config.fd)
                message = f"Pronghorn running on socket {where} (Press CTRL+C to quit)"
            elif config.uds:
                server.listen_unix(config.uds, config.backlog)
                message = f"Pronghorn running on unix socket {config.uds} (Press CTRL+C to quit)"
            else:
                host, port = server.listen_tcp(config.host, config.port, config.backlog, config.reuse_port)
                message = f"Pronghorn running on {_url(config.host, port, bool(config.ssl_certfile))} (Press CTRL+C to quit)"
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
        websockets = server.begin_shutdown(self.restart)
        if websockets:
            logger.info("Closed %d WebSocket(s) to stop (%d).", websockets, 1012 if self.restart else 1001)
        await self._drain(server)
        server.stop()
        server.close_all()
        if lifespan is not None:
            if self.force_exit:
                lifespan.closing = True  # its task is cancelled at exit: not an error
            else:
                await lifespan.shutdown()
        if config.uds and self.control_fd < 0 and os.path.exists(config.uds):
            os.unlink(config.uds)
        logger.info("Finished server process [%d]", os.getpid())
        return EXIT_OK

    async def _drain(self, server) -> None:
        """Waits for open connections and running tasks, within the graceful timeout.

        Responses still streaming with no declared length (event streams) are
        ended after --timeout-graceful-streams: they would hold the stop for as
        long as their clients stay (uvicorn waits for them, or for its timeout)."""
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout_graceful_shutdown
        deadline = None if timeout is None else loop.time() + timeout
        # Streams are ended a moment before the deadline at the latest, so
        # that their tasks see the disconnect before they would be cancelled.
        streams_grace = self.config.timeout_graceful_streams
        if timeout is not None:
            streams_grace = min(streams_grace, max(0.0, timeout - 0.25))
        streams_at = loop.time() + streams_grace
        said_connections = said_tasks = False
        while not self.force_exit:
            connections, tasks = server.connection_count, server.tasks
            if connections == 0 and not tasks:
                return
            if loop.time() >= streams_at:
                cut = server.cut_streams()
                if cut:
                    self.logger.info("Closed %d streaming response(s) to stop.", cut)
                    await asyncio.sleep(0.05)  # their tasks see the disconnect
                    continue
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
        # The stop signals act as before the loop ran again: a further Ctrl+C
        # (or SIGTERM) ends the clean-up instead of being swallowed.
        for sig in worker.signals:
            loop.remove_signal_handler(sig)
        try:
            _finish_loop(loop, logger, 1.0 if worker.force_exit else _FINISH_TIMEOUT)
        except KeyboardInterrupt:
            pass
        finally:
            worker.server = None
            loop.close()


_FINISH_TIMEOUT = 5.0  # seconds for the app's cancelled tasks, and for the executor's threads


def _finish_loop(loop: asyncio.AbstractEventLoop, logger, timeout: float) -> None:
    """What asyncio.run does before it closes its loop (uvicorn runs in it):
    tasks the app left running are cancelled and awaited, so that their
    `finally` blocks run, then async generators and the default executor are
    shut down. Bounded: a task that ignores its cancellation, or a thread
    stuck in a blocking call, does not hold the worker's exit."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        done, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=timeout))
        if pending:
            logger.warning("%d task(s) did not end within %.0f s of their cancellation at exit.", len(pending), timeout)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler(
                    {"message": "unhandled exception during worker shutdown", "exception": task.exception(),
                     "task": task}
                )
    loop.run_until_complete(loop.shutdown_asyncgens())
    try:
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), timeout))
    except asyncio.TimeoutError:
        logger.warning("The default executor's threads did not end within %.0f s at exit.", timeout)


def _bind(config: Config, logger) -> str:
    """Binds the listening socket in the parent; sets config.fd. Returns the log line."""
    from pronghorn import _core

    if config.fd is not None:
        return f"Pronghorn running on socket fd {config.fd} (Press CTRL+C to quit)"
    if config.uds:
        config.fd = _core.bind_unix(config.uds, config.backlog)
        return f"Pronghorn running on unix socket {config.uds} (Press CTRL+C to quit)"
    fd, _host, port = _core.bind_tcp(config.host, config.port, config.backlog, config.reuse_port)
    config.fd = fd
    config.port = port
    return f"Pronghorn running on {_url(config.host, port, bool(config.ssl_certfile))} (Press CTRL+C to quit)"


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
    """Serves `config`: in this process, or as a supervisor of worker processes.

    Raises ConfigError for a bad configuration (the caller prints one line)."""
    config.validate()
    load_env_file(config)
    logger = configure_logging(config)
    from pronghorn import _core

    if config.log_config is not None:
        _core.set_log_sink(_engine_log_sink)
    _systemd_socket(config)

    _core.set_log_level(logger.getEffectiveLevel())
    # With workers, the certificate and key are checked here, before any
    # worker starts (a single process checks them in Worker.serve).
    if config.supervised and not _tls_files_ok(tls_spec(config), logger):
        return EXIT_IMPORT_ERROR
    # Static mounts are checked before anything starts (a worker checks them again).
    if not _static_files_ok(static_spec(config), logger):
        return EXIT_IMPORT_ERROR
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
    app = load_app(config, logger) if config.preload else None
    reload_dirs = [os.path.abspath(d) for d in (config.reload_dirs or [os.getcwd()])]
    reload_includes, reload_excludes = reload_patterns(config.reload_includes, config.reload_excludes)
    if config.reload:
        logger.info("Will watch for changes in these directories: %s", sorted(reload_dirs))
    metrics_host, metrics_port = metrics_address(config.metrics_bind)
    options = options_for(config, "supervisor")
    options.update(
        reload_dirs=reload_dirs,
        reload_includes=reload_includes,
        reload_excludes=reload_excludes,
        listen_fd=config.fd,  # --reuse-port: the first slot's socket; the parent closes it on a stop
        ready_message=message,  # logged by the supervisor, after the pre-start steps
        metrics_host=metrics_host,
        metrics_port=metrics_port,
    )
    result = _core.supervise(options)
    if isinstance(result, int):
        if config.uds and os.path.exists(config.uds):
            os.unlink(config.uds)
        return result
    control_fd, max_requests, listen_fd = result
    if listen_fd >= 0:
        config.fd = listen_fd  # --reuse-port: this worker's own socket
    return run_worker(config, logger, app, control_fd, max_requests)




_ENGINE_LEVELS = {5: 5, 10: logging.DEBUG, 20: logging.INFO, 30: logging.WARNING, 40: logging.ERROR, 50: logging.CRITICAL}


def _engine_log_sink(level: int, message: str) -> None:
    """The engine's own log lines, through the user's logging configuration."""
    logging.getLogger("pronghorn.error").log(_ENGINE_LEVELS.get(level, level), message)
