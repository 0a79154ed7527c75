"""Options are defined once (config.OPTIONS) and read by name in C++ (src/bridge/options.h):
a key that nothing reads, or a value of the wrong type, is a TypeError, never dropped."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

pytestmark = pytest.mark.pronghorn_only

from pronghorn import _core  # noqa: E402
from pronghorn.config import OPTIONS, Config, options_for  # noqa: E402


async def _app(scope, receive, send):  # pragma: no cover - never called
    pass


def _server(options):
    loop = asyncio.new_event_loop()
    try:
        return _core.Server(_app, loop, logging.getLogger("test"), options)
    finally:
        loop.close()


def test_config_fields_are_the_table():
    names = [f.name for f in dataclasses.fields(Config)]
    assert names[0] == "app"
    assert names[1:1 + len(OPTIONS)] == [o.name for o in OPTIONS]
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    assert all(defaults[o.name] == o.default for o in OPTIONS)


def test_every_engine_option_is_read():
    _server(options_for(Config("x:y").validate(), "engine"))  # no TypeError: each key has a reader


def test_unknown_engine_option_is_an_error():
    with pytest.raises(TypeError, match="unknown engine option 'timeout_keepalive'"):
        _server({"timeout_keep_alive": 5.0, "timeout_keepalive": 1.0})


@pytest.mark.parametrize("key, value, expected", [
    ("timeout_keep_alive", "5", "must be a number"),
    ("limit_request_line", -1, "must be an integer >= 0"),
    ("root_path", b"/x", "must be a str"),
    ("ws", {"max_size": 1, "max_sise": 2}, "unknown ws option 'max_sise'"),
    ("tls", {"certfile": 3}, "tls option 'certfile' must be a str or bytes"),
])
def test_wrong_type_is_an_error(key, value, expected):
    with pytest.raises(TypeError, match=expected):
        _server({key: value})


def test_unknown_supervisor_option_fails_before_any_fork():
    with pytest.raises(TypeError, match="unknown supervisor option 'worker'"):
        _core.supervise({"worker": 2})
    assert set(options_for(Config("x:y"), "supervisor")) >= {"workers", "port", "pre_start"}
