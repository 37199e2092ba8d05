#!/usr/bin/env bash
# oracle_device_run.sh: run ON THE DEVICE MACHINE, in one call — correctness against
# HF transformers and the GPU test suite:
#   1. the GPU tests (CUDA ops vs CPU reference, the tiny transformers fixture on CUDA,
#      every MoE strategy on a Mixtral-shaped model), gtest XML to $OUT;
#   2. Mixtral-8x7B layer shapes, 2 layers, seed 42: `moebench make-model` writes the
#      safetensors; `moebench logits` (CUDA) and transformers (bf16 and fp32, GPU) run the
#      same 40 ids (8 prefill + 32 teacher-forced decode steps); tools/mixtral_oracle.py
#      compare writes $OUT/mixtral2l_vs_transformers.json;
#   3. side by side in the same call: transformers' MixtralForCausalLM.generate (8 layers,
#      batch 1, 50-token prompt, 128 new tokens, greedy, bf16) and `moebench bench` on
#      synthetic:mixtral-8x7b:layers=8 at the same shape -> $OUT/transformers_side_by_side.json.
# Binaries and tools/mixtral_oracle.py come from the folder this script is in (a copy of
# build/bin carried to the machine) unless MOEBENCH_BIN is set. Env: OUT (default
# ./oracle_out), CKPT (default /tmp/mixtral2l), SKIP_TESTS=1 / SKIP_ORACLE=1 / SKIP_SBS=1,
# TEST_FILTER (--gtest_filter), SBS_CASE (the bench case held against transformers). Tests read fixtures from $MOEBENCH_SOURCE_DIR.
#   bash .oraclebin/oracle_device_run.sh
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${MOEBENCH_BIN:-$here}"
[[ -x "$BIN/moebench" ]] || BIN="$here/../build/bin"
PY="$here/mixtral_oracle.py"
[[ -f "$PY" ]] || PY="$here/../tools/mixtral_oracle.py"
OUT="${OUT:-$PWD/oracle_out}"
CKPT="${CKPT:-/tmp/mixtral2l}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
if [[ -z "${MOEBENCH_SOURCE_DIR:-}" && -d "$PWD/tests/fixtures" ]]; then export MOEBENCH_SOURCE_DIR="$PWD"; fi
rc=0
note() { echo "== $(date -u +%T) $*"; }
note "oracle_device_run bin=$BIN source=${MOEBENCH_SOURCE_DIR:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [[ -z "${SKIP_TESTS:-}" ]]; then
  note "GPU tests"
  "$BIN/moebench_tests" --gtest_filter="${TEST_FILTER:-Cuda*:HfFixture*}" --gtest_output="xml:$OUT/gpu_tests.xml" \
    2>&1 | tee "$OUT/gpu_tests.log"
  t=${PIPESTATUS[0]}; [[ $t -ne 0 ]] && rc=$t
fi

if [[ -z "${SKIP_ORACLE:-}" ]]; then
  note "make-model mixtral-8x7b, 2 layers, seed 42 -> $CKPT"
  rm -rf "$CKPT"
  "$BIN/moebench" make-model --preset mixtral-8x7b --layers 2 --seed 42 --dtype bf16 --out "$CKPT" || rc=1
  ids="${TMPDIR:-/tmp}/oracle_ids.txt"
  python3 "$PY" ids --vocab 32000 --n 40 --seed 42 > "$ids"
  note "moebench logits (cuda): 8 prefill + 32 decode steps"
  "$BIN/moebench" logits --model "$CKPT" --backend cuda --max-model-len 64 --ids-file "$ids" \
    --prompt-len 8 --out "${TMPDIR:-/tmp}/ours_logits.npy" || rc=1
  note "transformers bf16 + fp32 on the same safetensors; compare"
  python3 "$PY" compare --ckpt "$CKPT" --ids-file "$ids" --prompt-len 8 --ours "${TMPDIR:-/tmp}/ours_logits.npy" \
    --model-note "moebench make-model --preset mixtral-8x7b --layers 2 --seed 42 --dtype bf16" \
    --out "$OUT/mixtral2l_vs_transformers.json"
  t=$?; [[ $t -ne 0 && $rc -eq 0 ]] && rc=$t
  rm -rf "$CKPT"
fi

if [[ -z "${SKIP_SBS:-}" ]]; then
  note "transformers MixtralForCausalLM.generate, 8 layers, batch 1, 50 + 128 tokens"
  python3 "$PY" hf-generate --layers 8 --prompt-tokens 50 --new-tokens 128 --out "$OUT/hf_generate.json"
  t=$?; [[ $t -ne 0 && $rc -eq 0 ]] && rc=$t
  note "moebench bench synthetic:mixtral-8x7b:layers=8, batch 1, 50 + 128 tokens"
  "$BIN/moebench" bench --model synthetic:mixtral-8x7b:layers=8 --batch 1 --prompt-tokens 50 --new-tokens 128 \
    --out "$OUT/bench_mixtral8l.json"
  t=$?; [[ $t -ne 0 && $rc -eq 0 ]] && rc=$t
  python3 "$PY" side-by-side --hf "$OUT/hf_generate.json" --bench "$OUT/bench_mixtral8l.json" \
    ${SBS_CASE:+--case "$SBS_CASE"} --out "$OUT/transformers_side_by_side.json" || rc=1
fi
note "done rc=$rc"
exit $rc
