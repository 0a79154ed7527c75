#!/usr/bin/env bash
# One-command benchmark: sets everything up, then runs bench/run.py.
#
#   bash bench/run.sh                      # full run (3 rounds x 5 s per server and workload)
#   bash bench/run.sh --rounds 1 --duration 2
#   bash bench/run.sh --smoke --servers pronghorn,uvicorn
#   BENCH_SKIP_SETUP=1 bash bench/run.sh   # reuse the venv as it is
#
# Set-up: uses the project's .venv if it exists, else creates bench/.venv; installs the
# peers (uvicorn[standard], granian, hypercorn, gunicorn, matplotlib, fastapi, zttp) one by one
# (a peer that fails to install is reported "missing" by run.py, not silently dropped);
# builds and installs pronghorn from the repository; installs wrk and h2load (nghttp2-client)
# from Debian if needed.
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
cd "$REPO_DIR"

if [[ -n "${BENCH_VENV:-}" ]]; then
  VENV="$BENCH_VENV"
elif [[ -x "$REPO_DIR/.venv/bin/python" ]]; then
  VENV="$REPO_DIR/.venv"
else
  VENV="$BENCH_DIR/.venv"
fi
PY="$VENV/bin/python"

log() { echo "[bench/run.sh] $*" >&2; }

if [[ "${BENCH_SKIP_SETUP:-0}" != 1 ]]; then
  if [[ ! -x "$PY" ]]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV" || { log "cannot create a venv at $VENV"; exit 1; }
  fi
  log "using venv $VENV"
  "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true

  # Build tools for pronghorn (scikit-build-core + CMake + Ninja), then pronghorn itself.
  "$PY" -m pip install -q "scikit-build-core>=0.9" "cmake>=3.20" ninja || { log "cannot install build tools"; exit 1; }
  log "building and installing pronghorn from $REPO_DIR"
  # A build directory of its own, so a concurrent project build is not disturbed.
  "$PY" -m pip install -q --no-build-isolation --no-deps -Cbuild-dir=build/bench-ext "$REPO_DIR" || { log "pronghorn failed to build/install"; exit 1; }

  # Peers, one at a time, so one failure does not hide the others.
  # zttp: uvicorn's own HTTP/2 (--http zttp --http2) for the HTTP/2 workloads (wheels for
  # CPython 3.11-3.13 on manylinux x86_64); without it run.py skips uvicorn there with a note.
  for pkg in "uvicorn[standard]" uvloop httptools fastapi granian "hypercorn[uvloop]" gunicorn matplotlib zttp; do
    if ! "$PY" -m pip install -q "$pkg" >/dev/null 2>"$BENCH_DIR/.pip-err.txt"; then
      log "could not install $pkg (run.py reports it as missing):"
      tail -n 3 "$BENCH_DIR/.pip-err.txt" >&2
      if [[ "$pkg" == "hypercorn[uvloop]" ]]; then
        "$PY" -m pip install -q hypercorn >/dev/null 2>&1 || true
      fi
    fi
  done
  rm -f "$BENCH_DIR/.pip-err.txt"
  # Newer uvicorn releases moved the gunicorn worker class to the uvicorn-worker package.
  if ! "$PY" -c "import uvicorn.workers" >/dev/null 2>&1; then
    "$PY" -m pip install -q uvicorn-worker >/dev/null 2>&1 || log "could not install uvicorn-worker"
  fi

  if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk from Debian"
    SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null 2>&1 || log "could not install wrk"
  fi
  if ! command -v h2load >/dev/null 2>&1; then
    log "installing h2load (nghttp2-client) from Debian"
    SUDO=""; [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nghttp2-client >/dev/null 2>&1 ||
      log "could not install nghttp2-client (run.py skips the HTTP/2 workloads)"
  fi
fi

command -v wrk >/dev/null 2>&1 || { log "wrk is not available"; exit 1; }
# The venv's bin first, so the server commands (pronghorn, granian, ...) are the venv's.
export PATH="$VENV/bin:$PATH"
exec "$PY" "$BENCH_DIR/run.py" "$@"
