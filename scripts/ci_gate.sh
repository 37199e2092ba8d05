#!/usr/bin/env bash
# ci_gate.sh: the CI regression gate (docs/GATE.md). Runs the `gate` suite (tiny
# synthetic model, one CPU thread) under valgrind's callgrind, counting only the
# engine's timed steps, and compares the counts with the committed baseline
# reports/ci-baseline/workcounts.json:
#   - output-token hashes and expert counters must be identical;
#   - the estimated cost (Ir + 10 x L1 misses + 100 x LL misses, on a pinned
#     simulated cache) per prefill and per decode token may be at most
#     MOEBENCH_GATE_TOLERANCE_PERCENT (default 1.5) above the baseline's.
# Counts do not depend on the machine's speed or load, so one run decides. They do
# depend on the build and the runtime: valgrind, compiler, build type, the CPU
# features valgrind presents, the C/C++/OpenMP runtimes, threads, cache geometry are
# recorded with the baseline, and a mismatch is refused with one line.
#
#   bash scripts/ci_gate.sh                     # the gate (exit 0 pass, 1 fail)
#   bash scripts/ci_gate.sh --update-baseline   # re-record the baseline with this build
#
# Environment: MOEBENCH_BIN (default build/bin/moebench), MOEBENCH_GATE_DIR (the
# counting run's folder, default build/ci-gate), MOEBENCH_GATE_BASELINE (default the
# committed one), MOEBENCH_GATE_TOLERANCE_PERCENT, MOEBENCH_GATE_SUITE (default
# suites/gate.json; the gate's own test uses a smaller one),
# MOEBENCH_INJECT_SLOWDOWN=F (test switch: every CPU linear op does F times its work).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${MOEBENCH_BIN:-$ROOT/build/bin/moebench}"
BASE="${MOEBENCH_GATE_BASELINE:-$ROOT/reports/ci-baseline/workcounts.json}"
DIR="${MOEBENCH_GATE_DIR:-$ROOT/build/ci-gate}"
TOL="${MOEBENCH_GATE_TOLERANCE_PERCENT:-1.5}"
SUITE="${MOEBENCH_GATE_SUITE:-$ROOT/suites/gate.json}"

case "${1:-}" in
  ""|--update-baseline) ;;
  *) echo "usage: bash scripts/ci_gate.sh [--update-baseline]" >&2; exit 2 ;;
esac
if ! command -v valgrind >/dev/null 2>&1; then
  echo "ci gate: valgrind is not installed (apt-get install valgrind; scripts/lib.sh installs it)" >&2
  exit 1
fi
[ -x "$BIN" ] || { echo "ci gate: $BIN is not built (bash scripts/test.sh builds it)" >&2; exit 1; }

rm -rf "$DIR"
mkdir -p "$DIR"
# The counting run sees the same command line, environment and paths wherever the
# checkout and $DIR are: it runs in $DIR on a copy of the suite, through a link to
# the binary, in an emptied environment (their sizes move the stack and the heap,
# and so which simulated cache sets they use). One OpenMP thread, and a fixed
# simulated cache: by default callgrind copies the host's cache sizes, which would
# change miss counts from one CPU model to the next.
cp "$SUITE" "$DIR/gate.json"
ln -s "$(readlink -f "$BIN")" "$DIR/moebench"
inject=()
[ -n "${MOEBENCH_INJECT_SLOWDOWN:-}" ] && inject=("MOEBENCH_INJECT_SLOWDOWN=$MOEBENCH_INJECT_SLOWDOWN")
if ! (cd "$DIR" && env -i PATH=/usr/bin:/bin OMP_NUM_THREADS=1 OMP_DYNAMIC=false "${inject[@]}" \
  valgrind --tool=callgrind --collect-atstart=no --cache-sim=yes \
  --I1=32768,8,64 --D1=32768,8,64 --LL=33554432,16,64 \
  --callgrind-out-file=callgrind.out --log-file=valgrind.log \
  ./moebench gate count --suite gate.json --dir .); then
  echo "ci gate: the counting run failed (valgrind's log: $DIR/valgrind.log)" >&2
  exit 1
fi
"$BIN" gate summarize "$DIR"

if [ "${1:-}" = "--update-baseline" ]; then
  mkdir -p "$(dirname "$BASE")"
  cp "$DIR/workcounts.json" "$BASE.tmp" && mv "$BASE.tmp" "$BASE"
  echo "baseline written to $BASE (commit it when it is the committed one)" >&2
  exit 0
fi
exec "$BIN" gate compare "$BASE" "$DIR/workcounts.json" --tolerance-percent "$TOL"
