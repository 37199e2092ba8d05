#!/usr/bin/env bash
# Session 37 device script: repetition determinism across dtypes and batch sizes, then
# compute-sanitizer initcheck / synccheck / racecheck on the fp8 batched path.
set -u
O=${OUT:?}
rm -rf .devbin && tar -xJf .devbin.tar.xz || exit 1
export LD_LIBRARY_PATH="$PWD/.devbin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export MOEBENCH_SOURCE_DIR="$PWD" MOEBENCH_SUITES_DIR="$PWD/suites"
M=$PWD/.devbin/moebench
mkdir -p "$O/w"
W=$O/w
t0=$(date +%s)
note() { echo "== $(( $(date +%s) - t0 ))s $*" | tee -a "$W/log.txt"; tar -C "$O" -czf "$O/s37.tar.part" w && mv -f "$O/s37.tar.part" "$O/s37.tar.gz"; }
nvidia-smi -L >"$W/smi.txt" 2>&1
S=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
note "sanitizer: $S"
for d in fp8 bf16 int8 int4; do
  note "rep $d"
  timeout 100 "$M" bench --model synthetic:mixtral-8x7b:layers=8 --set expert_dtype=$d --batch 1,2,4,8 \
    --prompt-tokens 50 --new-tokens 128 --repetitions 20 --no-quality --out "$W/rep_$d.json" >"$W/rep_$d.log" 2>&1
  note "rep $d rc=$?"
done
for i in 1 2 3 4; do
  timeout 120 "$M" bench --model synthetic:mixtral-8x7b:layers=8 --set expert_dtype=fp8 --batch 1 \
    --prompt-tokens 50 --new-tokens 128 --repetitions 3 --no-quality --out "$W/proc_fp8_$i.json" >"$W/proc_fp8_$i.log" 2>&1
  note "proc fp8 $i rc=$?"
done
if [[ -n "$S" ]]; then
  for tool in initcheck memcheck synccheck racecheck; do
    note "sanitizer $tool"
    timeout 110 "$S" --tool $tool --print-limit 50 "$M" bench --model synthetic:mixtral-8x7b:layers=1 --set expert_dtype=fp8 \
      --batch 1 --prompt-tokens 50 --new-tokens 6 --repetitions 1 --no-quality --out "$W/san_$tool.json" >"$W/san_$tool.log" 2>&1
    note "sanitizer $tool rc=$?"
  done
fi
note done; rm -rf "$W"
