"""`pronghorn run` and `pronghorn dev`: finding the app as fastapi-cli does, on real
project layouts created in tmp_path, without importing it in the supervisor."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import httpx
import pytest

from cli_apps.support import assert_usage_error, launch, run_cli, wait_until  # noqa: F401

pytestmark = [pytest.mark.pronghorn_only, pytest.mark.timeout(60)]

RAW_APP = '''\
import os

_marker = os.environ.get("DISCOVERY_MARKER")
if _marker:
    with open(_marker, "a") as _f:
        _f.write(f"{{os.getpid()}}\\n")


async def {name}(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"{tag} {{os.getpid()}}".encode()
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]}})
    await send({{"type": "http.response.body", "body": body}})
'''


def raw_app(name: str = "app", tag: str = "hello") -> str:
    return RAW_APP.format(name=name, tag=tag)


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def get(srv, path: str = "/") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{srv.port}{path}", timeout=5)


def run_local(launch, cwd: Path, *args, env=None, command="run"):  # noqa: F811
    """`pronghorn run ARGS --host 127.0.0.1 --port 0` in cwd."""
    return launch([command, *args, "--host", "127.0.0.1", "--port", "0"], cwd=cwd, env=env)


def import_string(srv) -> str:
    return re.search(r"Using import string: (\S+)", srv.stderr).group(1)


@pytest.mark.parametrize("filename", ["main.py", "app.py", "api.py"])
def test_single_file_default(launch, tmp_path, filename):
    write(tmp_path, {filename: raw_app(tag=filename)})
    srv = run_local(launch, tmp_path)
    assert import_string(srv) == f"{filename[:-3]}:app"
    assert get(srv).text.startswith(f"{filename} ")


def test_main_py_preferred_over_app_py(launch, tmp_path):
    write(tmp_path, {"main.py": raw_app(tag="main"), "app.py": raw_app(tag="app")})
    srv = run_local(launch, tmp_path)
    assert import_string(srv) == "main:app"
    assert get(srv).text.startswith("main ")


def test_app_py_preferred_over_api_py(launch, tmp_path):
    write(tmp_path, {"app.py": raw_app(tag="app"), "api.py": raw_app(tag="api")})
    srv = run_local(launch, tmp_path)
    assert import_string(srv) == "app:app"
    assert get(srv).text.startswith("app ")


@pytest.mark.parametrize("module", ["app", "api"])
def test_app_package_default_files(launch, tmp_path, module):
    write(tmp_path, {"app/__init__.py": "", f"app/{module}.py": raw_app(tag=f"pkg-{module}")})
    srv = run_local(launch, tmp_path)
    assert import_string(srv) == f"app.{module}:app"
    assert get(srv).text.startswith(f"pkg-{module} ")


def test_app_package_main(launch, tmp_path):
    write(tmp_path, {"app/__init__.py": "", "app/main.py": raw_app(tag="pkg-main")})
    srv = run_local(launch, tmp_path)
    assert import_string(srv) == "app.main:app"
    assert f"Importing from {tmp_path}" in srv.stderr
    assert get(srv).text.startswith("pkg-main ")


def test_nested_package_path(launch, tmp_path):
    write(tmp_path, {"src/pkg/__init__.py": "", "src/pkg/sub/__init__.py": "",
                     "src/pkg/sub/api.py": raw_app(tag="nested")})
    srv = run_local(launch, tmp_path, "src/pkg/sub/api.py")
    assert import_string(srv) == "pkg.sub.api:app"
    # sys.path gets the parent of the top package, not the cwd.
    assert re.search(rf"Importing from {re.escape(str(tmp_path / 'src'))}\n", srv.stderr), srv.stderr
    assert get(srv).text.startswith("nested ")


def test_package_directory_path(launch, tmp_path):
    write(tmp_path, {"svc/__init__.py": raw_app(tag="pkg-init")})
    srv = run_local(launch, tmp_path, "svc")
    assert import_string(srv) == "svc:app"
    assert get(srv).text.startswith("pkg-init ")


def test_variable_named_api(launch, tmp_path):
    write(tmp_path, {"main.py": raw_app(name="api", tag="api-var")})
    srv = run_local(launch, tmp_path)
    assert import_string(srv) == "main:api"
    assert get(srv).text.startswith("api-var ")


def test_fastapi_instance_with_another_name(launch, tmp_path):
    pytest.importorskip("fastapi")
    write(tmp_path, {"main.py": textwrap.dedent("""\
        import fastapi
        from fastapi import FastAPI

        helper = 42
        my_service = fastapi.FastAPI(title="x")

        @my_service.get("/")
        def root():
            return {"found": "my_service"}
        """)})
    srv = run_local(launch, tmp_path)
    assert import_string(srv) == "main:my_service"
    assert get(srv).json() == {"found": "my_service"}


def test_app_option(launch, tmp_path):
    write(tmp_path, {"main.py": raw_app(tag="default") + "\n" + raw_app(name="custom", tag="custom")})
    srv = run_local(launch, tmp_path, "--app", "custom")
    assert import_string(srv) == "main:custom"
    assert get(srv).text.startswith("custom ")


def test_entrypoint_option(launch, tmp_path):
    write(tmp_path, {"service/__init__.py": "", "service/web.py": raw_app(name="application", tag="entry")})
    srv = run_local(launch, tmp_path, "--entrypoint", "service.web:application")
    assert import_string(srv) == "service.web:application"
    assert get(srv).text.startswith("entry ")


@pytest.mark.parametrize("section", ["pronghorn", "fastapi"])
def test_pyproject_entrypoint(launch, tmp_path, section):
    write(tmp_path, {
        "pyproject.toml": f'[project]\nname = "x"\n\n[tool.{section}]\nentrypoint = "backend.server:srv"\n',
        "backend/__init__.py": "",
        "backend/server.py": raw_app(name="srv", tag=section),
        "main.py": "raise SystemExit('main.py must not be used when pyproject names an entrypoint')\n",
    })
    srv = run_local(launch, tmp_path)
    assert "Using entrypoint from pyproject.toml: backend.server:srv" in srv.stderr
    assert import_string(srv) == "backend.server:srv"
    assert get(srv).text.startswith(f"{section} ")


def test_run_binds_all_interfaces_and_accepts_workers(launch, tmp_path):
    marker = tmp_path / "imports.log"
    write(tmp_path, {"main.py": raw_app(tag="w")})
    srv = launch(["run", "--port", "0", "--workers", "2"], cwd=tmp_path, env={"DISCOVERY_MARKER": str(marker)})
    assert srv.bound.startswith("http://0.0.0.0:"), srv.bound
    pids: set[int] = set()

    def two_workers():
        r = httpx.get(f"http://127.0.0.1:{srv.port}/", timeout=5, headers={"connection": "close"})
        pids.add(int(r.text.split()[1]))
        return len(pids) == 2

    wait_until(two_workers, 15, "two worker pids", srv, interval=0.01)
    # Discovery parsed the file: the supervisor never imported it; each worker did.
    imported = {int(x) for x in marker.read_text().split()}
    assert srv.pid not in imported
    assert imported == pids


def test_dev_binds_loopback_and_reloads(launch, tmp_path):
    marker = tmp_path / "imports.log"
    write(tmp_path, {"main.py": raw_app(tag="v1")})
    srv = launch(["dev", "--port", "0"], cwd=tmp_path, env={"DISCOVERY_MARKER": str(marker)})
    assert srv.bound.startswith("http://127.0.0.1:"), srv.bound
    assert "Started reloader process" in srv.stderr
    assert get(srv).text.startswith("v1 ")
    (tmp_path / "main.py").write_text(raw_app(tag="v2"))
    wait_until(lambda: get(srv).text.startswith("v2 "), 15, "the edited app to serve", srv, interval=0.1)
    imported = {int(x) for x in marker.read_text().split()}
    assert srv.pid not in imported and len(imported) >= 2


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "dev"])
def test_no_default_file(tmp_path, command):
    write(tmp_path, {"other.py": raw_app()})
    assert_usage_error(run_cli([command], cwd=tmp_path),
                       "Could not find a default file to run, please provide an explicit path")


def test_path_does_not_exist(tmp_path):
    assert_usage_error(run_cli(["run", "missing.py"], cwd=tmp_path), "Path does not exist", "missing.py")


def assert_discovery_error(r, *needles):
    """Exit 2, no traceback, the error is the last line (see test_discovery_errors_are_one_line)."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("pronghorn: error: "), r.stderr
    for needle in needles:
        assert needle in last, r.stderr


NO_APP = "import os\n\nx = 1\n\ndef handler():\n    pass\n"


def test_no_app_in_module(tmp_path):
    write(tmp_path, {"main.py": NO_APP})
    assert_discovery_error(run_cli(["run"], cwd=tmp_path), "Could not find FastAPI app in module, try using --app")


def test_app_option_names_missing_variable(tmp_path):
    write(tmp_path, {"main.py": raw_app()})
    assert_discovery_error(run_cli(["run", "--app", "nope"], cwd=tmp_path), "nope")


def test_syntax_error_in_discovered_file(tmp_path):
    write(tmp_path, {"main.py": "def broken(:\n"})
    assert_discovery_error(run_cli(["run"], cwd=tmp_path), "main.py", "line 1")


@pytest.mark.parametrize("main_py,args", [(NO_APP, []), (raw_app(), ["--app", "nope"]), ("def broken(:\n", [])],
                         ids=["no-app", "missing-name", "syntax-error"])
def test_discovery_errors_are_one_line(tmp_path, main_py, args):
    write(tmp_path, {"main.py": main_py})
    assert_usage_error(run_cli(["run", *args], cwd=tmp_path))


def test_entrypoint_without_colon(tmp_path):
    assert_usage_error(run_cli(["run", "--entrypoint", "main"], cwd=tmp_path), "main")


def test_run_unknown_option(tmp_path):
    write(tmp_path, {"main.py": raw_app()})
    assert_usage_error(run_cli(["run", "--prot", "1"], cwd=tmp_path), "did you mean --port?")
