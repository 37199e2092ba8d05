#!/usr/bin/env bash
# ci_gate.sh: the CI regression gate. Runs the `ci` suite (tiny synthetic model,
# one CPU thread, plus a calibration case that runs no moebench code) and compares
# it with the committed baseline reports/baselines/ci-cpu.json:
#   - output-token hashes (and expert counters) must be identical;
#   - every timing is divided by the same timing of ci/reference from its own
#     file, so a slower or busier machine cancels out, and may be at most
#     MOEBENCH_GATE_MAX_SLOWDOWN (default 25%: this shared 2-core VM swings by up to ~17% between load states; the 20%-slowdown test records its own baseline in the same run) slower than the baseline's.
# The suite times steps in thread CPU time (time spent descheduled does not
# count) and interleaves the cases' repetitions, so a loaded machine moves all
# of them alike; the baseline is recorded with 3x the repetitions.
# A timing failure is retried twice (a real regression fails every run; the VM's
# slow spells have lasted across two runs, rarely three).
#
#   bash scripts/ci_gate.sh                     # the gate (exit 0 pass, 1 fail)
#   bash scripts/ci_gate.sh --update-baseline   # re-record the baseline on this machine
#
# Environment: MOEBENCH_BIN (default build/bin/moebench), MOEBENCH_GATE_OUT (the
# fresh results, default build/ci-gate.json), MOEBENCH_GATE_BASELINE (default the
# committed one), MOEBENCH_GATE_MAX_SLOWDOWN,
# MOEBENCH_INJECT_SLOWDOWN (test hook: stretches every timed engine step).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${MOEBENCH_BIN:-$ROOT/build/bin/moebench}"
BASE="${MOEBENCH_GATE_BASELINE:-$ROOT/reports/baselines/ci-cpu.json}"
OUT="${MOEBENCH_GATE_OUT:-$ROOT/build/ci-gate.json}"
TOL="${MOEBENCH_GATE_MAX_SLOWDOWN:-25%}"
export MOEBENCH_SUITES_DIR="$ROOT/suites"

if [ "${1:-}" = "--update-baseline" ]; then
  "$BIN" run --suite ci --repetitions 45 --out "$BASE" >/dev/null
  echo "baseline written to $BASE (commit it when it is the committed one)" >&2
  exit 0
fi

for attempt in 1 2 3; do
  "$BIN" run --suite ci --out "$OUT" >/dev/null
  # --force: the baseline may come from another CPU model; normalisation by the
  # calibration case is what makes the timings comparable.
  if "$BIN" compare "$BASE" "$OUT" --normalize-by ci/reference --max-slowdown "$TOL" --force; then
    exit 0
  fi
  [ "$attempt" != 3 ] && echo "ci gate: attempt $attempt failed, running the suite again" >&2
done
exit 1
