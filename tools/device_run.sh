#!/usr/bin/env bash
# device_run.sh: the one entry point for work ON THE GPU MACHINE, run from the repository
# root with the binaries prepared here by tools/device_prep.sh and carried in $BIN
# (stripped moebench, moebench_tests, moebench_bench and the shared libraries beside
# them; optionally an older build in $BIN/before for before/after kernel comparisons).
# PARTS (space-separated, run in this order) picks what to do; each part's logs and JSON
# land in $OUT, and everything is packed into $OUT/device_run.tar.gz after every part,
# so a call cut short still returns what finished. RUN_BUDGET_S (seconds; unset: none) bounds
# the script: the ab, kab and suite runs are cut at what is left of it, and a part or run that
# would start with less than 5 s left is skipped (noted, exit 1), so that the packing below
# still happens inside a device call's limit (a part already running otherwise, such as the
# GPU tests, is not cut) (wrapping the script in `timeout` instead kills it
# before it packs, and a call returns none of more than 8 files). PACK_ONLY=1 keeps only that tarball in
# $OUT, at every moment: the parts write into a work folder elsewhere (PACK_WORK, default a
# new folder under /tmp, removed at the end) and each packing replaces the tarball in one
# rename, so even a call cut at its limit returns the tarball of what had finished (a device
# call returns at most 8 files, and may leave the tarball out when a part wrote more).
#   info       nvidia-smi and `moebench info`
#   cpu        the CPU expert kernels' microbenchmarks (moebench_cpu_bench, every core)
#   tests      the GPU tests (every suite that skips without a GPU: GPU_FILTER below, or
#              TEST_FILTER; the ctest device_run_gpu_filter_covers_the_gpu_tests fails when
#              a test that needs a GPU is outside GPU_FILTER), gtest XML. TEST_SHARD=I/N runs
#              the I-th of N shares of them (googletest's sharding, I from 0): all of
#              GPU_FILTER took about 670 s on an H200 (session 57), more than one 600 s call,
#              so two shares of about half that each
#   kernels    the kernel microbenchmarks (Google Benchmark JSON; KERNEL_FILTER, KERNEL_REPS); when
#              $BIN/before/moebench_bench exists it runs first, in the same call, into
#              kernels_before.json (tools/kernel_diff.py compares the two by name)
#   oracle     the fp8 oracle: a tiny Mixtral quantised and saved by transformers'
#              FineGrainedFP8Config, dequantised by torch and run in fp32, against
#              moebench's CPU backend on the saved checkpoint (tools/fp8_oracle.py)
#   mixtral    transformers' MixtralForCausalLM against `moebench logits` (CUDA) at the
#              Mixtral-8x7B layer shapes, 2 layers, and generate() speed beside `moebench
#              bench` at 8 layers (tools/mixtral_oracle.py; SKIP_SBS=1 skips the speed part)
#   families-oracle  transformers' Qwen3MoeForCausalLM, OlmoeForCausalLM and Qwen2MoeForCausalLM
#              (tiny random models) against `moebench logits` on the CPU (fp32, 1e-4, greedy
#              identical) and CUDA (bf16, derived tolerance): tools/families_oracle.py; one JSON,
#              and the checkpoints with their references under $OUT/families_oracle/
#   sanitizer  compute-sanitizer memcheck + racecheck over the GPU tests
#              (tools/compute_sanitizer.sh; SANITIZER_BUDGET seconds)
#   suites     every entry of SUITES, each "SUITE[@MODEL]" (a suite file name under
#              suites/ without .json, and the model it runs on), through `moebench run`
#              with JSON, HTML and a Chrome trace; SUITE_TIMEOUT seconds each (SIGINT: the
#              finished cases stay in NAME.partial.json); SUITE_ARGS: more arguments for each
#              suite run, split at spaces, here and in the scaleout part's suite (e.g.
#              "--no-quality" where the bf16 original of a quantised case does not fit the
#              GPU, as Mixtral-8x7B's on an H100)
#   disk       make-model writes LAYERS Mixtral-8x7B layers to /tmp (default: as many as the
#              free space holds, 2 GB spare), then the disk-baseline suite reads them
#   ncu        Nsight Compute on single kernels of the microbenchmarks: each entry of NCU_BENCH,
#              "KERNEL_REGEX@BENCHMARK_FILTER", profiles the first launch whose kernel matches after
#              3 launches (--clock-control none; the SpeedOfLight, ComputeWorkloadAnalysis,
#              MemoryWorkloadAnalysis, Occupancy, LaunchStats, WarpStateStats, SchedulerStats and
#              InstructionStats sections), keeps the raw CSV and details page of each, and writes
#              ncu_summary.md (tools/ncu_summary.py) over them
#   sass       the machine code of the kernels in moebench_bench whose mangled names match each regular
#              expression of SASS_KERNELS (cuobjdump -sass; the matching functions kept gzipped in
#              sass_kernels.sass.gz), and their loops' instruction mix (tools/sass_loops.py:
#              sass_summary.md / .json), to check what the compiler made of a loop
#   ab         `moebench bench` alternated between variants of one build or two: for each configuration
#              of AB_SETS (space-separated `--set` values such as expert_dtype=int8; "-", the default,
#              for none) and each of AB_ROUNDS rounds (default 2), one run of `moebench bench $AB_BENCH`
#              per variant of AB_VARIANTS (space-separated; a variant is `default`, the name of a folder
#              under $BIN holding another build's moebench (`before`: tools/device_prep.sh BEFORE=), or
#              comma-separated VAR=VALUE settings of the environment), each
#              cut at AB_TIMEOUT seconds (default 150) and kept as it finishes (ab_SET_VARIANT_rN.json);
#              AB_PROFILE=1 adds --kernel-profile to each run (ab_SET_VARIANT_rN.kprof.json: one more
#              traced generation a case); then tools/ab_table.py: ab_summary.md / .json, every run's
#              tok/s and % of bound, each variant's mean against the first (of the decode rate and of
#              the time to first token, warm and cold), whether the variants'
#              greedy tokens agree (the part fails when they do not, or when a run failed), and with
#              profiles each variant's exposed time per kernel (what each launch adds to a step)
#   kab        the kernel microbenchmarks alternated between variants, round by round, in one call: for
#              each of KAB_ROUNDS rounds (default 2), one run of moebench_bench over KERNEL_FILTER per
#              variant of KAB_VARIANTS (space-separated; a variant is `default` ($BIN/moebench_bench), the
#              name of a folder under $BIN holding another build's moebench_bench (`before`, `alt`:
#              tools/device_prep.sh BEFORE=, ALT=), or comma-separated VAR=VALUE settings of the
#              environment), each cut at KAB_TIMEOUT seconds (default 150) and kept as it finishes
#              (kab_VARIANT_rN.json); then tools/kernel_ab_table.py: kab_summary.md / .json, every
#              benchmark's time and same-size-stream fraction per variant over the rounds, and its mean
#              against the first variant's (the part fails when a run failed)
#   scaleout   on a host of 4 or 8 GPUs (nvidia-h200-x4, -x8): the multi-GPU tests, then the
#              resident 32-layer Mixtral shape at TP = 1, 2, 4 (and 8) for batch 1, 8, 32 and at
#              EP = 4 (and 8) against one GPU for batch 8, 32, 128 (`moebench bench`), the
#              parallel-offload-x4 suite (P2, 22 GiB per GPU, one GPU against four; SCALEOUT_OFFLOAD=0
#              leaves it for another call), and the scaling table with the simulator's prediction beside each row
#              (tools/scaleout_table.py: scaleout_table.md / .json); docs/PARALLEL.md
#   OUT=$OUT BIN=.devbin PARTS="info tests kernels" bash tools/device_run.sh
#   OUT=$OUT PARTS=suites SUITES="stages-gpu@synthetic:mixtral-8x7b" bash tools/device_run.sh
#   OUT=$OUT PARTS=ab AB_SETS="expert_dtype=int8 expert_dtype=int4" AB_VARIANTS="default MOEBENCH_QUANT_HALF=0" \
#     bash tools/device_run.sh
#   OUT=$OUT PARTS=kab KAB_VARIANTS="before default MOEBENCH_QUANT_PLAIN=0" \
#     KERNEL_FILTER='quant_moe_gemv/(int8|fp8)/(gate_up_silu|down_combine)/n:1/' bash tools/device_run.sh
set -uo pipefail
BIN="${BIN:-.devbin}"
OUT="${OUT:-$PWD/gpu_out}"
PARTS="${PARTS:-info tests}"
mkdir -p "$OUT"
PACK_TO="$OUT/device_run.tar.gz"
if [[ -n "${PACK_ONLY:-}" ]]; then
  OUT="${PACK_WORK:-$(mktemp -d /tmp/device_run.XXXXXX)}"
  mkdir -p "$OUT" || { echo "device_run: cannot make the work folder $OUT"; exit 1; }
fi
# $BIN.tar.xz (tools/device_prep.sh) is unpacked beside it whenever it is not the archive $BIN came
# from: a machine kept warm between calls keeps the $BIN of the call before, which would
# otherwise run in place of the binaries this call carried.
if [[ -f "$BIN.tar.xz" ]]; then
  sum=$(cksum <"$BIN.tar.xz")
  if [[ ! -d "$BIN" || "$(cat "$BIN/.archive_cksum" 2>/dev/null)" != "$sum" ]]; then
    rm -rf "$BIN"
    tar -C "$(dirname "$BIN")" -xJf "$BIN.tar.xz" || { echo "device_run: cannot unpack $BIN.tar.xz"; exit 1; }
    [[ -d "$BIN" ]] || { echo "device_run: $BIN.tar.xz holds no folder $(basename "$BIN")"; exit 1; }
    echo "$sum" >"$BIN/.archive_cksum"
  fi
fi
export LD_LIBRARY_PATH="$PWD/$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
export MOEBENCH_SOURCE_DIR="$PWD" MOEBENCH_SUITES_DIR="$PWD/suites"
# NVLink multicast stays off on the lent hosts (a program using it can take the GPUs out of service).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# NCCL: the GPU host's CUDA toolkit has no libnccl; PyTorch's copy serves (opened at run time).
nccl_lib=$(python3 -c 'import nvidia.nccl as m, os; print(os.path.join(m.__path__[0], "lib"))' 2>/dev/null) &&
  export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$nccl_lib"
GPU_FILTER="BatchCuda.*:CudaMixtralStrategies.*:CudaModelTest.*:CudaOffloadModel.*:CudaOps.*:CudaArena.*:QuantCuda*:CudaQuant*"
GPU_FILTER+=":QuantDequantCuda.*:Nccl.*:CpuExpertKernel.*:CpuIsa.*"
GPU_FILTER+=":HostStore.*:OffloadPlan.*:Offload.*:CuptiCollector.*:HfFixture*:Machine.*:PhysicalBound.*"
GPU_FILTER+=":*CudaFamil*:CudaArgmaxSliced.*:CudaMoeSmallBlock.*:CudaOProjRouter.*:CudaGateUpRouter.*:CudaMoePersistent.*:CudaGemvStaged.*:CudaGemvChain.*:CudaHandoffProbe.*:CudaStep.*:CudaLaunchEnv*:CudaAttentionFold.*:CudaExpertPredict.*:TensorParallelCuda.*:ExpertParallelCuda.*:Shard.*:ParallelBound.*:HybridSplit.*:CudaDevice.*"
rc=0
note() { echo "== $(date -u +%T) $*" | tee -a "$OUT/device_run.log"; }
# pack: the tarball replaced in one rename, so a call cut meanwhile still returns the one before. Without
# PACK_ONLY the tarball is written inside the folder it packs, and tar may then end with status 1 ("file
# changed as we read it": the folder itself); that tarball is complete, only status 2 and up is a failure.
pack() {
  tar -C "$OUT" --exclude=device_run.tar.gz --exclude=device_run.tar.gz.part -czf "$PACK_TO.part" . 2>/dev/null
  (($? <= 1)) && mv -f "$PACK_TO.part" "$PACK_TO"
}
START_S=$(date +%s)
# capped LIMIT: LIMIT, or the seconds RUN_BUDGET_S leaves when fewer; 0 when under 5 are left.
capped() {
  local limit=$1 left
  [[ -z "${RUN_BUDGET_S:-}" ]] && { echo "$limit"; return; }
  left=$((START_S + RUN_BUDGET_S - $(date +%s)))
  ((left < 5)) && { echo 0; return; }
  echo $((left < limit ? left : limit))
}
step() {  # step NAME CMD...: runs CMD with its output in $OUT/NAME.log, notes a failure
  local name=$1; shift
  [[ $(capped 5) == 0 ]] && { note "$name: skipped, RUN_BUDGET_S spent"; rc=1; return; }
  note "$name"
  "$@" >"$OUT/$name.log" 2>&1
  local r=$?
  [[ $r -ne 0 ]] && { note "$name: exit $r"; rc=1; }
  tail -5 "$OUT/$name.log"
  pack
}
kernels() {  # the microbenchmarks of $1/moebench_bench into $2 (KERNEL_REPS > 1: medians of that many runs)
  local reps=${KERNEL_REPS:-1}
  "$1/moebench_bench" --benchmark_filter="${KERNEL_FILTER:-.}" --benchmark_min_time=0.05 \
    --benchmark_repetitions="$reps" --benchmark_report_aggregates_only="$([[ $reps -gt 1 ]] && echo true || echo false)" \
    --benchmark_out="$2" --benchmark_out_format=json
}
mixtral_oracle() {
  local ckpt=/tmp/mixtral2l ids=/tmp/oracle_ids.txt py=tools/mixtral_oracle.py
  rm -rf "$ckpt"
  "$BIN/moebench" make-model --preset mixtral-8x7b --layers 2 --seed 42 --dtype bf16 --out "$ckpt" || return 1
  python3 "$py" ids --vocab 32000 --n 40 --seed 42 >"$ids"
  "$BIN/moebench" logits --model "$ckpt" --backend cuda --max-model-len 64 --ids-file "$ids" \
    --prompt-len 8 --out /tmp/ours_logits.npy || return 1
  python3 "$py" compare --ckpt "$ckpt" --ids-file "$ids" --prompt-len 8 --ours /tmp/ours_logits.npy \
    --model-note "moebench make-model --preset mixtral-8x7b --layers 2 --seed 42 --dtype bf16" \
    --out "$OUT/mixtral2l_vs_transformers.json" || return 1
  [[ -n "${SKIP_SBS:-}" ]] && return 0
  python3 "$py" hf-generate --layers 8 --prompt-tokens 50 --new-tokens 128 --out "$OUT/hf_generate.json" || return 1
  "$BIN/moebench" bench --model synthetic:mixtral-8x7b:layers=8 --batch 1 --prompt-tokens 50 --new-tokens 128 \
    --out "$OUT/bench_mixtral8l.json" || return 1
  python3 "$py" side-by-side --hf "$OUT/hf_generate.json" --bench "$OUT/bench_mixtral8l.json" \
    --out "$OUT/transformers_side_by_side.json"
}
run_suite() {  # run_suite SUITE[@MODEL]
  local suite=${1%%@*} model="" name
  [[ "$1" == *@* ]] && model=${1#*@}
  name=$suite${model:+_$(echo "$model" | tr -c 'A-Za-z0-9_.\n-' '_')}
  local extra=()
  read -ra extra <<<"${SUITE_ARGS:-}"
  timeout -s INT "$(capped "${SUITE_TIMEOUT:-420}")" "$BIN/moebench" run --suite "suites/$suite.json" ${model:+--model "$model"} \
    --out "$OUT/$name.json" --html "$OUT/$name.html" --trace "$OUT/${name}_trace.json" "${extra[@]}"
}
disk() {
  df -B1 /tmp
  # bf16 bytes: a layer = 8 experts x 3 x 4096 x 14336 + attention 4096 x 10240 (+ norms,
  # gate); embeddings + lm_head = 2 x 32000 x 4096.
  local avail per_layer fixed layers
  avail=$(df -B1 --output=avail /tmp | tail -1)
  per_layer=$(( (8 * 3 * 4096 * 14336 + 4096 * 10240 + 8 * 4096 + 2 * 4096) * 2 ))
  fixed=$(( 2 * 32000 * 4096 * 2 + 2000000000 ))
  layers="${LAYERS:-$(( (avail - fixed) / per_layer ))}"
  (( layers > 32 )) && layers=32
  echo "disk: $avail bytes free on /tmp -> $layers layers of $per_layer bytes"
  "$BIN/moebench" make-model --preset mixtral-8x7b --layers "$layers" --seed 0 --out "/tmp/mixtral_l$layers" || return 1
  timeout -s INT "${DISK_TIMEOUT:-300}" "$BIN/moebench" run --suite suites/disk-baseline.json \
    --model "/tmp/mixtral_l$layers" --out "$OUT/disk_baseline_l$layers.json"
}
ncu_part() {
  local ncu i=0 entry csvs=()
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  [[ -x "$ncu" ]] || { echo "ncu: Nsight Compute not found"; return 1; }
  mkdir -p "$OUT/ncu"
  for entry in ${NCU_BENCH:?ncu: set NCU_BENCH to KERNEL_REGEX@BENCHMARK_FILTER entries}; do
    i=$((i + 1))
    timeout "${NCU_TIMEOUT:-90}" "$ncu" --clock-control none -k "regex:${entry%%@*}" -c 1 --launch-skip 3 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section Occupancy \
      --section LaunchStats --section WarpStateStats --section SchedulerStats --section InstructionStats \
      -o "/tmp/ncu_$i" -f "$BIN/moebench_bench" --benchmark_filter="${entry#*@}" >"$OUT/ncu/k$i.log" 2>&1
    if [[ -f "/tmp/ncu_$i.ncu-rep" ]]; then
      "$ncu" -i "/tmp/ncu_$i.ncu-rep" --csv --page raw >"$OUT/ncu/k${i}_raw.csv"
      "$ncu" -i "/tmp/ncu_$i.ncu-rep" --page details >"$OUT/ncu/k${i}_details.txt"
      rm -f "/tmp/ncu_$i.ncu-rep"
      csvs+=("$OUT/ncu/k${i}_raw.csv")
    else
      echo "ncu: nothing profiled for '$entry' (ncu/k$i.log)"
    fi
  done
  (( ${#csvs[@]} > 0 )) || return 1
  python3 tools/ncu_summary.py "${csvs[@]}" | tee "$OUT/ncu_summary.md"
}
scaleout() {
  local n tps="2 4" eps="4" f
  n=$(nvidia-smi -L | grep -c '^GPU')
  (( n >= 4 )) || { echo "scaleout: $n GPU(s) here; it needs 4 or 8 (nvidia-h200-x4, -x8)"; return 1; }
  (( n >= 8 )) && tps="2 4 8" && eps="4 8"
  nvidia-smi topo -m >"$OUT/topo.txt" 2>&1
  "$BIN/moebench_tests" --gtest_filter='Nccl.*:TensorParallelCuda.*:ExpertParallelCuda.*:CudaOps.ExpertParallel*' \
    --gtest_output="xml:$OUT/scaleout_tests.xml" >"$OUT/scaleout_tests.log" 2>&1 || { tail -20 "$OUT/scaleout_tests.log"; return 1; }
  # One GPU once, at every batch of both tables (the 1x of their rows).
  local common=(--model synthetic:mixtral-8x7b --prompt-tokens 50 --new-tokens 64 --no-quality)
  timeout -s INT "${BENCH_TIMEOUT:-300}" "$BIN/moebench" bench "${common[@]}" --batch 1,8,32,128 \
    --out "$OUT/scaleout_one.json" || return 1
  for t in $tps; do
    timeout -s INT "${BENCH_TIMEOUT:-300}" "$BIN/moebench" bench "${common[@]}" --batch 1,8,32 \
      --set tensor_parallel="$t" --out "$OUT/scaleout_tp$t.json" || return 1
  done
  for e in $eps; do
    timeout -s INT "${BENCH_TIMEOUT:-300}" "$BIN/moebench" bench "${common[@]}" --batch 8,32,128 \
      --set expert_parallel="$e" --out "$OUT/scaleout_ep$e.json" || return 1
  done
  # The offloaded suite fills an 84 GiB pinned store twice (several minutes): SCALEOUT_OFFLOAD=0 leaves it for a
  # second call (PARTS=suites SUITES=parallel-offload-x4) when one call's time limit is near.
  if [[ "${SCALEOUT_OFFLOAD:-1}" != 0 ]]; then
    SUITE_TIMEOUT="${SUITE_TIMEOUT:-600}" run_suite parallel-offload-x4 || return 1
  fi
  for f in tp ep; do
    python3 tools/scaleout_table.py --moebench "$BIN/moebench" "$OUT/scaleout_one.json" "$OUT"/scaleout_"$f"*.json \
      --json "$OUT/scaleout_table_$f.json" >"$OUT/scaleout_table_$f.md" || return 1
    cat "$OUT/scaleout_table_$f.md"
  done
}
sass_part() {
  local co re
  co=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null | head -1)
  [[ -x "$co" ]] || { echo "sass: cuobjdump not found"; return 1; }
  re=${SASS_KERNELS:?sass: set SASS_KERNELS to regular expressions on mangled kernel names}
  re="(${re// /)|(})"  # every expression in one pass over the dump
  "$co" -sass "$BIN/moebench_bench" >/tmp/all.sass || return 1
  python3 tools/sass_loops.py --kernel "$re" --json "$OUT/sass_summary.json" --keep "$OUT/sass_kernels.sass.gz" \
    /tmp/all.sass | tee "$OUT/sass_summary.md"
}
# variant V BINARY: the A/B parts' variant V as bin (BINARY of $BIN for `default` and for
# VAR=VALUE[,VAR=VALUE] settings, else BINARY of the folder $BIN/V) and envs (V's settings).
variant() {
  bin="$BIN/$2" envs=()
  if [[ "$1" == *=* ]]; then IFS=, read -ra envs <<<"$1"; elif [[ "$1" != default ]]; then bin="$BIN/$1/$2"; fi
}
ab_part() {  # the A/B series (PARTS=ab): runs written to $OUT as they finish, indexed in ab_index.tsv
  local bench=${AB_BENCH:---model synthetic:mixtral-8x7b --batch 1 --prompt-tokens 50 --new-tokens 128 --repetitions 2 --no-quality}
  local set v r name bin envs r_rc t skipped=0 index="$OUT/ab_index.tsv"
  : >"$index"
  for set in ${AB_SETS:--}; do
    for ((r = 1; r <= ${AB_ROUNDS:-2}; r++)); do
      for v in ${AB_VARIANTS:?ab: set AB_VARIANTS to variants (default, a folder under \$BIN or VAR=VALUE[,VAR=VALUE])}; do
        name="ab_$(echo "${set}_${v}" | tr -c 'A-Za-z0-9._\n-' '_')_r$r"
        variant "$v" moebench
        [[ -x "$bin" ]] || { echo "ab: $bin is missing"; return 1; }
        t=$(capped "${AB_TIMEOUT:-150}")
        ((t == 0)) && { echo "$set / $v round $r: skipped, RUN_BUDGET_S spent"; skipped=1; continue; }
        # shellcheck disable=SC2086 # AB_BENCH is a list of arguments
        env "${envs[@]}" timeout "$t" "$bin" bench $bench $([[ "$set" != - ]] && echo "--set $set") \
          $([[ "${AB_PROFILE:-0}" == 1 ]] && echo "--kernel-profile $OUT/$name.kprof.json") \
          --out "$OUT/$name.json" >"$OUT/$name.log" 2>&1
        r_rc=$?
        printf '%s\t%s\t%s\t%s\t%s\n' "$set" "$v" "$r" "$OUT/$name.json" "$r_rc" >>"$index"
        echo "$set / $v round $r: exit $r_rc"
        pack
      done
    done
  done
  python3 tools/ab_table.py "$index" --md "$OUT/ab_summary.md" --json "$OUT/ab_summary.json" || return 1
  return "$skipped"
}
kab_part() {  # the kernel A/B series (PARTS=kab): runs written to $OUT as they finish, indexed in kab_index.tsv
  local v r name bin envs r_rc t skipped=0 index="$OUT/kab_index.tsv"
  : >"$index"
  for ((r = 1; r <= ${KAB_ROUNDS:-2}; r++)); do
    for v in ${KAB_VARIANTS:?kab: set KAB_VARIANTS to variants (default, a folder under \$BIN or VAR=VALUE[,VAR=VALUE])}; do
      name="kab_$(echo "$v" | tr -c 'A-Za-z0-9._\n-' '_')_r$r"
      variant "$v" moebench_bench
      [[ -x "$bin" ]] || { echo "kab: $bin is missing"; return 1; }
      t=$(capped "${KAB_TIMEOUT:-150}")
      ((t == 0)) && { echo "$v round $r: skipped, RUN_BUDGET_S spent"; skipped=1; continue; }
      env "${envs[@]}" timeout "$t" "$bin" --benchmark_filter="${KERNEL_FILTER:-.}" \
        --benchmark_min_time=0.05 --benchmark_out="$OUT/$name.json" --benchmark_out_format=json >"$OUT/$name.log" 2>&1
      r_rc=$?
      printf '%s\t%s\t%s\t%s\n' "$v" "$r" "$OUT/$name.json" "$r_rc" >>"$index"
      echo "$v round $r: exit $r_rc"
      pack
    done
  done
  python3 tools/kernel_ab_table.py "$index" --md "$OUT/kab_summary.md" --json "$OUT/kab_summary.json" || return 1
  return "$skipped"
}
for part in $PARTS; do
  case "$part" in
    info)
      step info bash -c "nvidia-smi; '$BIN/moebench' --version; '$BIN/moebench' info" ;;
    cpu)
      step cpu_kernels env OMP_NUM_THREADS="$(nproc)" OMP_PROC_BIND=close "$BIN/moebench_cpu_bench" \
        --benchmark_out="$OUT/cpu_kernels.json" --benchmark_out_format=json ;;
    tests)
      shard=()
      if [[ -n "${TEST_SHARD:-}" ]]; then
        if [[ ! "$TEST_SHARD" =~ ^([0-9]+)/([1-9][0-9]*)$ ]] || ((BASH_REMATCH[1] >= BASH_REMATCH[2])); then
          note "tests: TEST_SHARD='$TEST_SHARD', expected I/N with 0 <= I < N (e.g. 0/2)"; rc=1; continue
        fi
        shard=(GTEST_SHARD_INDEX="${BASH_REMATCH[1]}" GTEST_TOTAL_SHARDS="${BASH_REMATCH[2]}")
      fi
      step gpu_tests env "${shard[@]}" "$BIN/moebench_tests" --gtest_filter="${TEST_FILTER:-$GPU_FILTER}" \
        --gtest_output="xml:$OUT/gpu_tests.xml" ;;
    kernels)
      [[ -x "$BIN/before/moebench_bench" ]] && step kernels_before kernels "$BIN/before" "$OUT/kernels_before.json"
      step kernels kernels "$BIN" "$OUT/kernels.json" ;;
    oracle)
      step fp8_oracle bash -c "set -e; python3 tools/fp8_oracle.py make --out /tmp/fp8 && \
        python3 tools/fp8_oracle.py ref --ckpt /tmp/fp8 --out /tmp/ref.npy && \
        '$BIN/moebench' logits --model /tmp/fp8 --backend cpu --set expert_dtype=fp8 --ids-file /tmp/fp8/ids.txt \
          --prompt-len 16 --out /tmp/ours.npy && \
        python3 tools/fp8_oracle.py compare --ours /tmp/ours.npy --ref /tmp/ref.npy --tol 1e-4 --out '$OUT/fp8_oracle.json'" ;;
    mixtral)
      step mixtral_oracle mixtral_oracle ;;
    families-oracle)
      step families_oracle python3 tools/families_oracle.py all --bin "$BIN" --out "$OUT/families_oracle.json" \
        --work /tmp/families_oracle --keep "$OUT/families_oracle" ;;
    sanitizer)
      step compute_sanitizer env BIN="$BIN" OUT="$OUT" TIME_BUDGET="${SANITIZER_BUDGET:-420}" \
        bash tools/compute_sanitizer.sh ;;
    suites)
      for s in ${SUITES:?suites: set SUITES to SUITE[@MODEL] entries}; do step "suite_${s%%@*}" run_suite "$s"; done ;;
    disk)
      step disk disk ;;
    ncu)
      step ncu ncu_part ;;
    sass)
      step sass sass_part ;;
    ab)
      step ab ab_part ;;
    kab)
      step kab kab_part ;;
    scaleout)
      step scaleout scaleout ;;
    *) note "unknown part '$part'"; rc=2 ;;
  esac
done
pack
[[ -n "${PACK_ONLY:-}" && -z "${PACK_WORK:-}" ]] && rm -rf "$OUT"  # the work folder this script made
exit $rc
