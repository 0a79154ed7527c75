#!/usr/bin/env bash
# Builds Pronghorn's wheel from a source tree: the first stage of deploy/Dockerfile, and what
# tests/integration/test_deploy.py runs in a fresh venv (so the image cannot drift from CI).
#   build-wheel.sh SOURCE_DIR OUT_DIR
# Needs a C++20 compiler and the headers of OpenSSL 3 and zlib (Debian: g++ libssl-dev zlib1g-dev);
# the Python build tools (scikit-build-core, cmake, ninja) come from PyPI through pip.
set -euo pipefail
src=${1:?source dir}
out=${2:?output dir}
python3 -m pip wheel --no-deps --wheel-dir "$out" "$src"
ls "$out"/pronghorn-*.whl
