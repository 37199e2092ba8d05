#!/usr/bin/env bash
# sanitize.sh: builds the CPU code and its tests with AddressSanitizer + UndefinedBehaviorSanitizer
# into build-asan/ (CUDA, dashboard and microbenchmarks off: only moebench, moebench_tests
# and the fuzz targets) and runs the CPU tests under them. Any sanitizer report fails the
# test that triggered it, and the script exits non-zero. fuzz.sh sources this file for
# moebench_build_sanitized and the sanitizer options.
#   bash scripts/sanitize.sh              # install deps, build, run the tests
#   MOEBENCH_JOBS=1 bash scripts/sanitize.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MOEBENCH_ASAN_DIR="$MOEBENCH_ROOT/build-asan"

# Errors are fatal and come with a stack trace. Leak checking is on for the tests (every
# process exits normally). -O1 with line tables (-g1) keeps the build and the run short
# enough for CI while the stack traces still name file and line.
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=0:print_stacktrace=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:report_error_type=1}"

# Tests that cannot run sanitized, and why (a ctest -E regex each):
MOEBENCH_SANITIZE_EXCLUDE=(
  # The CI gate's end-to-end test runs the gate, which runs moebench under valgrind:
  # valgrind cannot run an ASan binary (both replace the allocator and shadow memory).
  # The gate's own code (callgrind parsing, verdicts) runs sanitized in Workcount.*.
  '^CiGate\.UnchangedPassesAndFiveAndTwentyPercentMoreWorkFail$'
)

moebench_build_sanitized() {
  cmake -S "$MOEBENCH_ROOT" -B "$MOEBENCH_ASAN_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" -DMOEBENCH_SANITIZE=ON -DMOEBENCH_CUDA=OFF \
    -DMOEBENCH_UI=OFF -DMOEBENCH_BENCH=OFF -DCMAKE_UNITY_BUILD="${MOEBENCH_UNITY:-ON}" "$@" >/dev/null
  ninja -C "$MOEBENCH_ASAN_DIR" -j"${MOEBENCH_JOBS:-$(nproc)}" moebench moebench_tests moebench_fuzz
}

moebench_run_sanitized_tests() {
  local exclude
  exclude=$(IFS='|'; echo "${MOEBENCH_SANITIZE_EXCLUDE[*]}")
  (cd "$MOEBENCH_ASAN_DIR" && ctest --output-on-failure -j"$(nproc)" --timeout 1800 -E "$exclude")
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  moebench_install_deps
  start=$(date +%s)
  moebench_build_sanitized
  built=$(date +%s)
  moebench_run_sanitized_tests
  echo "sanitize.sh: build $((built - start)) s, tests $(( $(date +%s) - built )) s"
fi
