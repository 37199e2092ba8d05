#!/usr/bin/env bash
# compute_sanitizer.sh: run ON THE GPU MACHINE from the repository root. Runs every GPU
# test of moebench_tests under compute-sanitizer's memcheck and racecheck, one test per
# process (so each report names its test), applies the documented suppressions
# (docs/SANITIZERS.md) and exits non-zero on anything else. Everything lands in $OUT:
#   $OUT/compute_sanitizer/<tool>/<Test.Name>.log   the raw compute-sanitizer output
#   $OUT/compute_sanitizer/summary.txt              one line per (tool, test) + verdict
#   $OUT/compute_sanitizer.tar.gz                   all of the above
#   bash tools/compute_sanitizer.sh                 # binaries in build/bin
#   BIN=.cudabin bash tools/compute_sanitizer.sh    # binaries carried to another folder
# Env: BIN (folder with moebench_tests; default build/bin), OUT (default ./gpu_out),
#      TOOLS (default "memcheck racecheck"), TEST_FILTER (gtest filter; default the GPU
#      tests below), TEST_TIMEOUT (s per test and tool, default 500), TIME_BUDGET (s for
#      the whole script, default 540: no test starts after it; the ones left are listed
#      as a TEST_FILTER for the next call), SANITIZER (path to compute-sanitizer; default
#      found in PATH, $CUDA_HOME/bin, /usr/local/cuda/bin).
# A test that runs past TEST_TIMEOUT, or is not reached in TIME_BUDGET, is reported as
# such (exit 1 and 3), never as clean. Logs are written as tests finish, so a command
# killed from outside still leaves what it did under $OUT.
set -uo pipefail
BIN="${BIN:-build/bin}"
OUT="${OUT:-$PWD/gpu_out}"
TOOLS="${TOOLS:-memcheck racecheck}"
TEST_TIMEOUT="${TEST_TIMEOUT:-500}"
TIME_BUDGET="${TIME_BUDGET:-540}"
t0=$(date +%s)
# The GPU tests: every suite that skips without a GPU (tests/*cuda*_test.cpp, the device
# arena, the offload providers and host stores) and the CUPTI collector.
GPU_FILTER="BatchCuda.*:CudaMixtralStrategies.*:CudaModelTest.*:CudaOffloadModel.*:CudaOps.*:CudaArena.*"
GPU_FILTER+=":HostStore.*:OffloadPlan.*:Offload.*:CuptiCollector.*"
TEST_FILTER="${TEST_FILTER:-$GPU_FILTER}"

dir="$OUT/compute_sanitizer"
mkdir -p "$dir"
summary="$dir/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
pack() { tar -C "$OUT" -czf "$OUT/compute_sanitizer.tar.gz" compute_sanitizer 2>/dev/null; }

san="${SANITIZER:-}"
if [[ -z "$san" ]]; then
  for c in "$(command -v compute-sanitizer 2>/dev/null)" "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" \
           /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [[ -n "$c" && -x "$c" ]] && { san="$c"; break; }
  done
fi
if [[ -z "$san" || ! -x "$san" ]]; then
  say "compute_sanitizer.sh: compute-sanitizer not found (set SANITIZER=/path/to/compute-sanitizer)"
  pack
  exit 2
fi
if [[ ! -x "$BIN/moebench_tests" ]]; then
  say "compute_sanitizer.sh: $BIN/moebench_tests not found (set BIN to the folder of the CUDA build's binaries)"
  pack
  exit 2
fi
export LD_LIBRARY_PATH="$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if [[ -z "${MOEBENCH_SOURCE_DIR:-}" && -d "$PWD/tests/fixtures" ]]; then export MOEBENCH_SOURCE_DIR="$PWD"; fi

say "== compute_sanitizer $(date -u +%FT%TZ) bin=$BIN sanitizer=$san"
"$san" --version 2>&1 | tail -1 | tee -a "$summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$summary"

# Test names from gtest's listing ("Suite." lines, then "  Name" lines; drop comments).
mapfile -t tests < <("$BIN/moebench_tests" --gtest_list_tests --gtest_filter="$TEST_FILTER" |
  awk '/^[^ ]/ {suite=$1; next} /^  / {print suite $1}')
if [[ ${#tests[@]} -eq 0 ]]; then
  say "compute_sanitizer.sh: no test matches $TEST_FILTER"
  pack
  exit 2
fi
say "tests: ${#tests[@]} ($TEST_FILTER)"

# Suppressions (docs/SANITIZERS.md says why):
#  memcheck  CudaArena.CapPeakCounterAndErrors: the test asks for a 1 PiB arena on purpose
#            and checks that moebench turns cudaMalloc's out-of-memory into an Error; memcheck
#            reports that API error. Only cudaErrorMemoryAllocation reports in that test.
#  racecheck shared-memory hazards inside cuBLAS's own kernels (split-K reduction and GEMM
#            kernels of the library; no moebench source line, no moebench symbol): cuBLAS
#            is closed source and its results are checked against the CPU by the tests.
#            A hazard report that names a moebench kernel or file is never suppressed.
CUBLAS_KERNEL='splitKreduce|cublas|cutlass|xmma|gemmk|gemmSN|gemv2|gemvx|sm[0-9]+_|ampere_|hopper_'

# Counts reports in a log. Each report starts with "========= " and a non-blank character
# (continuation lines are indented further); the tool's own banner and summaries are not reports.
reports_of() {
  grep -E '^========= [^ ]' "$1" | grep -Ev '^========= (COMPUTE-SANITIZER|ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|Target application returned|This tool|Error: process didn.t terminate successfully|No CUDA-capable)' || true
}

fail=0
left=()
for tool in $TOOLS; do
  mkdir -p "$dir/$tool"
  extra=()
  case "$tool" in
    memcheck) extra=(--report-api-errors explicit) ;;
    racecheck) extra=(--racecheck-report analysis) ;;
    *) say "compute_sanitizer.sh: unknown tool $tool (memcheck or racecheck)"; fail=1; continue ;;
  esac
  for t in "${tests[@]}"; do
    if (( $(date +%s) - t0 >= TIME_BUDGET )); then
      left+=("$tool:$t")
      continue
    fi
    log="$dir/$tool/$t.log"
    start=$(date +%s)
    timeout -s KILL "$TEST_TIMEOUT" "$san" --tool "$tool" --print-limit 100000 "${extra[@]}" \
      "$BIN/moebench_tests" --gtest_filter="$t" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    mapfile -t reps < <(reports_of "$log")
    n=${#reps[@]}
    suppressed=0
    for r in "${reps[@]}"; do
      case "$tool" in
        memcheck)
          if [[ "$t" == "CudaArena.CapPeakCounterAndErrors" && "$r" == *"cudaErrorMemoryAllocation"* ]]; then
            suppressed=$((suppressed + 1))
          fi ;;
        racecheck)
          # The report line and its "and ... access at" continuation: both ends in cuBLAS.
          block=$(grep -F -A1 -- "$r" "$log" | head -2)
          if [[ "$r" == *"Race reported"* ]] && ! grep -qiE 'moebench|engine/cuda|\.cu:' <<<"$block" &&
             [[ $(grep -cE "$CUBLAS_KERNEL" <<<"$block") -eq 2 ]]; then
            suppressed=$((suppressed + 1))
          fi ;;
      esac
    done
    # The tool's own count must agree with the reports read here, or the format changed:
    # then nothing is assumed clean.
    counted=$(grep -Eo 'ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: [0-9]+ hazard' "$log" | grep -Eo '[0-9]+' | tail -1)
    verdict=clean
    if [[ $rc -eq 137 ]]; then verdict="TIMEOUT after ${TEST_TIMEOUT}s"
    elif [[ -z "$counted" ]] && grep -q 'terminated before first instrumented API call' "$log" &&
         grep -q '\[  PASSED  \] 1 test' "$log"; then
      verdict="no CUDA call (the test passed without touching the GPU: nothing to check)"
    elif [[ -z "$counted" ]]; then verdict="NO SUMMARY (tool or test crashed, rc=$rc)"
    elif [[ "$counted" -ne "$n" ]]; then verdict="UNCLASSIFIED: the tool counts $counted, $n reports read"
    elif [[ $((n - suppressed)) -gt 0 ]]; then verdict="FINDINGS: $((n - suppressed))"
    elif grep -q '\[  FAILED  \]' "$log"; then verdict="TEST FAILED under the tool (rc=$rc)"
    elif grep -q '\[  SKIPPED \]' "$log"; then verdict="skipped (no GPU?)"
    fi
    [[ "$verdict" == clean || "$verdict" == skipped* || "$verdict" == "no CUDA call"* ]] || fail=1
    say "$(printf '%-9s %-75s %4ss reports=%s suppressed=%s  %s' "$tool" "$t" "$secs" "$n" "$suppressed" "$verdict")"
    pack
  done
done
if [[ ${#left[@]} -gt 0 ]]; then
  say "== not run within TIME_BUDGET=${TIME_BUDGET}s (${#left[@]}):"
  for tool in $TOOLS; do
    f=$(printf '%s\n' "${left[@]}" | sed -n "s/^$tool://p" | paste -sd:)
    [[ -n "$f" ]] && say "   TOOLS=$tool TEST_FILTER='$f'"
  done
fi
if [[ $fail -ne 0 ]]; then say "== compute_sanitizer: NOT clean, see the lines above and their logs"
elif [[ ${#left[@]} -gt 0 ]]; then say "== compute_sanitizer: clean so far, incomplete"
else say "== compute_sanitizer: clean (suppressions as documented)"; fi
pack
if [[ $fail -ne 0 ]]; then exit 1; fi
if [[ ${#left[@]} -gt 0 ]]; then exit 3; fi
exit 0
