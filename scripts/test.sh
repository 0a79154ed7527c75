#!/usr/bin/env bash
# Runs every test: C++ unit tests (Release and under ASan+UBSan), short fuzz runs
# of the HTTP/1 parser, the WebSocket codec, the HTTP/2 session and the static-file rules, and the pytest integration
# suite against the installed `pronghorn` command (all of it on the main
# CPython, the tests marked every_python on the other versions the machine
# has, then all but the slow ones with the extension built with ASan+UBSan,
# on Python 3.12 when there is one).
# Does all set-up itself (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# section TITLE: a heading with the time since the start, so that a CI log
# shows where its minutes went.
section() { echo "== $* (at $((SECONDS / 60))m$((SECONDS % 60))s)"; }
section "set-up"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Every build below goes through ccache (CMakeLists.txt): they share the
# engine's sources.
export PRONGHORN_CCACHE=${PRONGHORN_CCACHE:-1}
JOBS=${JOBS:-2}

section "C++ unit tests (Release build)"
cmake -S . -B build/tests -G Ninja -DPRONGHORN_BUILD_TESTS=ON -DPRONGHORN_BUILD_EXTENSION=OFF >/dev/null
cmake --build build/tests -j "$JOBS"
ctest --test-dir build/tests --output-on-failure -j "$JOBS"

section "C++ unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/tests-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DPRONGHORN_BUILD_TESTS=ON \
  -DPRONGHORN_BUILD_EXTENSION=OFF -DPRONGHORN_SANITIZE=ON >/dev/null
cmake --build build/tests-asan -j "$JOBS"
ctest --test-dir build/tests-asan --output-on-failure -j "$JOBS"

section "libFuzzer targets: build"
CC=clang CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DPRONGHORN_FUZZ=ON -DPRONGHORN_BUILD_EXTENSION=OFF >/dev/null
cmake --build build/fuzz -j "$JOBS"

# run_fuzzer TARGET SECONDS WHAT: a libFuzzer run of build/fuzz/fuzz_TARGET
# from its seed corpus fuzz/corpus/TARGET (what it finds goes to
# build/fuzz/corpus-TARGET). The fuzzer's own exit status decides (a crash or
# leak exits non-zero); its output is kept whole in a log and summarised here.
run_fuzzer() {
  local target=$1 seconds=$2 what=$3 status=0
  section "libFuzzer: $what ($seconds s)"
  mkdir -p "build/fuzz/corpus-$target"
  "./build/fuzz/fuzz_$target" -max_total_time="$seconds" -print_final_stats=1 \
    "build/fuzz/corpus-$target" "fuzz/corpus/$target" >"build/fuzz/fuzz-$target.log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|Done|ERROR" "build/fuzz/fuzz-$target.log" || true
  if [[ $status -ne 0 ]]; then
    echo "fuzzer failed (exit $status):"
    tail -n 60 "build/fuzz/fuzz-$target.log"
    exit 1
  fi
}

run_fuzzer http1_request "${FUZZ_SECONDS:-30}" "HTTP/1 request parser"
# The WebSocket codec: the frame decoder (with and without permessage-deflate)
# and the inflater with the extension negotiation.
run_fuzzer ws_frame "${FUZZ_SECONDS_WS:-20}" "WebSocket ws_frame"
run_fuzzer ws_inflate "${FUZZ_SECONDS_WS:-20}" "WebSocket ws_inflate"
# The HTTP/2 session over an in-memory transport: arbitrary frames after
# the preface, with an application that answers at once or later.
run_fuzzer http2_session "${FUZZ_SECONDS_H2:-10}" "HTTP/2 session"
# Static files: the path, range, conditional-header, date and Accept-Encoding
# rules (no I/O); a short run (they are small).
run_fuzzer static_rules "${FUZZ_SECONDS_STATIC:-10}" "static-file rules"

section "integration tests (pytest)"
# --durations: the log then names the slowest tests of each run.
.venv/bin/python -m pytest tests/integration -q -p no:cacheprovider --durations=15

find_python() {  # prints an interpreter of that version that runs, or nothing
  local candidate
  # pyenv's shims on PATH answer only for the selected versions: try its
  # install directories first, and run each candidate to be sure.
  for candidate in "$HOME"/.pyenv/versions/"$1".*/bin/"python$1" "$(command -v "python$1" || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
}

# The ASan+UBSan run of the suite (less the slow tests) uses Python 3.12 when
# the machine has it (pyenv here), so that it is also that version's run of
# the whole suite; else the main python3.
asan_version=${PRONGHORN_ASAN_PYTHON-3.12}
asan_interpreter=$(find_python "$asan_version")
if [[ -z "$asan_interpreter" ]]; then
  asan_interpreter=$(command -v python3)
  asan_version=$("$asan_interpreter" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
fi

# The tests of what differs between CPython versions (marked every_python:
# tests/integration/conftest.py's EVERY_PYTHON_MODULES), less the slow ones,
# on the other CPython versions this machine has: python3.13 (and 3.12 when
# the ASan run is not on it) on PATH or under pyenv. A fresh Debian 12 has
# only 3.11; then each is reported as skipped.
for version in ${PRONGHORN_EXTRA_PYTHONS-3.12 3.13}; do
  [[ "$version" == "$asan_version" && "${SKIP_ASAN_INTEGRATION:-0}" != 1 ]] && continue
  interpreter=$(find_python "$version")
  if [[ -z "$interpreter" ]]; then
    section "Python $version: not on this machine, skipped"
    continue
  fi
  section "integration tests marked every_python on Python $version ($interpreter)"
  venv=".venv-$version"
  [[ -x "$venv/bin/python" ]] || "$interpreter" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -r requirements-dev.txt
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/pip" install -q --no-build-isolation --no-deps .
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest tests/integration -q -p no:cacheprovider \
    -m "every_python and not slow" --durations=15
done

if [[ "${SKIP_ASAN_INTEGRATION:-0}" != 1 ]]; then
  section "integration tests with the extension built under ASan + UBSan, on Python $asan_version ($asan_interpreter)"
  venv=".venv-asan-$asan_version"
  [[ -x "$venv/bin/python" ]] || "$asan_interpreter" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -r requirements-dev.txt
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/pip" install -q --no-build-isolation --no-deps \
    -Cbuild-dir="build/asan-ext-$asan_version" -Ccmake.build-type=Debug -Ccmake.define.PRONGHORN_SANITIZE=ON .
  # Python itself is not built with ASan: preload the runtime, and leave leak
  # checking off (the interpreter keeps memory alive at exit on purpose).
  # PYTHONMALLOC=malloc: Python objects come from malloc, so ASan also sees a
  # Python object used after its last reference went (pymalloc's pools hide
  # that: two WebSocket lifetime bugs were found only this way).
  LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)" PYTHONMALLOC=malloc \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest tests/integration -q -p no:cacheprovider \
    -m "not slow" --durations=15
fi
section "done"
