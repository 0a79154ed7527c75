"""Pronghorn: a C++ ASGI server, a drop-in replacement for uvicorn."""

from __future__ import annotations

from typing import Any

from pronghorn._core import ClientDisconnected
from pronghorn.config import Config, ConfigError

try:  # the version is written once, in pyproject.toml; the build writes _version.py from it
    from pronghorn._version import version as __version__
except ImportError:  # imported from a source tree that was never built
    __version__ = "0+unknown"
__all__ = ["ClientDisconnected", "Config", "ConfigError", "run", "__version__"]


def run(app: Any, **kwargs: Any) -> None:
    """Serves `app` (an import string or an ASGI callable), like uvicorn.run().

    Takes the options of the command line as keyword arguments (workers=4,
    port=8000, ...) or a ready `config=Config(...)`. Exits the process with
    the server's exit code; bad configuration is one line and exit code 2."""
    import difflib

    from pronghorn.cli import fail, serve
    from pronghorn.config import config_fields

    for key in kwargs:
        if key != "config" and key not in config_fields():
            close = difflib.get_close_matches(key, sorted(config_fields()), n=1)
            fail(f"no such option: {key}" + (f" (did you mean {close[0]}?)" if close else ""))
    config = kwargs.pop("config", None)
    if config is None:
        config = Config(app, **kwargs)
        config.given = set(kwargs)
    serve(config)
