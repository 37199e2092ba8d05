#!/usr/bin/env bash
# device_prep.sh: gathers, on THIS machine, what tools/device_run.sh needs on the GPU
# machine into one folder to carry there (the device tool carries at most 64 MiB, the
# working tree that travels included): the stripped binaries of a CUDA build (BINARIES,
# default moebench moebench_tests moebench_bench moebench_cpu_bench; name fewer when the
# call needs fewer), and the shared libraries they link that a bare GPU host may lack
# (found with ldd; the C/C++ runtime, the CUDA driver and the CUDA toolkit's libraries are
# on the GPU host already). With BEFORE=DIR (a build/bin of an older commit), its stripped
# moebench_bench and moebench (those of the two that BINARIES names) go to DEST/before, for
# the before/after kernel comparison (PARTS=kernels) and the `before` variant of PARTS=ab and
# PARTS=kab. With ALT=DIR (a build/bin of a variant built only to be measured), its stripped
# moebench_bench goes to DEST/alt: the `alt` variant of PARTS=kab.
# The folder is also packed as DEST.tar.xz with xz -9e, whose window finds the bytes that
# two builds of one binary share (a before/after pair packs to little more than one): carry
# that, and device_run.sh unpacks it there (again whenever a new archive arrives). The script
# prints the size of the working tree that travels beside it and fails when the two exceed
# the limit.
#   bash tools/device_prep.sh [BUILD_BIN=build/bin] [DEST=.devbin]
#   BINARIES="moebench moebench_bench" BEFORE=/tmp/old/build/bin bash tools/device_prep.sh
#   BINARIES=moebench_bench BEFORE=/tmp/old/build/bin ALT=/tmp/alt/build/bin bash tools/device_prep.sh
set -euo pipefail
src="${1:-build/bin}"
dest="${2:-.devbin}"
bins="${BINARIES:-moebench moebench_tests moebench_bench moebench_cpu_bench}"
for b in $bins; do
  case "$b" in moebench|moebench_tests|moebench_bench|moebench_cpu_bench) ;;
    *) echo "device_prep: BINARIES: '$b', expected moebench, moebench_tests, moebench_bench or moebench_cpu_bench" >&2; exit 1 ;;
  esac
  [[ -x "$src/$b" ]] || { echo "device_prep: $src/$b is missing (build with MOEBENCH_CUDA=ON and MOEBENCH_BENCH=ON)" >&2; exit 1; }
done
rm -rf "$dest"
mkdir -p "$dest"
for b in $bins; do strip -o "$dest/$b" "$src/$b"; done
for lib in $(ldd "$dest"/moebench* | awk '/=> \// {print $3}' | grep -v '^/usr/local/cuda' | sort -u); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libstdc++*|libgcc_s*|libpthread*|libdl.so*|librt.so*|libutil.so*|ld-linux*|libcuda.so*) ;;
    *) cp -L "$lib" "$dest/" ;;
  esac
done
if [[ -n "${BEFORE:-}" ]]; then  # the older build of each of moebench_bench and moebench that BINARIES names
  mkdir -p "$dest/before"
  for b in moebench_bench moebench; do
    [[ " $bins " == *" $b "* ]] || continue
    [[ -x "$BEFORE/$b" ]] || { echo "device_prep: BEFORE: $BEFORE/$b is missing" >&2; exit 1; }
    strip -o "$dest/before/$b" "$BEFORE/$b"
  done
fi
if [[ -n "${ALT:-}" ]]; then
  [[ -x "$ALT/moebench_bench" ]] || { echo "device_prep: ALT: $ALT/moebench_bench is missing" >&2; exit 1; }
  mkdir -p "$dest/alt"
  strip -o "$dest/alt/moebench_bench" "$ALT/moebench_bench"
fi
# The builds of one binary side by side in the archive, so that xz's window (64 MiB at -9e) holds
# the first while it packs the next: a second build then costs little more than its changes.
order=()
for b in moebench_bench moebench moebench_tests moebench_cpu_bench; do
  for d in "" before/ alt/; do [[ -f "$dest/$d$b" ]] && order+=("$(basename "$dest")/$d$b"); done
done
while IFS= read -r f; do order+=("$(basename "$dest")/$f"); done < <(cd "$dest" && find . -maxdepth 1 -type f ! -name 'moebench*' -printf '%P\n' | sort)
tar -C "$(dirname "$dest")" -cf - "${order[@]}" | xz -9e -T0 >"$dest.tar.xz"
du -sh "$dest" "$dest.tar.xz"
ls -R "$dest"
# What travels beside it: tracked files and untracked ones git does not ignore.
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
archive=$(stat -c %s "$dest.tar.xz")
echo "device_prep: working tree $((tree >> 20)) MiB + $dest.tar.xz $((archive >> 20)) MiB of the 64 MiB a call carries"
if (( tree + archive > 64 << 20 )); then
  # The default build carries each kernel's compute_80 PTX beside its sm_90a machine code (the
  # PTX text names its target; builds before session 55 carried 90a's); a 90a-real build leaves
  # it out, about a third smaller.
  hint=""
  for b in "$dest"/moebench*; do
    grep -aqE '\.target sm_(80|90a)' "$b" && { hint=" or build without PTX (-DCMAKE_CUDA_ARCHITECTURES=90a-real: $(basename "$b") carries PTX; docs/MEASURING.md)"; break; }
  done
  echo "device_prep: over the 64 MiB carry limit; name fewer BINARIES$hint" >&2
  exit 1
fi
