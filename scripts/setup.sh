#!/usr/bin/env bash
# Sets up everything on a fresh Debian 12 machine: system packages, a venv in
# .venv, the Python dependencies and Pronghorn itself (built from this tree).
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# g++, make, libssl-dev (OpenSSL 3, for TLS), zlib1g-dev (WebSocket
# compression) and libnghttp2-dev (HTTP/2) build the extension (ccache lets
# the test script's several builds of the same sources compile them once); openssl
# makes the tests' certificates and is a TLS test client; libgtest-dev, clang and libclang-rt-14-dev
# build the C++ tests and the fuzzer; wrk, curl and nghttp2-client (nghttp, h2load) are test
# clients; chromium is the browser of the WebSocket test; haproxy and nginx-light are the load
# balancers of test_load_balancer.py, and iproute2 (`ip`) makes its network namespaces. (On a
# machine with systemd, Debian starts both proxies' services on install: nginx then serves its
# default site on port 80; the tests run their own instances on free ports.) prometheus scrapes
# --metrics in test_metrics.py (its service, started on install where systemd runs, listens on
# port 9090, --metrics-bind's default; the test runs its own instance on a free port).
DEBIAN_PACKAGES=(g++ ccache make libssl-dev zlib1g-dev libnghttp2-dev nghttp2-client openssl libgtest-dev clang libclang-rt-14-dev wrk curl python3-venv python3-dev procps strace chromium haproxy nginx-light iproute2 prometheus)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The builds below and scripts/test.sh's go through ccache (CMakeLists.txt).
export PRONGHORN_CCACHE=${PRONGHORN_CCACHE:-1}

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -r requirements-dev.txt
# No build isolation: the build tools above are already in the venv, and the
# CMake build directory (build/) is reused between runs.
.venv/bin/pip install -q --no-build-isolation --no-deps .
echo "setup: $(.venv/bin/pronghorn --version)"
