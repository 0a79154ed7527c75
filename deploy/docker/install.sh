#!/usr/bin/env bash
# Installs the wheel (and the app's requirements, if a requirements.txt is given) into a venv:
# the runtime stage of deploy/Dockerfile, also run by tests/integration/test_deploy.py.
#   install.sh WHEEL_DIR VENV_DIR [REQUIREMENTS_TXT]
# The runtime needs no compiler: only the shared libraries OpenSSL 3 and zlib (in python:*-slim).
set -euo pipefail
wheels=${1:?wheel dir}
venv=${2:?venv dir}
requirements=${3:-}
python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir --upgrade pip >/dev/null
"$venv/bin/pip" install --no-cache-dir "$wheels"/pronghorn-*.whl
if [[ -n "$requirements" ]]; then
  "$venv/bin/pip" install --no-cache-dir -r "$requirements"
fi
"$venv/bin/pronghorn" --version
