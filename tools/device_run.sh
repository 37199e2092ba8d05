#!/usr/bin/env bash
# device_run.sh: the one entry point for work ON THE GPU MACHINE, run from the repository
# root with the binaries built here and carried in $BIN (stripped copies of build/bin:
# moebench, moebench_tests, moebench_bench and the libgomp/libbenchmark beside them).
# PARTS (space-separated, run in this order) picks what to do; each part's logs and JSON
# land in $OUT, and everything is packed into $OUT/device_run.tar.gz at the end (and
# after every part, so a call cut short still returns what finished).
#   info       nvidia-smi and `moebench info`
#   tests      the GPU tests (every suite that skips without a GPU), gtest XML
#   kernels    the kernel microbenchmarks (Google Benchmark JSON; KERNEL_FILTER)
#   oracle     the fp8 oracle: a tiny Mixtral quantised and saved by transformers'
#              FineGrainedFP8Config, dequantised by torch and run in fp32, against
#              moebench's CPU backend on the saved checkpoint (tools/fp8_oracle.py)
#   sanitizer  compute-sanitizer memcheck + racecheck over the GPU tests
#              (tools/compute_sanitizer.sh; SANITIZER_BUDGET seconds)
#   stages     the stages-gpu suite on the offloaded 32-layer Mixtral-8x7B shape
#              (tools/stages_gpu.sh; STAGES_TIMEOUT seconds)
#   OUT=$OUT BIN=.devbin PARTS="info tests kernels" bash tools/device_run.sh
set -uo pipefail
BIN="${BIN:-.devbin}"
OUT="${OUT:-$PWD/gpu_out}"
PARTS="${PARTS:-info tests}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
export MOEBENCH_SOURCE_DIR="$PWD" MOEBENCH_SUITES_DIR="$PWD/suites"
GPU_FILTER="BatchCuda.*:CudaMixtralStrategies.*:CudaModelTest.*:CudaOffloadModel.*:CudaOps.*:CudaArena.*:QuantCuda.*"
GPU_FILTER+=":HostStore.*:OffloadPlan.*:Offload.*:CuptiCollector.*:HfFixture*:Machine.*:PhysicalBound.*"
rc=0
note() { echo "== $(date -u +%T) $*" | tee -a "$OUT/device_run.log"; }
pack() { tar -C "$OUT" --exclude=device_run.tar.gz -czf "$OUT/device_run.tar.gz" . 2>/dev/null; }
step() {  # step NAME CMD...: runs CMD with its output in $OUT/NAME.log, notes a failure
  local name=$1; shift
  note "$name"
  "$@" >"$OUT/$name.log" 2>&1
  local r=$?
  [[ $r -ne 0 ]] && { note "$name: exit $r"; rc=1; }
  tail -5 "$OUT/$name.log"
  pack
}
for part in $PARTS; do
  case "$part" in
    info)
      step info bash -c "nvidia-smi; '$BIN/moebench' --version; '$BIN/moebench' info" ;;
    tests)
      step gpu_tests "$BIN/moebench_tests" --gtest_filter="${TEST_FILTER:-$GPU_FILTER}" \
        --gtest_output="xml:$OUT/gpu_tests.xml" ;;
    kernels)
      step kernels "$BIN/moebench_bench" --benchmark_filter="${KERNEL_FILTER:-.}" --benchmark_min_time=0.05 \
        --benchmark_out="$OUT/kernels.json" --benchmark_out_format=json ;;
    oracle)
      step fp8_oracle bash -c "set -e; python3 tools/fp8_oracle.py make --out /tmp/fp8 && \
        python3 tools/fp8_oracle.py ref --ckpt /tmp/fp8 --out /tmp/ref.npy && \
        '$BIN/moebench' logits --model /tmp/fp8 --backend cpu --set expert_dtype=fp8 --ids-file /tmp/fp8/ids.txt \
          --prompt-len 16 --out /tmp/ours.npy && \
        python3 tools/fp8_oracle.py compare --ours /tmp/ours.npy --ref /tmp/ref.npy --tol 1e-4 --out '$OUT/fp8_oracle.json'" ;;
    sanitizer)
      step compute_sanitizer env BIN="$BIN" OUT="$OUT" TIME_BUDGET="${SANITIZER_BUDGET:-420}" \
        bash tools/compute_sanitizer.sh ;;
    stages)
      step stages env BIN="$BIN" OUT="$OUT" PART=stages SKIP_TESTS=1 STAGES_TIMEOUT="${STAGES_TIMEOUT:-420}" \
        bash tools/stages_gpu.sh ;;
    *) note "unknown part '$part'"; rc=2 ;;
  esac
done
pack
exit $rc
