"""Log formatting in uvicorn's layout: "INFO:     message" (level, colon, padded to 9 columns)."""

from __future__ import annotations

import logging
import sys

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

_COLOURS = {
    TRACE: "\033[34m",
    logging.DEBUG: "\033[36m",
    logging.INFO: "\033[32m",
    logging.WARNING: "\033[33m",
    logging.ERROR: "\033[31m",
    logging.CRITICAL: "\033[91m",
}


class LevelPrefixFormatter(logging.Formatter):
    def __init__(self, fmt: str = "%(levelprefix)s %(message)s", use_colors: bool = False):
        super().__init__(fmt)
        self.use_colors = use_colors

    def formatMessage(self, record: logging.LogRecord) -> str:
        name = record.levelname
        padding = " " * (8 - len(name))
        if self.use_colors:
            name = f"{_COLOURS.get(record.levelno, '')}{name}\033[0m"
        record.__dict__["levelprefix"] = f"{name}:{padding}"
        return super().formatMessage(record)


def configure(level: str, use_colors: bool | None) -> logging.Logger:
    """Sets up the pronghorn.error (stderr) and pronghorn.access (stdout) loggers."""
    error = logging.getLogger("pronghorn.error")
    access = logging.getLogger("pronghorn.access")
    for logger, stream in ((error, sys.stderr), (access, sys.stdout)):
        colours = stream.isatty() if use_colors is None else use_colors
        handler = logging.StreamHandler(stream)
        handler.setFormatter(LevelPrefixFormatter(use_colors=colours))
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(LEVELS[level])
    logging.getLogger("pronghorn").setLevel(LEVELS[level])
    return error


def reopen_files() -> None:
    """SIGUSR1: close file handlers so that they reopen (after log rotation)."""
    for name in ("pronghorn.error", "pronghorn.access", ""):
        for handler in logging.getLogger(name or None).handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    handler.close()
                finally:
                    handler.release()
