#!/usr/bin/env bash
# stages_gpu.sh: run ON THE DEVICE MACHINE from the repository root, with the binaries
# (and the GL/X libraries the dashboard links, see tools/oracle_prepare_bin.sh) in $BIN.
#   PART=stages: the offload GPU tests, then the stages-gpu suite on 32 Mixtral-8x7B
#                layers (synthetic bf16 experts in the pinned host store, 22 GiB budget,
#                mixtral-locality routing) with its HTML report and a Chrome trace;
#   PART=both:   both, one after the other.
#   PART=disk:   make-model writes LAYERS Mixtral-8x7B layers to /tmp (default: as many as
#                the free space there holds, 2 GB spare), then the disk-baseline suite
#                reads experts from it (O_DIRECT) on every miss.
# Results under $OUT. Env: BIN (default .mainbin), LAYERS, DISK_TIMEOUT, STAGES_TIMEOUT (s, SIGINT: the
# finished cases stay in NAME.partial.json next to the results file), SKIP_TESTS.
set -uo pipefail
BIN="${BIN:-.mainbin}"
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$PWD/$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export MOEBENCH_SOURCE_DIR="$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
stages() {
    [[ -z "${SKIP_TESTS:-}" ]] && timeout -s INT 150 "$BIN/moebench_tests" --gtest_filter="${TEST_FILTER:-CudaOffloadModel.*:CudaModelTest.*:BatchCuda.*}" 2>&1 | tail -60 | tee "$OUT/tests.log"
    timeout -s INT "${STAGES_TIMEOUT:-400}" "$BIN/moebench" run --suite suites/stages-gpu.json --model synthetic:mixtral-8x7b \
      --out "$OUT/stages_gpu.json" --html "$OUT/stages_gpu.html" --trace "$OUT/stages_gpu_trace.json" 2>&1 | tee "$OUT/stages.log"
}
disk() {
    df -B1 /tmp | tee "$OUT/disk.txt"
    # bf16 bytes: a layer = 8 experts x 3 x 4096 x 14336 + attention 4096 x 10240 (+ norms,
    # gate); embeddings + lm_head = 2 x 32000 x 4096.
    local avail per_layer fixed
    avail=$(df -B1 --output=avail /tmp | tail -1)
    per_layer=$(( (8 * 3 * 4096 * 14336 + 4096 * 10240 + 8 * 4096 + 2 * 4096) * 2 ))
    fixed=$(( 2 * 32000 * 4096 * 2 + 2000000000 ))
    L="${LAYERS:-$(( (avail - fixed) / per_layer ))}"
    (( L > 32 )) && L=32
    echo "disk: $avail bytes free on /tmp -> $L layers of $per_layer bytes" | tee -a "$OUT/disk.txt"
    /usr/bin/time -v "$BIN/moebench" make-model --preset mixtral-8x7b --layers "$L" --seed 0 --out /tmp/mixtral_l$L 2>&1 | tail -25 | tee "$OUT/make_model.log"
    timeout -s INT "${DISK_TIMEOUT:-300}" "$BIN/moebench" run --suite suites/disk-baseline.json --model /tmp/mixtral_l$L \
      --out "$OUT/disk_baseline_l$L.json" 2>&1 | tee "$OUT/disk.log"
}
case "${PART:-stages}" in
  stages) stages ;;
  disk) disk ;;
  both) stages; disk ;;
esac
