#!/usr/bin/env bash
# Instructions per request of one server process, counted by valgrind's
# callgrind: repeatable on a noisy machine where timings are not.
#
#   bash bench/callgrind.sh APP [pronghorn options...]
#   e.g. bash bench/callgrind.sh apps:hello --no-send-thread
#        URL_PATH=/json bash bench/callgrind.sh apps:fastapi_app --no-send-thread
#        URL_PATH='/items/42?q=bench&limit=10' WRK_SCRIPT=post.lua bash bench/callgrind.sh apps:fastapi_app
#
# Starts `python -m pronghorn APP` (one process) under callgrind with
# instrumentation off, switches it on once the server answers, drives it with
# wrk (-c CONNECTIONS, default 16; DURATION s), dumps, and prints the instructions counted divided by
# the requests wrk completed. The profile stays in OUT (callgrind_annotate it).
#
# TOGGLE=FUNCTION counts only the instructions run inside FUNCTION (valgrind's
# --toggle-collect), from the start, in every process: this measures a worker
# under a supervisor (--metrics), whose forked process callgrind_control
# cannot reach. TOGGLE='*Engine::run_once*' is the engine's event dispatch,
# with the app's step that runs inside it (everything but the event loop's
# own wait); the profile of the process that counted most is reported.
#        TOGGLE='*Engine::run_once*' bash bench/callgrind.sh apps:hello --no-send-thread --metrics
#
# H2=1 drives HTTP/2 (h2c, prior knowledge) with h2load instead of wrk:
# --http2 is added, CONNECTIONS (default 16) x STREAMS (default 10) concurrent
# streams, and the requests are the ones answered 2xx.
#        H2=1 bash bench/callgrind.sh apps:hello
# TLS=1 serves TLS with a fresh ECDSA P-256 certificate (as bench/run.py's TLS workloads) and
# drives https; with WRK_SCRIPT=close.lua every request is a new connection (a handshake):
#        TLS=1 WRK_SCRIPT=close.lua bash bench/callgrind.sh apps:hello --no-send-thread
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
PY="${PY:-$BENCH_DIR/../.venv/bin/python}"
APP="$1"; shift
PORT="${PORT:-8099}"
OUT="${OUT:-/tmp/pronghorn-callgrind}"
DURATION="${DURATION:-10}"
URL_PATH="${URL_PATH:-/}"
EXTRA=()
[[ "${H2:-0}" == 1 ]] && EXTRA=(--http2)
for tool in valgrind wrk h2load; do
  if ! command -v "$tool" > /dev/null 2>&1; then
    echo "[bench/callgrind.sh] installing $tool from Debian" >&2
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    pkg=$tool; [[ $tool == h2load ]] && pkg=nghttp2-client
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$pkg" > /dev/null
  fi
done
cd "$BENCH_DIR"
rm -f "$OUT".*
SCHEME=http
if [[ -n "${TLS:-}" ]]; then
  SCHEME=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$OUT.key.pem" \
    -out "$OUT.cert.pem" -days 2 -subj /CN=localhost > /dev/null 2>&1
  EXTRA+=(--ssl-certfile "$OUT.cert.pem" --ssl-keyfile "$OUT.key.pem")
fi
if [[ -n "${TOGGLE:-}" ]]; then
  VG_ARGS=(--collect-atstart=no "--toggle-collect=$TOGGLE")
else
  VG_ARGS=(--instr-atstart=no)
fi
valgrind --tool=callgrind "${VG_ARGS[@]}" --callgrind-out-file="$OUT.%p" \
  "$PY" -m pronghorn "$APP" --port "$PORT" --lifespan off --log-level warning --no-access-log "${EXTRA[@]}" "$@" \
  > "$OUT.log" 2>&1 &
VG=$!
trap 'kill $VG 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -sk -o /dev/null "$SCHEME://127.0.0.1:$PORT$URL_PATH" && break; sleep 1; done
if [[ -z "${TOGGLE:-}" ]]; then
  callgrind_control -i on "$VG" > /dev/null
  callgrind_control -z "$VG" > /dev/null
fi
if [[ "${H2:-0}" == 1 ]]; then
  REQUESTS=$(h2load -t1 -c "${CONNECTIONS:-16}" -m "${STREAMS:-10}" -D "$DURATION" "$SCHEME://127.0.0.1:$PORT$URL_PATH" |
    awk '/^status codes:/ {print $3}')
else
  WRK_ARGS=(-t1 "-c${CONNECTIONS:-16}" "-d${DURATION}s")
  [[ -n "${WRK_SCRIPT:-}" ]] && WRK_ARGS+=(-s "$WRK_SCRIPT")
  REQUESTS=$(wrk "${WRK_ARGS[@]}" "$SCHEME://127.0.0.1:$PORT$URL_PATH" | awk '/requests in/ {print $1}')
fi
if [[ -n "${TOGGLE:-}" ]]; then
  # Each process writes its profile when it exits (a supervisor stops its
  # workers first); the worker's is the one with the most instructions.
  kill "$VG"; wait "$VG" 2>/dev/null || true
  sleep 2
  PROFILE="" TOTAL=0
  for f in "$OUT".[0-9]*; do
    N=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    if [[ "$N" =~ ^[0-9]+$ ]] && ((N > TOTAL)); then PROFILE=$f TOTAL=$N; fi
  done
else
  callgrind_control -d "$VG" > /dev/null
  sleep 2
  kill "$VG"; wait "$VG" 2>/dev/null || true
  PROFILE=$(ls "$OUT".[0-9]*.1 | head -1)
  TOTAL=$(callgrind_annotate "$PROFILE" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
fi
echo "app=$APP options=${EXTRA[*]} $* requests=$REQUESTS instructions=$TOTAL per_request=$((TOTAL / REQUESTS)) profile=$PROFILE"
