#!/usr/bin/env bash
# issue3_gpu.sh: run ON THE DEVICE MACHINE from the repository root, with a copy of
# build/bin prepared by tools/oracle_prepare_bin.sh in $BIN (default .mainbin). One call
# holds every resident-decode claim, each comparison made in the same process
# or the same call:
#   1. the CUDA GPU tests (ops vs CPU reference, model, batching, offload, strategies,
#      the transformers fixture);
#   2. transformers' MixtralForCausalLM.generate (8 layers, batch 1, 50 + 128, bf16);
#   3. `moebench bench` at the same shape: batch 1/2/4/8/16/32 with the per-kernel
#      profile, and the side-by-side ratio against (2) for the batched batch-1 case;
#   4. the same sweep at batch 2/4/8 with fused_decode_max_tokens=1 (every batch > 1
#      through the sorted cuBLAS path), to choose the fused-decode threshold by measurement;
#   5. the 32-layer model, batch 1 and 8.
# Everything lands in $OUT/issue3.tgz (the device returns few files). Env: BIN, OUT,
# TEST_FILTER, SKIP_TESTS, SKIP_HF, SKIP_32.
set -uo pipefail
BIN="${BIN:-.mainbin}"
OUT="${OUT:-$PWD/issue3_out}"
W="${TMPDIR:-/tmp}/issue3"
rm -rf "$W"; mkdir -p "$W" "$OUT"
export LD_LIBRARY_PATH="$PWD/$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
export MOEBENCH_SOURCE_DIR="$PWD"
note() { echo "== $(date -u +%T) $*"; }
rc=0
pack() { tar -czf "$OUT/issue3.tgz" -C "$W" . ; }
trap pack EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$W/device.txt"
if [[ -z "${SKIP_TESTS:-}" ]]; then
  note "GPU tests"
  timeout 240 "$BIN/moebench_tests" --gtest_filter="${TEST_FILTER:-Cuda*:BatchCuda*:HfFixture*:Scheduler*:BlockPool*}" \
    --gtest_output="xml:$W/gpu_tests.xml" > "$W/gpu_tests.log" 2>&1
  t=$?; [[ $t -ne 0 ]] && rc=$t
  grep -E "^\[  (PASSED|FAILED) |tests ran" "$W/gpu_tests.log"
fi
if [[ -z "${SKIP_HF:-}" ]]; then
  note "transformers generate, 8 layers, batch 1, 50 + 128"
  python3 "$BIN/mixtral_oracle.py" hf-generate --layers 8 --prompt-tokens 50 --new-tokens 128 --out "$W/hf_generate.json" \
    > "$W/hf_generate.log" 2>&1 || rc=1
  tail -3 "$W/hf_generate.log"
fi
note "moebench bench, 8 layers, batch 1..32"
"$BIN/moebench" bench --model synthetic:mixtral-8x7b:layers=8 --batch 1,2,4,8,16,32 --prompt-tokens 50 --new-tokens 128 \
  --out "$W/bench_batch.json" --kernel-profile "$W/kernels_batch.json" > "$W/bench_batch.log" 2>&1 || rc=1
grep -E "^\|" "$W/bench_batch.log"
if [[ -f "$W/hf_generate.json" ]]; then
  python3 "$BIN/mixtral_oracle.py" side-by-side --hf "$W/hf_generate.json" --bench "$W/bench_batch.json" \
    --case batch1_p50_n128 --out "$W/transformers_side_by_side.json" || rc=1
fi
note "moebench bench, 8 layers, batch 2/4/8, fused_decode_max_tokens=1 (sorted cuBLAS path)"
"$BIN/moebench" bench --model synthetic:mixtral-8x7b:layers=8 --batch 2,4,8 --prompt-tokens 50 --new-tokens 128 \
  --set fused_decode_max_tokens=1 --out "$W/bench_batch_cublas.json" > "$W/bench_batch_cublas.log" 2>&1 || rc=1
grep -E "^\|" "$W/bench_batch_cublas.log"
if [[ -z "${SKIP_32:-}" ]]; then
  note "moebench bench, 32 layers, batch 1 and 8"
  "$BIN/moebench" bench --model synthetic:mixtral-8x7b --batch 1,8 --prompt-tokens 50 --new-tokens 128 \
    --out "$W/bench32.json" > "$W/bench32.log" 2>&1 || rc=1
  grep -E "^\|" "$W/bench32.log"
fi
note "done rc=$rc"
exit $rc
