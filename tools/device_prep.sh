#!/usr/bin/env bash
# device_prep.sh: gathers, on THIS machine, what tools/device_run.sh needs on the GPU
# machine into one folder to carry there (the device tool carries at most 64 MiB): the
# stripped moebench, moebench_tests and moebench_bench of a CUDA build, and the shared
# libraries they link that a bare GPU host may lack (found with ldd; the C/C++ runtime,
# the CUDA driver and the CUDA toolkit's libraries are on the GPU host already). With BEFORE=DIR (a build/bin of an older commit), its
# stripped moebench_bench goes to DEST/before for the before/after kernel comparison.
# The folder is also packed as DEST.tar.xz (a third of the size): carry that when the
# folder is over the carry limit; tools/device_run.sh unpacks it when DEST is absent.
#   bash tools/device_prep.sh [BUILD_BIN=build/bin] [DEST=.devbin]
set -euo pipefail
src="${1:-build/bin}"
dest="${2:-.devbin}"
for b in moebench moebench_tests moebench_bench moebench_cpu_bench; do
  [[ -x "$src/$b" ]] || { echo "device_prep: $src/$b is missing (build with MOEBENCH_CUDA=ON and MOEBENCH_BENCH=ON)" >&2; exit 1; }
done
rm -rf "$dest"
mkdir -p "$dest"
for b in moebench moebench_tests moebench_bench moebench_cpu_bench; do strip -o "$dest/$b" "$src/$b"; done
for lib in $(ldd "$dest"/moebench* | awk '/=> \// {print $3}' | grep -v '^/usr/local/cuda' | sort -u); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libstdc++*|libgcc_s*|libpthread*|libdl.so*|librt.so*|libutil.so*|ld-linux*|libcuda.so*) ;;
    *) cp -L "$lib" "$dest/" ;;
  esac
done
if [[ -n "${BEFORE:-}" ]]; then
  mkdir -p "$dest/before"
  strip -o "$dest/before/moebench_bench" "$BEFORE/moebench_bench"
fi
tar -C "$(dirname "$dest")" -cJf "$dest.tar.xz" "$(basename "$dest")"
du -sh "$dest" "$dest.tar.xz"
ls "$dest"
