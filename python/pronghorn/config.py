"""Configuration: every option of the command line, its default, its
environment variable (PRONGHORN_<OPTION>) and its validation.

The OPTIONS table is the single place an option is defined: the Config
dataclass is made from it, and it is the source for the parser (cli.py), for
pronghorn.run(**kwargs), for the options handed to the engine and the
supervisor (`to`: server.py passes them by name, and the C++ reads each by
name, src/bridge/options.h) and for the option table in docs/options.md."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(Exception):
    """A bad configuration: reported as one line, exit code 2."""


@dataclass(frozen=True)
class Option:
    name: str  # the Config field
    flag: str  # --flag
    kind: str  # "str", "int", "float", "bool", "flag" (store_true), "choice", "list"
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    # "built", or why the option is refused when given (not built yet).
    refused: str = ""
    negatable: bool = False  # --x/--no-x
    metavar: str | None = None
    # Where the value goes as it is, under this name: "engine" (_core.Server,
    # read in src/bridge/module.cpp) or "supervisor" (_core.supervise, read in
    # src/bridge/supervise.cpp). Empty: used in Python, or worked out first.
    to: str = ""
    secret: bool = False  # kept out of Config's repr

    @property
    def env(self) -> str:
        return "PRONGHORN_" + self.flag.lstrip("-").replace("-", "_").upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", "--host", "str", "127.0.0.1", "Bind socket to this host.", to="supervisor"),
    Option("port", "--port", "int", 8000, "Bind socket to this port. If 0, an available port will be picked.", to="supervisor"),
    Option("uds", "--uds", "str", None, "Bind to a UNIX domain socket."),
    Option("fd", "--fd", "int", None, "Bind to socket from this file descriptor."),
    Option("reload", "--reload", "flag", False, "Enable auto-reload (inotify, in the supervisor).", to="supervisor"),
    Option("reload_dirs", "--reload-dir", "list", None, "Watch these directories instead of the current one.", metavar="PATH"),
    Option("reload_includes", "--reload-include", "list", None, "Glob patterns of files to watch. [default: *.py]"),
    Option("reload_excludes", "--reload-exclude", "list", None, "Glob patterns of files to ignore. [default: .* .py[cod] .sw.* ~*]"),
    Option("reload_delay", "--reload-delay", "float", 0.25, "Quiet time after a change before reloading (s).", to="supervisor"),
    Option("workers", "--workers", "int", None, "Number of worker processes. Defaults to $WEB_CONCURRENCY, or 1.", to="supervisor"),
    Option("loop", "--loop", "choice", "auto", "Event loop implementation.", choices=("auto", "asyncio", "uvloop")),
    Option("http", "--http", "choice", "auto",
           "HTTP protocol implementation (every value is served by Pronghorn's own C++ HTTP/1.1, and by its "
           "HTTP/2 with --http2).",
           choices=("auto", "h11", "httptools", "zttp")),
    Option("http2", "--http2", "flag", False,
           "Enable HTTP/2: ALPN h2 on TLS (preferred over http/1.1 when the client offers both) and h2c with "
           "prior knowledge on the plain port, as uvicorn's --http2 (which Pronghorn allows with any --http value); "
           "WebSockets over HTTP/2 (RFC 8441 extended CONNECT) unless --ws none. "
           "Off by default, so that a uvicorn deployment is served as before.",
           to="engine"),
    Option("http2_max_concurrent_streams", "--http2-max-concurrent-streams", "int", 100,
           "HTTP/2: streams a client may have open on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).", to="engine"),
    Option("http2_initial_window_size", "--http2-initial-window-size", "int", 65535,
           "HTTP/2: each stream's receive window in bytes, the most request body buffered before the app reads it.",
           to="engine"),
    Option("http2_max_frame_size", "--http2-max-frame-size", "int", 16384,
           "HTTP/2: largest frame payload the server accepts (16384..16777215).", to="engine"),
    Option("http2_max_header_list_size", "--http2-max-header-list-size", "int", 65536,
           "HTTP/2: largest request header list (RFC 9113 counting); larger gets 431.", to="engine"),
    Option("http2_keep_alive_interval", "--http2-keep-alive-interval", "float", 0.0,
           "HTTP/2: send a PING on each connection every N seconds (0: never).", to="engine"),
    Option("ws", "--ws", "choice", "auto",
           "WebSocket protocol implementation (every value but none uses Pronghorn's own C++ WebSockets).",
           choices=("auto", "none", "websockets", "websockets-sansio", "wsproto")),
    Option("ws_max_size", "--ws-max-size", "int", 16777216, "WebSocket max message size in bytes."),
    Option("ws_max_queue", "--ws-max-queue", "int", 32, "WebSocket message queue length (unread messages before reading pauses)."),
    Option("ws_ping_interval", "--ws-ping-interval", "float", 20.0, "WebSocket ping interval (s); 0 for none."),
    Option("ws_ping_timeout", "--ws-ping-timeout", "float", 20.0, "WebSocket ping timeout (s); 0 for none."),
    Option("ws_per_message_deflate", "--ws-per-message-deflate", "str", "True",
           "WebSocket per-message-deflate compression (True/False)."),
    Option("lifespan", "--lifespan", "choice", "auto", "Lifespan implementation.", choices=("auto", "on", "off")),
    Option("interface", "--interface", "choice", "auto", "Application interface.", choices=("auto", "asgi3", "asgi2", "wsgi")),
    Option("env_file", "--env-file", "str", None, "Environment configuration file (dotenv), loaded before the app.", metavar="PATH"),
    Option("log_config", "--log-config", "str", None, "Logging configuration file (.ini, .json, .yaml).", metavar="PATH"),
    Option("log_level", "--log-level", "choice", "info", "Log level.", choices=LOG_LEVELS),
    Option("access_log", "--access-log", "bool", True, "Enable/disable the access log.", negatable=True),
    Option("access_log_format", "--access-log-format", "str", None,
           "Access log line format with gunicorn's fields (h r s B D {header}i {header}o ..., written as in "
           "gunicorn), or 'json' for one JSON object per line. [default: uvicorn's line]", metavar="FORMAT", to="engine"),
    Option("use_colors", "--use-colors", "bool", None, "Enable/disable colourised logging.", negatable=True),
    Option("proxy_headers", "--proxy-headers", "bool", True,
           "Enable/disable X-Forwarded-Proto and X-Forwarded-For from trusted peers.", negatable=True, to="engine"),
    Option("server_header", "--server-header", "bool", True, "Enable/disable the default Server header.", negatable=True, to="engine"),
    Option("date_header", "--date-header", "bool", True, "Enable/disable the default Date header.", negatable=True, to="engine"),
    Option("forwarded_allow_ips", "--forwarded-allow-ips", "str", None,
           "Comma-separated IPs or networks to trust with proxy headers; '*' trusts all. "
           "Defaults to $FORWARDED_ALLOW_IPS, or '127.0.0.1,::1'."),
    Option("root_path", "--root-path", "str", "", "ASGI 'root_path' for apps mounted below a URL path.", to="engine"),
    Option("limit_concurrency", "--limit-concurrency", "int", None, "Maximum concurrent connections or requests before 503.", to="engine"),
    Option("backlog", "--backlog", "int", 2048, "Maximum number of connections to hold in backlog.", to="supervisor"),
    Option("limit_max_requests", "--limit-max-requests", "int", None, "Recycle a worker after this many requests.", to="supervisor"),
    Option("limit_max_requests_jitter", "--limit-max-requests-jitter", "int", 0,
           "Each worker's request limit is drawn in N..N+jitter.", to="supervisor"),
    Option("timeout_keep_alive", "--timeout-keep-alive", "float", 5.0, "Close idle keep-alive connections after this (s).", to="engine"),
    Option("timeout_graceful_shutdown", "--timeout-graceful-shutdown", "float", None,
           "Maximum time to wait for graceful shutdown (s).", to="supervisor"),
    Option("timeout_worker_healthcheck", "--timeout-worker-healthcheck", "float", 30.0,
           "Replace a worker whose event loop has not answered this long (s). uvicorn: 5.", to="supervisor"),
    Option("ssl_keyfile", "--ssl-keyfile", "str", None, "SSL key file (PEM; may be encrypted).", metavar="PATH"),
    Option("ssl_certfile", "--ssl-certfile", "str", None, "SSL certificate file (PEM, with its chain).", metavar="PATH"),
    Option("ssl_keyfile_password", "--ssl-keyfile-password", "str", None, "SSL keyfile password.", secret=True),
    Option("ssl_version", "--ssl-version", "int", 17,
           "SSL version (Python's ssl.PROTOCOL_* number): 17, 2 or 16: TLS 1.2 and 1.3; 5: TLS 1.2 only. "
           "TLS 1.0/1.1 are refused."),
    Option("ssl_cert_reqs", "--ssl-cert-reqs", "int", 0,
           "Client certificate: 0 not asked, 1 asked (checked if given), 2 required."),
    Option("ssl_ca_certs", "--ssl-ca-certs", "str", None, "CA certificates file, for client certificates.", metavar="PATH"),
    Option("ssl_ciphers", "--ssl-ciphers", "str", "TLSv1",
           "OpenSSL cipher list for TLS 1.2. uvicorn's default 'TLSv1' means Pronghorn's modern list "
           "(ECDHE/DHE with AES-GCM or ChaCha20-Poly1305)."),
    Option("headers", "--header", "list", None, "Default response header as name:value (repeatable).", metavar="NAME:VALUE"),
    Option("app_dir", "--app-dir", "str", "", "Look for APP in this directory (added to sys.path). [default: .]"),
    Option("h11_max_incomplete_event_size", "--h11-max-incomplete-event-size", "int", None,
           "Maximum size of an incomplete request head (same as --limit-request-head)."),
    Option("reset_contextvars", "--reset-contextvars", "flag", False, "Run each request in a fresh contextvars.Context.", to="engine"),
    Option("factory", "--factory", "flag", False, "Treat APP as an application factory: a () -> ASGI app callable."),
    # Pronghorn's own.
    Option("timeout_header_read", "--timeout-header-read", "float", 10.0,
           "Maximum time to receive a request head (s); slower clients get 408.", to="engine"),
    Option("limit_request_line", "--limit-request-line", "int", 8192, "Maximum request line length; longer gets 414.", to="engine"),
    Option("limit_request_head", "--limit-request-head", "int", 65536, "Maximum request head size; larger gets 431.", to="engine"),
    Option("limit_request_fields", "--limit-request-fields", "int", 100, "Maximum number of request headers; more gets 431.", to="engine"),
    Option("preload", "--preload", "flag", False, "Import the app in the parent before forking workers (copy-on-write)."),
    Option("limit_worker_memory", "--limit-worker-memory", "int", None, "Recycle a worker whose RSS passes this many MiB.", to="supervisor"),
    Option("worker_lifetime", "--worker-lifetime", "float", None, "Recycle a worker after this many seconds.", to="supervisor"),
    Option("reuse_port", "--reuse-port", "flag", False, "Give each worker its own SO_REUSEPORT socket.", to="supervisor"),
    Option("pid_file", "--pid-file", "str", None, "Write the server's PID to this file.", metavar="PATH", to="supervisor"),
    Option("pre_start", "--pre-start", "list", None,
           "Shell command run by the supervisor before any worker starts, and again before the workers "
           "of a SIGHUP reload (repeatable, in order; a failure stops the start, or keeps the old workers).",
           metavar="COMMAND", to="supervisor"),
    Option("send_thread", "--send-thread", "bool", None,
           "Always/never send small responses from a second thread per worker, off the event loop "
           "[default: with fewer workers than CPUs, while requests cost the loop 50 us or more].", negatable=True),
    Option("asyncio_tasks", "--asyncio-tasks", "flag", False,
           "Run each request in an asyncio.Task, as uvicorn does, instead of Pronghorn's request task "
           "(which starts the app at once and is not listed by asyncio.all_tasks()).", to="engine"),
    Option("asgi_spec_version", "--asgi-spec-version", "choice", "2.3",
           "ASGI HTTP spec version the scope advertises. 2.3 (uvicorn's): send() after the client left is "
           "dropped silently; 2.4: it raises an OSError (Starlette then stops listening for disconnects).",
           choices=("2.3", "2.4"), to="engine"),
    Option("asgi_pathsend", "--asgi-pathsend", "flag", False,
           "Offer the http.response.pathsend extension (zero-copy FileResponse; Starlette's GZipMiddleware "
           "passes such responses uncompressed, so it is off by default).", to="engine"),
    Option("timeout_graceful_streams", "--timeout-graceful-streams", "float", 1.0,
           "On a graceful stop, responses still streaming with no declared length (event streams) are ended "
           "after this (s): the app's receive() gets http.disconnect. Capped by --timeout-graceful-shutdown."),
    Option("metrics", "--metrics", "flag", False,
           "Serve Prometheus metrics of all workers at http://METRICS-BIND/metrics, from the supervisor "
           "(docs/metrics.md); runs a supervisor even with one worker.", to="supervisor"),
    Option("metrics_bind", "--metrics-bind", "str", "127.0.0.1:9090",
           "Address of the --metrics endpoint, HOST:PORT ([::1]:9090 for IPv6).", metavar="HOST:PORT"),
    # Static files served by the engine (granian's option names).
    Option("static_path_route", "--static-path-route", "list", None,
           "URL path whose requests are answered from --static-path-mount by the engine, never by the app "
           "(repeatable: the n-th route serves the n-th mount; matched in order). [default with one mount: /static]",
           metavar="ROUTE"),
    Option("static_path_mount", "--static-path-mount", "list", None,
           "Directory of static files served under --static-path-route (repeatable, paired in order).",
           metavar="DIR"),
    Option("static_path_expires", "--static-path-expires", "int", None,
           "Cache-Control max-age and Expires of static files, in seconds [default: none; 0: none]."),
)

OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


class _ConfigMethods:
    """What Config does; its fields come from OPTIONS (see _config_class)."""

    @property
    def supervised(self) -> bool:
        """A parent process is needed for several workers, reload, or recycling; and as PID 1
        (a container's init): the supervisor reaps orphaned processes the app leaves behind,
        which a lone worker would leave as zombies."""
        return (
            os.getpid() == 1
            or bool(self.pre_start)
            or (self.workers or 1) > 1
            or self.reload
            or bool(self.limit_max_requests)
            or bool(self.limit_worker_memory)
            or bool(self.worker_lifetime)
            # The supervisor serves /metrics (it runs no Python, and a worker
            # that is replaced keeps its counts there).
            or self.metrics
        )

    def _validate_tls(self) -> None:
        if not self.ssl_certfile:
            if self.ssl_keyfile:
                raise ConfigError("--ssl-keyfile needs --ssl-certfile")
            return
        if self.ssl_version in (3, 4):
            raise ConfigError(f"--ssl-version {self.ssl_version}: TLS 1.0 and 1.1 are not supported (TLS 1.2 and 1.3 are)")
        if self.ssl_version not in (2, 5, 16, 17):
            raise ConfigError(f"--ssl-version {self.ssl_version}: use 17 (TLS 1.2 and 1.3) or 5 (TLS 1.2 only)")
        if self.ssl_cert_reqs not in (0, 1, 2):
            raise ConfigError(f"--ssl-cert-reqs {self.ssl_cert_reqs}: must be 0, 1 or 2")
        if self.ssl_cert_reqs and not self.ssl_ca_certs:
            raise ConfigError("--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs (the CAs client certificates must chain to)")

    def validate(self) -> "Config":
        """Checks ranges, conflicts and files; raises ConfigError with one line."""
        for o in OPTIONS:
            value = getattr(self, o.name)
            if o.refused and (o.name in self.given or (value != o.default and value not in (None, False))):
                raise ConfigError(f"{o.flag}: {o.refused}")
        self._validate_tls()
        if self.ws_max_size is not None and self.ws_max_size < 1:
            raise ConfigError("--ws-max-size must be at least 1")
        if self.ws_max_queue is not None and self.ws_max_queue < 1:
            raise ConfigError("--ws-max-queue must be at least 1")
        for name in ("ws_ping_interval", "ws_ping_timeout"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        if self.access_log_format:
            from pronghorn import _core

            try:
                _core.check_access_log_format(self.access_log_format)
            except ValueError as exc:
                raise ConfigError(f"--access-log-format: {exc}") from None
        if _truth(self.ws_per_message_deflate) is None:
            raise ConfigError(f"--ws-per-message-deflate: {self.ws_per_message_deflate!r} is not a boolean")
        if self.interface == "wsgi":
            raise ConfigError("--interface wsgi: WSGI apps are not supported yet")
        if self.workers is None:
            env = os.environ.get("WEB_CONCURRENCY", "")
            try:
                self.workers = int(env) if env else 1
            except ValueError:
                raise ConfigError(f"WEB_CONCURRENCY must be a whole number, not {env!r}") from None
        _at_least("--workers", self.workers, 1)
        _in_range("--port", self.port, 0, 65535)
        _at_least("--backlog", self.backlog, 1)
        _at_least("--timeout-keep-alive", self.timeout_keep_alive, 0)
        _at_least("--timeout-header-read", self.timeout_header_read, 0.001)
        _at_least("--timeout-worker-healthcheck", self.timeout_worker_healthcheck, 0.1)
        _at_least("--reload-delay", self.reload_delay, 0)
        _at_least("--limit-request-line", self.limit_request_line, 16)
        _at_least("--limit-request-fields", self.limit_request_fields, 1)
        _at_least("--limit-max-requests-jitter", self.limit_max_requests_jitter, 0)
        for name in ("limit_concurrency", "limit_max_requests", "limit_worker_memory", "h11_max_incomplete_event_size"):
            if getattr(self, name) is not None:
                _at_least(OPTIONS_BY_NAME[name].flag, getattr(self, name), 1)
        _at_least("--timeout-graceful-streams", self.timeout_graceful_streams, 0)
        _in_range("--http2-max-concurrent-streams", self.http2_max_concurrent_streams, 1, 2**31 - 1)
        _in_range("--http2-initial-window-size", self.http2_initial_window_size, 1, 2**31 - 1)
        _in_range("--http2-max-frame-size", self.http2_max_frame_size, 16384, 16777215)
        _in_range("--http2-max-header-list-size", self.http2_max_header_list_size, 1024, 2**31 - 1)
        _at_least("--http2-keep-alive-interval", self.http2_keep_alive_interval, 0)
        for name in ("timeout_graceful_shutdown", "worker_lifetime"):
            if getattr(self, name) is not None:
                _at_least(OPTIONS_BY_NAME[name].flag, getattr(self, name), 0)
        if self.h11_max_incomplete_event_size is not None:
            # uvicorn's name for the head limit; a small value lowers the line limit with it.
            self.limit_request_head = self.h11_max_incomplete_event_size
            if "limit_request_line" not in self.given:
                self.limit_request_line = min(self.limit_request_line, self.limit_request_head)
        if self.limit_request_head < self.limit_request_line:
            raise ConfigError("--limit-request-head must be at least --limit-request-line")
        if self.uds and self.fd is not None:
            raise ConfigError("--uds and --fd cannot be used together")
        if self.reuse_port and (self.uds or self.fd is not None):
            raise ConfigError("--reuse-port needs a TCP --host/--port, not --uds or --fd")
        if self.preload and self.reload:
            raise ConfigError("--preload and --reload cannot be used together: reload must import the app afresh")
        if self.fd is not None and self.fd < 0:
            raise ConfigError("--fd must be a file descriptor number (0 or more)")
        if isinstance(self.log_level, str) and self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        for path_option in ("env_file", "log_config"):
            path = getattr(self, path_option)
            if isinstance(path, str) and not os.access(path, os.R_OK):
                flag = OPTIONS_BY_NAME[path_option].flag
                raise ConfigError(f"{flag}: cannot read {path!r}: {_why_unreadable(path)}")
        if self.app_dir and not os.path.isdir(self.app_dir):
            raise ConfigError(f"--app-dir: {self.app_dir!r} is not a directory")
        for d in self.reload_dirs or ():
            if not os.path.isdir(d):
                raise ConfigError(f"--reload-dir: {d!r} is not a directory")
        self.header_pairs = [_parse_header(h) for h in self.headers or ()]
        self.asgi_spec_version = str(self.asgi_spec_version)  # Config(asgi_spec_version=2.4)
        metrics_address(self.metrics_bind)
        if "metrics_bind" in self.given and not self.metrics:
            raise ConfigError("--metrics-bind needs --metrics")
        self._validate_static()
        return self

    def _validate_static(self) -> None:
        """Pairs and ranges; the routes' form and the directories are checked by the
        engine itself (static_spec and _core.check_static: exit 1 before any worker)."""
        for name in ("static_path_route", "static_path_mount"):
            if isinstance(getattr(self, name), (str, os.PathLike)):
                setattr(self, name, [os.fspath(getattr(self, name))])
        routes, mounts = self.static_path_route or [], self.static_path_mount or []
        if routes and not mounts:
            raise ConfigError("--static-path-route needs --static-path-mount (the directory to serve)")
        if mounts and routes and len(routes) != len(mounts):
            raise ConfigError(f"--static-path-route given {len(routes)} time(s) and --static-path-mount "
                              f"{len(mounts)}: give them in pairs")
        if len(mounts) > 1 and not routes:
            raise ConfigError("several --static-path-mount need a --static-path-route each")
        if self.static_path_expires is not None:
            _at_least("--static-path-expires", self.static_path_expires, 0)


# The annotation of each kind of option in Config (None: not given).
_KIND_TYPES = {"str": "str | None", "int": "int | None", "float": "float | None", "bool": "bool | None",
               "flag": "bool", "choice": "str", "list": "list[str] | None"}


def _config_class() -> type:
    """The Config dataclass: `app`, then one field per option in table order, with the table's
    default, then what is worked out from the options."""
    annotations: dict[str, Any] = {"app": "Any"}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": "Config",
        "__doc__": "The server's configuration; `pronghorn.Config(app, **options)` mirrors uvicorn.Config. "
                   "One field per option of the OPTIONS table.",
    }
    for o in OPTIONS:
        annotations[o.name] = _KIND_TYPES[o.kind]
        namespace[o.name] = field(default=o.default, repr=not o.secret)
    # Made once in the process that starts the workers: every worker derives
    # the same session-ticket keys from it, so a ticket resumes on any of them.
    annotations["tls_ticket_secret"] = "bytes"
    namespace["tls_ticket_secret"] = field(default_factory=lambda: os.urandom(32), repr=False)
    # Set by validate(): parsed --header values.
    annotations["header_pairs"] = "list[tuple[str, str]]"
    namespace["header_pairs"] = field(default_factory=list)
    # Options the user gave explicitly (command line, environment, keyword),
    # so that a refused option is refused even when given its default value.
    annotations["given"] = "set[str]"
    namespace["given"] = field(default_factory=set)
    namespace["__annotations__"] = annotations
    return dataclass(type("Config", (_ConfigMethods,), namespace))


Config = _config_class()


def options_for(config: Any, to: str) -> dict[str, Any]:
    """The options that go as they are to the engine or the supervisor, by name."""
    return {o.name: getattr(config, o.name) for o in OPTIONS if o.to == to}


def _truth(value: Any) -> bool | None:
    """A boolean option given as text (click's BOOLEAN), or None if it is not one."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off"):
        return False
    return None


def ws_spec(config: "Config") -> dict | None:
    """The WebSocket options as the engine takes them (_core.Server(ws=...)), or None for --ws none."""
    if config.ws == "none":
        return None
    return {
        "max_size": config.ws_max_size if config.ws_max_size is not None else 16777216,
        "max_queue": config.ws_max_queue if config.ws_max_queue is not None else 32,
        # None or 0: no pings (uvicorn takes None).
        "ping_interval": config.ws_ping_interval or None,
        "ping_timeout": config.ws_ping_timeout or None,
        "per_message_deflate": bool(_truth(config.ws_per_message_deflate)),
    }


def tls_spec(config: "Config") -> dict | None:
    """The TLS options as the engine takes them (_core.Server(tls=...)), or None."""
    if not config.ssl_certfile:
        return None
    min_version = max_version = 0
    if config.ssl_version == 5:  # ssl.PROTOCOL_TLSv1_2
        min_version = max_version = 0x0303  # TLS 1.2 only
    return {
        "certfile": config.ssl_certfile,
        "keyfile": config.ssl_keyfile,
        "password": config.ssl_keyfile_password,
        "ca_certs": config.ssl_ca_certs,
        "ciphers": "" if config.ssl_ciphers in (None, "", "TLSv1") else config.ssl_ciphers,
        "cert_reqs": int(config.ssl_cert_reqs),
        "min_version": min_version,
        "max_version": max_version,
        # ALPN picks the first of the server's protocols the client offers.
        "alpn": ["h2", "http/1.1"] if config.http2 else ["http/1.1"],
        "ticket_secret": config.tls_ticket_secret,
    }


def metrics_address(value: Any) -> tuple[str, int]:
    """--metrics-bind as (host, port): HOST:PORT, or [IPv6]:PORT."""
    text = str(value).strip()
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"--metrics-bind {text!r}: write an IPv6 address in brackets, as [::1]:9090")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--metrics-bind {text!r}: expected HOST:PORT with a port from 0 to 65535")
    return host, int(port_text)
def static_spec(config: "Config") -> dict | None:
    """The static-file options as the engine takes them (_core.Server(static_files=...)), or None."""
    mounts = list(config.static_path_mount or ())
    if not mounts:
        return None
    routes = list(config.static_path_route or ()) or ["/static"]  # granian's default route
    return {"routes": routes, "mounts": mounts, "expires": config.static_path_expires or None}


def _why_unreadable(path: str) -> str:
    if not os.path.exists(path):
        return "no such file"
    return "permission denied"


def _at_least(flag: str, value: float, low: float) -> None:
    if value < low:
        raise ConfigError(f"{flag} must be at least {low:g}, not {value:g}")


def _in_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{flag} must be between {low} and {high}, not {value}")


def _parse_header(value: Any) -> tuple[str, str]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        name, val = str(value[0]), str(value[1])
    else:
        name, sep, val = str(value).partition(":")
        if not sep:
            raise ConfigError(f"--header {value!r}: expected name:value")
    name, val = name.strip(), val.strip()
    if not name or any(c in name for c in " \t\r\n:()<>@,;\\\"/[]?={}") or any(c in val for c in "\r\n\0"):
        raise ConfigError(f"--header {value!r}: not a valid header")
    return name, val


def config_fields() -> set[str]:
    return {f.name for f in fields(Config)} - {"header_pairs", "given"}


DEFAULT_RELOAD_INCLUDES = ["*.py"]
DEFAULT_RELOAD_EXCLUDES = [".*", ".py[cod]", ".sw.*", "~*"]


def reload_patterns(includes: list[str] | None, excludes: list[str] | None) -> tuple[list[str], list[str]]:
    """uvicorn's rule: given patterns add to the defaults, and a pattern given
    on one side removes the same default from the other side."""
    includes, excludes = list(includes or []), list(excludes or [])
    inc = [p for p in DEFAULT_RELOAD_INCLUDES if p not in excludes] + [p for p in includes if p not in DEFAULT_RELOAD_INCLUDES]
    exc = [p for p in DEFAULT_RELOAD_EXCLUDES if p not in includes] + [p for p in excludes if p not in DEFAULT_RELOAD_EXCLUDES]
    return inc, exc


BOOL_WORDS: dict[str, bool] = {
    "1": True, "true": True, "yes": True, "on": True,
    "0": False, "false": False, "no": False, "off": False,
}

CONVERTERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}
