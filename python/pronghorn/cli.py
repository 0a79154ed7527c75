"""The `pronghorn` command: uvicorn's options (from config.OPTIONS), each also
read from PRONGHORN_<OPTION>, and the `run`/`dev` subcommands of fastapi-cli.

Bad configuration is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import Any, NoReturn

from pronghorn.config import BOOL_WORDS, CONVERTERS, OPTIONS, Config, ConfigError, Option

EXIT_USAGE = 2


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) and suggestions for unknown options."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _env_default(option: Option) -> Any:
    raw = os.environ.get(option.env)
    if raw is None:
        return option.default
    try:
        if option.kind in ("bool", "flag"):
            word = raw.strip().lower()
            if word not in BOOL_WORDS:
                raise ValueError(raw)
            return BOOL_WORDS[word]
        if option.kind == "list":
            separator = "\n" if option.name == "headers" else ","
            return [item.strip() for item in raw.split(separator) if item.strip()]
        if option.kind == "choice":
            if raw not in option.choices:
                raise ValueError(raw)
            return raw
        return CONVERTERS[option.kind](raw)
    except ValueError:
        raise UsageError(f"{option.env}: invalid value {raw!r} for {option.flag}") from None


def build_parser(prog: str = "pronghorn", app_required: bool = True) -> Parser:
    from pronghorn import __version__

    parser = Parser(prog=prog, description="Run an ASGI application with Pronghorn.", allow_abbrev=False)
    if app_required:
        parser.add_argument("app", metavar="APP", nargs="?", default=os.environ.get("PRONGHORN_APP"),
                            help="The ASGI app, as module:attribute (or $PRONGHORN_APP).")
    for option in OPTIONS:
        default = _env_default(option)
        kwargs: dict[str, Any] = {"dest": option.name, "default": default, "help": option.help}
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.kind == "flag":
            parser.add_argument(option.flag, action="store_true", **kwargs)
        elif option.kind == "bool":
            parser.add_argument(option.flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif option.kind == "list":
            # Given on the command line, a list replaces the environment's value.
            kwargs["default"] = None
            parser.add_argument(option.flag, action="append", **kwargs)
        elif option.kind == "choice":
            parser.add_argument(option.flag, choices=option.choices, **kwargs)
        else:
            parser.add_argument(option.flag, type=CONVERTERS[option.kind], **kwargs)
    parser.add_argument(
        "--version",
        action="version",
        version=f"Running pronghorn {__version__} with {sys.implementation.name} "
        f"{'.'.join(map(str, sys.version_info[:3]))} on {sys.platform.capitalize()}",
    )
    return parser


def _all_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def given_options(argv: list[str]) -> set[str]:
    """Options given on the command line or in the environment."""
    given = {o.name for o in OPTIONS if o.env in os.environ}
    for word in argv:
        flag = word.split("=", 1)[0]
        for o in OPTIONS:
            if flag == o.flag or (o.negatable and flag == "--no-" + o.flag[2:]):
                given.add(o.name)
    return given


def parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    args, extras = parser.parse_known_args(argv)
    if extras:
        unknown = extras[0]
        flag = unknown.split("=", 1)[0]
        if flag.startswith("-"):
            close = difflib.get_close_matches(flag, _all_flags(parser), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"no such option: {flag}{hint}")
        raise UsageError(f"unexpected argument: {unknown}")
    for option in OPTIONS:
        if option.kind == "list" and getattr(args, option.name) is None:
            setattr(args, option.name, _env_default(option))
    return args


def config_from_args(args: argparse.Namespace, argv: list[str]) -> Config:
    config = Config(**vars(args))
    config.given = given_options(argv)
    return config


def fail(message: str) -> NoReturn:
    sys.stderr.write(f"pronghorn: error: {message.splitlines()[0] if message else 'invalid configuration'}\n")
    sys.exit(EXIT_USAGE)


def serve(config: Config) -> NoReturn:
    from pronghorn.server import run

    try:
        code = run(config)
    except ConfigError as exc:
        fail(str(exc))
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("run", "dev"):
        from pronghorn.discover import main as discover_main

        discover_main(argv[0], argv[1:])
        return
    try:
        parser = build_parser()
        args = parse(parser, argv)
        if not args.app:
            raise UsageError("missing APP (module:attribute), or set PRONGHORN_APP")
        config = config_from_args(args, argv)
        config.validate()
    except (UsageError, ConfigError) as exc:
        fail(str(exc))
    serve(config)


if __name__ == "__main__":
    main()
