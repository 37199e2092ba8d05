#!/usr/bin/env bash
# gpu_check.sh: run ON THE DEVICE MACHINE — the GPU tests, the kernel
# microbenchmarks, then `moebench bench` at the Mixtral-8x7B shape (8 layers, batch 1:
# 50-token prompt + 128 new tokens, and a 200-token prefill), logging everything to $OUT. Binaries come from $MOEBENCH_BIN
# (default: the folder this script is in if it holds moebench_tests, else build/bin).
#   bash tools/gpu_check.sh            # after carrying build/bin
#   bash .cudabin/gpu_check.sh         # after carrying a copy of build/bin + this script
# Env: OUT (default ./gpu_out), BENCH_FILTER (--benchmark_filter regex, default all),
#      TEST_FILTER (--gtest_filter, default all), SKIP_TESTS=1 / SKIP_BENCH=1 (kernel
#      microbenchmarks) / SKIP_MODEL_BENCH=1. Tests read fixtures from $MOEBENCH_SOURCE_DIR
#      (default: the current directory when it holds tests/fixtures, i.e. the repo root).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${MOEBENCH_BIN:-}" ]]; then
  if [[ -x "$here/moebench_tests" ]]; then MOEBENCH_BIN="$here"; else MOEBENCH_BIN="$here/../build/bin"; fi
fi
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$MOEBENCH_BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [[ -z "${MOEBENCH_SOURCE_DIR:-}" && -d "$PWD/tests/fixtures" ]]; then export MOEBENCH_SOURCE_DIR="$PWD"; fi
log="$OUT/gpu_check.log"
rc=0
{
  echo "== gpu_check $(date -u +%FT%TZ) bin=$MOEBENCH_BIN"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || true
  ldd "$MOEBENCH_BIN/moebench_bench" | grep -E "not found" && echo "!! missing libraries above"
} 2>&1 | tee "$log"
if [[ -z "${SKIP_TESTS:-}" ]]; then
  echo "== moebench_tests" | tee -a "$log"
  "$MOEBENCH_BIN/moebench_tests" --gtest_output="xml:$OUT/tests.xml" ${TEST_FILTER:+--gtest_filter="$TEST_FILTER"} 2>&1 | tee -a "$log"
  t=${PIPESTATUS[0]}; [[ $t -ne 0 ]] && rc=$t
fi
if [[ -z "${SKIP_BENCH:-}" ]]; then
  echo "== moebench_bench" | tee -a "$log"
  "$MOEBENCH_BIN/moebench_bench" --benchmark_out="$OUT/kernels.json" --benchmark_out_format=json \
      --benchmark_counters_tabular=true ${BENCH_FILTER:+--benchmark_filter="$BENCH_FILTER"} 2>&1 | tee -a "$log"
  b=${PIPESTATUS[0]}; [[ $b -ne 0 && $rc -eq 0 ]] && rc=$b
fi
if [[ -z "${SKIP_MODEL_BENCH:-}" ]]; then
  m=synthetic:mixtral-8x7b:layers=8
  echo "== moebench bench $m: decode (50-token prompt, 128 new tokens)" | tee -a "$log"
  "$MOEBENCH_BIN/moebench" bench --model "$m" --batch 1 --prompt-tokens 50 --new-tokens 128 \
      --out "$OUT/bench_decode.json" 2>&1 | tee -a "$log"
  b=${PIPESTATUS[0]}; [[ $b -ne 0 && $rc -eq 0 ]] && rc=$b
  echo "== moebench bench $m: prefill (200-token prompt, TTFT)" | tee -a "$log"
  "$MOEBENCH_BIN/moebench" bench --model "$m" --batch 1 --prompt-tokens 200 --new-tokens 1 --repetitions 5 \
      --out "$OUT/bench_prefill.json" 2>&1 | tee -a "$log"
  b=${PIPESTATUS[0]}; [[ $b -ne 0 && $rc -eq 0 ]] && rc=$b
fi
echo "== gpu_check done rc=$rc" | tee -a "$log"
exit $rc
