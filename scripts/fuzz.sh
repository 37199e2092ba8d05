#!/usr/bin/env bash
# fuzz.sh: builds the fuzz targets (the sanitizer build of sanitize.sh, build-asan/) and
# runs each over its seeds in tests/fuzz/corpus/<target>/ and then on mutants of them:
#   bash scripts/fuzz.sh                       # every target, 60 s each
#   MOEBENCH_FUZZ_SECONDS=600 bash scripts/fuzz.sh config tokenizer
#   MOEBENCH_FUZZ_RUNS=20000 bash scripts/fuzz.sh   # a fixed number of mutants: reproducible
# Targets: safetensors config tokenizer suite results trace chat_template dashboard. A finding (sanitizer report, an
# exception other than moebench's Error, a broken invariant, a hang) stops that target,
# saves the input under build-asan/fuzz-findings/ and makes the script exit non-zero after
# the remaining targets ran. Replay one: build-asan/bin/fuzz_<target> --runs 0 FILE.
# Env: MOEBENCH_FUZZ_SECONDS (default 60), MOEBENCH_FUZZ_RUNS (overrides the seconds),
#      MOEBENCH_FUZZ_SEED (PRNG seed, default 1), MOEBENCH_FUZZ_SKIP_BUILD=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/sanitize.sh"
# Findings must be reported, not worked around: a huge allocation is a crash (naming the
# size and the stack) instead of exhausting the machine's memory.
# Reports end in abort(), where the driver saves the input.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:detect_leaks=1:allocator_may_return_null=0:max_allocation_size_mb=2048:hard_rss_limit_mb=4096"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:report_error_type=1"
all_targets=(safetensors config tokenizer suite results trace chat_template dashboard)
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${all_targets[@]}")
if [[ -z "${MOEBENCH_FUZZ_SKIP_BUILD:-}" ]]; then
  moebench_install_deps
  moebench_build_sanitized
fi
findings="$MOEBENCH_ASAN_DIR/fuzz-findings"
mkdir -p "$findings"
budget=(--seconds "${MOEBENCH_FUZZ_SECONDS:-60}")
[[ -n "${MOEBENCH_FUZZ_RUNS:-}" ]] && budget=(--runs "$MOEBENCH_FUZZ_RUNS")
failed=()
for t in "${targets[@]}"; do
  bin="$MOEBENCH_ASAN_DIR/bin/fuzz_$t"
  corpus="$MOEBENCH_ROOT/tests/fuzz/corpus/$t"
  if [[ ! -x "$bin" || ! -d "$corpus" ]]; then
    echo "fuzz.sh: unknown target $t (expected one of: ${all_targets[*]})" >&2
    exit 2
  fi
  echo "== fuzz $t"
  if ! "$bin" "${budget[@]}" --seed "${MOEBENCH_FUZZ_SEED:-1}" --timeout 60 --artifacts "$findings" "$corpus"; then
    failed+=("$t")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs in $findings)" >&2
  exit 1
fi
echo "fuzz.sh: no findings in ${targets[*]}"
