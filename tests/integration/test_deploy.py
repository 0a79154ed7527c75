"""The deployment files in deploy/ are the ones CI proves: the image's build and install scripts
run here in fresh venvs (no Docker daemon needed), the result serves the example app as the
image's entrypoint would, and the Kubernetes manifests' timings agree with the server's."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = pytest.mark.pronghorn_only

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _entrypoint() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ENTRYPOINT ")]
    import json

    return json.loads(line[len("ENTRYPOINT "):])


def test_dockerfile_uses_the_tested_scripts():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = [ln for ln in text.splitlines() if ln.startswith("FROM ")]
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert "bash /src/deploy/docker/build-wheel.sh /src /wheels" in text
    assert "bash /opt/pronghorn/install.sh /wheels /opt/venv" in text
    runtime = text[text.rindex("FROM "):]
    assert "g++" not in runtime, "no compiler in the runtime stage"
    assert re.search(r"^USER app$", runtime, re.M), "a non-root user"
    assert "HEALTHCHECK" in runtime and "healthcheck.py" in runtime
    assert _entrypoint()[:2] == ["pronghorn", "run"]


def test_kubernetes_timings_agree_with_the_server():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "deployment.yaml").read_text()))
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    entry = _entrypoint()
    graceful = float(entry[entry.index("--timeout-graceful-shutdown") + 1])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", " ".join(pre_stop)).group(1))
    assert pod["terminationGracePeriodSeconds"] > pause + graceful
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    assert container["livenessProbe"]["failureThreshold"] >= container["readinessProbe"]["failureThreshold"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    services = list(yaml.safe_load_all((DEPLOY / "k8s" / "service.yaml").read_text()))
    assert services[0]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.slow
def test_image_build_and_install_scripts_serve_the_example(tmp_path):
    """deploy/docker/build-wheel.sh builds the wheel from this tree with a fresh venv's pip (the
    build stage), install.sh installs it with the app's requirements into another fresh venv (the
    runtime stage), and the entrypoint's command serves the example app; the health check passes
    and SIGTERM stops it."""
    builder = tmp_path / "builder"
    subprocess.run([sys.executable, "-m", "venv", str(builder)], check=True)
    env = dict(os.environ, PATH=f"{builder / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("LD_PRELOAD", None)
    env.pop("VIRTUAL_ENV", None)
    wheels = tmp_path / "wheels"
    subprocess.run(["bash", str(DEPLOY / "docker" / "build-wheel.sh"), str(ROOT), str(wheels)], check=True,
                   env=env, timeout=900, capture_output=True)
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(ROOT / "examples" / "main.py", app_dir / "main.py")
    (app_dir / "requirements.txt").write_text("fastapi\n")
    runtime = tmp_path / "runtime"
    out = subprocess.run(["bash", str(DEPLOY / "docker" / "install.sh"), str(wheels), str(runtime),
                          str(app_dir / "requirements.txt")], check=True, env=env, timeout=600,
                         capture_output=True, text=True)
    assert "pronghorn" in out.stdout
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = _entrypoint()
    command = [str(runtime / "bin" / entry[0]), *entry[1:]]
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    run_env = dict(env, PATH=f"{runtime / 'bin'}{os.pathsep}{os.environ['PATH']}", PORT=str(port))
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([*command, "main.py"], cwd=app_dir, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(runtime / "bin" / "python"), str(DEPLOY / "docker" / "healthcheck.py")],
                             env=run_env, capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/items/7?q=x", timeout=5).json()["item_id"] == 7
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
