#!/usr/bin/env bash
# Syscalls per request of one Pronghorn process serving the hello app over
# TLS with keep-alive: strace -f -c on every thread while wrk runs.
#
#   bash bench/syscalls.sh [PYTHON] [PORT] [pronghorn options...]
#   e.g. bash bench/syscalls.sh .venv/bin/python 8761 --loop uvloop
#        bash bench/syscalls.sh /tmp/base/bin/python 8761 --loop uvloop   # another build
#
# Prints each syscall's count and count per request (wrk -t1 -c4 -d3).
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
PY="${1:-$BENCH_DIR/../.venv/bin/python}"; PORT="${2:-8761}"; shift $(( $# < 2 ? $# : 2 ))
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, the venv's own (not resolved)
cd "$BENCH_DIR"
D=$(mktemp -d)
trap 'kill "${SRV:-}" 2>/dev/null || true; rm -rf "$D"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$D/key.pem" \
  -out "$D/cert.pem" -days 2 -subj /CN=localhost > /dev/null 2>&1
"$PY" -m pronghorn apps:hello --port "$PORT" --lifespan off --log-level warning --no-access-log \
  --ssl-certfile "$D/cert.pem" --ssl-keyfile "$D/key.pem" "$@" > "$D/log" 2>&1 &
SRV=$!
for _ in $(seq 60); do curl -sk -o /dev/null "https://127.0.0.1:$PORT/" && break; sleep 0.5; done
TIDS=()
for t in /proc/$SRV/task/*; do TIDS+=(-p "${t##*/}"); done
strace -f -c -o "$D/strace" "${TIDS[@]}" 2> /dev/null &
ST=$!
sleep 1
wrk -t1 -c4 -d3 "https://127.0.0.1:$PORT/" > "$D/wrk"
kill -INT $ST; wait $ST || true
REQ=$(awk '/requests in/ {print $1}' "$D/wrk")
echo "requests: $REQ"
awk -v r="$REQ" 'NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ {printf "%-16s %10d  %.3f/request\n", $NF, $4, $4 / r}' "$D/strace"
