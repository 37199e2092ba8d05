#!/usr/bin/env bash
# gpu_check.sh: run ON THE DEVICE MACHINE — the GPU tests, then the kernel
# microbenchmarks, logging everything to $OUT. Binaries come from $MOEBENCH_BIN
# (default: the folder this script is in if it holds moebench_tests, else build/bin).
#   bash tools/gpu_check.sh            # after carrying build/bin
#   bash .cudabin/gpu_check.sh         # after carrying a copy of build/bin + this script
# Env: OUT (default ./gpu_out), BENCH_FILTER (--benchmark_filter regex, default all),
#      SKIP_TESTS=1 / SKIP_BENCH=1.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${MOEBENCH_BIN:-}" ]]; then
  if [[ -x "$here/moebench_tests" ]]; then MOEBENCH_BIN="$here"; else MOEBENCH_BIN="$here/../build/bin"; fi
fi
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$MOEBENCH_BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
log="$OUT/gpu_check.log"
rc=0
{
  echo "== gpu_check $(date -u +%FT%TZ) bin=$MOEBENCH_BIN"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || true
  ldd "$MOEBENCH_BIN/moebench_bench" | grep -E "not found" && echo "!! missing libraries above"
} 2>&1 | tee "$log"
if [[ -z "${SKIP_TESTS:-}" ]]; then
  echo "== moebench_tests" | tee -a "$log"
  "$MOEBENCH_BIN/moebench_tests" --gtest_output="xml:$OUT/tests.xml" 2>&1 | tee -a "$log"
  t=${PIPESTATUS[0]}; [[ $t -ne 0 ]] && rc=$t
fi
if [[ -z "${SKIP_BENCH:-}" ]]; then
  echo "== moebench_bench" | tee -a "$log"
  "$MOEBENCH_BIN/moebench_bench" --benchmark_out="$OUT/kernels.json" --benchmark_out_format=json \
      --benchmark_counters_tabular=true ${BENCH_FILTER:+--benchmark_filter="$BENCH_FILTER"} 2>&1 | tee -a "$log"
  b=${PIPESTATUS[0]}; [[ $b -ne 0 && $rc -eq 0 ]] && rc=$b
fi
echo "== gpu_check done rc=$rc" | tee -a "$log"
exit $rc
