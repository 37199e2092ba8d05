#!/usr/bin/env bash
# batch_gpu.sh: run ON THE DEVICE MACHINE from a folder holding a copy of build/bin (plus
# the GL/X libraries the moebench binary links: libOpenGL, libGLdispatch, libglfw, libstb,
# libX11, libxcb, libXau, libXdmcp, libbsd, libmd — the device has none of them) placed
# one level below the repo root (e.g. .batchbin/). It runs the batching/CUDA GPU tests,
# `moebench_main bench` (an optional copy of main's binary: the same-call baseline), the
# `moebench bench --batch 1,2,4,8,16,32` sweep at Mixtral-8x7B shape (LAYERS, default 8;
# 50-token prompts, 128 new tokens) with the per-kernel profile, and with L32=1 the full
# 32-layer model (batch BATCH32, default 1,8; needs an H200). Results under $OUT, named
# with TAG. Env: OUT, TAG, LAYERS, BATCH, L32, BATCH32, TEST_FILTER, SKIP_TESTS, SKIP_MAIN.
set -uo pipefail
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export MOEBENCH_SOURCE_DIR="$(cd .. && pwd)"
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
L=${LAYERS:-8}
TAG=${TAG:-run}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [[ -z "${SKIP_TESTS:-}" ]]; then
  timeout 150 ./moebench_tests --gtest_filter="${TEST_FILTER:-BatchCuda*:CudaModel*:CudaOps*:Scheduler*:BlockPool*}" 2>&1 | tail -${TEST_TAIL:-60}
  echo "tests rc=${PIPESTATUS[0]}"
fi
if [[ -x ./moebench_main && -z "${SKIP_MAIN:-}" ]]; then
  echo "== main's binary (baseline, same call)"
  ./moebench_main bench --model synthetic:mixtral-8x7b --layers $L --batch 1 --prompt-tokens 50 --new-tokens 128 --out $OUT/bench_main_${TAG}.json 2>&1 | tail -4
fi
echo "== batch sweep"
./moebench bench --model synthetic:mixtral-8x7b --layers $L --batch ${BATCH:-1,2,4,8,16,32} --prompt-tokens 50 --new-tokens 128 \
  --out $OUT/bench_batch_${TAG}.json --kernel-profile $OUT/kernels_${TAG}.json 2>&1 | tail -${BENCH_TAIL:-80}
if [[ -n "${L32:-}" ]]; then
  echo "== 32 layers"
  ./moebench bench --model synthetic:mixtral-8x7b --batch ${BATCH32:-1,8} --prompt-tokens 50 --new-tokens 128 \
    --out $OUT/bench32_${TAG}.json --kernel-profile $OUT/kernels32_${TAG}.json 2>&1 | tail -40
fi
