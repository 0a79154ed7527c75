"""Pronghorn: a C++ ASGI server, a drop-in replacement for uvicorn."""

from pronghorn._core import ClientDisconnected

__version__ = "0.1.0"
__all__ = ["ClientDisconnected", "__version__"]
