"""`pronghorn run` and `pronghorn dev`: find the app as fastapi-cli does,
without importing it (the supervisor must not hold the app), then serve it.

The file is parsed with `ast`: the app is the variable named by --app, else
`app`, else `api`, else the first variable assigned a FastAPI(...) call."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

from pronghorn.cli import UsageError, build_parser, config_from_args, fail, parse, serve
from pronghorn.config import ConfigError

DEFAULT_FILES = ("main.py", "app.py", "api.py", "app/main.py", "app/app.py", "app/api.py")


class DiscoveryError(Exception):
    pass


def default_path() -> Path:
    for candidate in DEFAULT_FILES:
        path = Path(candidate)
        if path.is_file():
            return path
    raise DiscoveryError("Could not find a default file to run, please provide an explicit path")


def module_data(path: Path) -> tuple[str, Path]:
    """The dotted module name of `path` and the directory to put on sys.path:
    walk up while the directory is a package (has __init__.py)."""
    path = path.resolve()
    if path.is_dir():
        path = path / "__init__.py"
        if not path.is_file():
            raise DiscoveryError(f"Could not find a default file to run, please provide an explicit path")
    parts = [] if path.name == "__init__.py" else [path.stem]
    directory = path.parent
    while (directory / "__init__.py").is_file():
        parts.insert(0, directory.name)
        directory = directory.parent
    return ".".join(parts), directory


def _top_level_names(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    names: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.append((target.id, node.value))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append((node.target.id, node.value))
        elif isinstance(node, (ast.ImportFrom, ast.Import)):
            for alias in node.names:
                names.append(((alias.asname or alias.name).split(".")[0], node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append((node.name, node))
    return names


def _is_fastapi_call(value: Any) -> bool:
    if not isinstance(value, ast.Call):
        return False
    func = value.func
    return (isinstance(func, ast.Name) and func.id == "FastAPI") or (
        isinstance(func, ast.Attribute) and func.attr == "FastAPI"
    )


def find_app_name(source_path: Path, module: str, app_name: str | None) -> str:
    try:
        tree = ast.parse(source_path.read_text(), filename=str(source_path))
    except SyntaxError as exc:
        raise DiscoveryError(f"Could not parse {source_path}: {exc.msg} (line {exc.lineno})") from None
    names = _top_level_names(tree)
    defined = {name for name, _ in names}
    if app_name:
        if app_name not in defined:
            raise DiscoveryError(f"Could not find app name {app_name} in {module}")
        return app_name
    for preferred in ("app", "api"):
        if preferred in defined:
            return preferred
    for name, value in names:
        if _is_fastapi_call(value):
            return name
    raise DiscoveryError("Could not find FastAPI app in module, try using --app")


def pyproject_entrypoint() -> str | None:
    path = Path("pyproject.toml")
    if not path.is_file():
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10: the backport, a dependency there
        try:
            import tomli as tomllib
        except ImportError:
            return None
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DiscoveryError(f"Could not read pyproject.toml: {exc}") from None
    tool = data.get("tool", {})
    for section in ("pronghorn", "fastapi"):
        entry = tool.get(section, {}).get("entrypoint")
        if entry:
            return str(entry)
    return None


def main(command: str, argv: list[str]) -> None:
    try:
        parser = build_parser(prog=f"pronghorn {command}", app_required=False)
        parser.add_argument("path", metavar="PATH", nargs="?", default=None,
                            help="A Python file or package directory with the app (default: main.py, app.py, ...).")
        parser.add_argument("--app", dest="app_name", default=None, help="The name of the app variable in the module.")
        parser.add_argument("--entrypoint", "-e", default=None, help="The app as module:attribute, instead of a path.")
        if command == "run":
            parser.set_defaults(host=os.environ.get("PRONGHORN_HOST", "0.0.0.0"))
        else:
            parser.set_defaults(reload=True)
        args = parse(parser, argv)
        path_arg, app_name, entrypoint = args.path, args.app_name, args.entrypoint
        del args.path, args.app_name, args.entrypoint
        import_string, app_dir = resolve(path_arg, app_name, entrypoint)
        args.app = import_string
        if not args.app_dir:
            args.app_dir = str(app_dir)
        config = config_from_args(args, argv)
        config.validate()
    except DiscoveryError as exc:
        fail(str(exc))
    except (UsageError, ConfigError) as exc:
        fail(str(exc))
    shown_host = config.host if config.host not in ("0.0.0.0", "::") else config.host
    url = f"http://{shown_host}:{config.port}"
    sys.stderr.write(f"INFO:     Using import string: {import_string}\n")
    sys.stderr.write(f"INFO:     Server started at {url}\n")
    sys.stderr.write(f"INFO:     Documentation at {url}/docs\n")
    sys.stderr.flush()
    serve(config)


def resolve(path_arg: str | None, app_name: str | None, entrypoint: str | None) -> tuple[str, Path]:
    """Returns the import string and the directory to import it from. Says
    how it found them only once it has: an error stays one line."""
    said: list[str] = []
    result = _resolve(path_arg, app_name, entrypoint, said)
    for line in said:
        sys.stderr.write(f"INFO:     {line}\n")
    return result


def _resolve(path_arg: str | None, app_name: str | None, entrypoint: str | None, said: list[str]) -> tuple[str, Path]:
    if entrypoint is None and path_arg is None:
        entrypoint = pyproject_entrypoint()
        if entrypoint:
            said.append(f"Using entrypoint from pyproject.toml: {entrypoint}")
    if entrypoint is not None:
        if ":" not in entrypoint:
            raise DiscoveryError(f'Entrypoint "{entrypoint}" must be in format "<module>:<attribute>"')
        return entrypoint, Path.cwd()
    path = Path(path_arg) if path_arg else default_path()
    if not path.exists():
        raise DiscoveryError(f"Path does not exist {path}")
    said.append(f"Using path {path}")
    said.append(f"Resolved absolute path {path.resolve()}")
    module, directory = module_data(path)
    source = path.resolve() if path.is_file() else path.resolve() / "__init__.py"
    said.append(f"Importing from {directory}")
    said.append(f"Importing module {module}")
    name = find_app_name(source, module, app_name)
    said.append(f"Found importable app: {name}")
    return f"{module}:{name}", directory
