#!/usr/bin/env bash
# Session 37, second call: initcheck and racecheck over the fp8 bench (single-sequence and
# batched paths), cuBLAS's own kernels left out.
set -u
O=${OUT:?}
[[ -x .devbin/moebench ]] || { rm -rf .devbin && tar -xJf .devbin.tar.xz || exit 1; }
export LD_LIBRARY_PATH="$PWD/.devbin:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
M=$PWD/.devbin/moebench
W=$O/w; mkdir -p "$W"
t0=$(date +%s)
note() { echo "== $(( $(date +%s) - t0 ))s $*" | tee -a "$W/log.txt"; tar -C "$O" -czf "$O/s37b.tar.part" w && mv -f "$O/s37b.tar.part" "$O/s37b.tar.gz"; }
S=/usr/local/cuda/bin/compute-sanitizer
X=()
for k in splitKreduce cublas nvjet xmma cutlass sm90_ gemv2 gemvx gemmk; do X+=(--kernel-name-exclude "kns=$k"); done
"$S" "${X[@]}" --tool memcheck /bin/true >"$W/optcheck.log" 2>&1; note "option check rc=$?"
run() {  # tool timeout extra...
  local tool=$1 lim=$2; shift 2
  note "$tool start"
  timeout -s KILL $lim "$S" --tool $tool --print-limit 200 "${X[@]}" "$@" "$M" bench --model synthetic:mixtral-8x7b:layers=1 \
    --set expert_dtype=fp8 --batch 1 --prompt-tokens 50 --new-tokens 6 --repetitions 1 --no-quality \
    --out "$W/san_$tool.json" >"$W/san_$tool.log" 2>&1
  note "$tool rc=$?"
}
run initcheck 270
run racecheck 270 --racecheck-report analysis
note done
