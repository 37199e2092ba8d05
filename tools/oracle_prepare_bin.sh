#!/usr/bin/env bash
# oracle_prepare_bin.sh DEST: gathers what tools/oracle_device_run.sh needs on the GPU
# machine into one folder to carry there: build/bin, tools/mixtral_oracle.py, the run
# script, and the shared libraries that a build with the dashboard (MOEBENCH_UI=ON) links
# but the GPU machine lacks (OpenGL, GLFW, stb, X11; found with ldd, copied dereferenced).
#   bash tools/oracle_prepare_bin.sh /work/main/.oraclebin
# then, on the device (run with carry [".oraclebin"]):
#   MOEBENCH_SOURCE_DIR=$PWD OUT=$OUT bash .oraclebin/oracle_device_run.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:?usage: oracle_prepare_bin.sh DEST}"
rm -rf "$dest"
cp -r "$root/build/bin" "$dest"
cp "$root/tools/mixtral_oracle.py" "$root/tools/oracle_device_run.sh" "$dest/"
for lib in $(ldd "$dest/moebench" "$dest/moebench_tests" | awk '/=> \/lib/ {print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libstdc++*|libgcc_s*|libpthread*|libdl.so*|librt.so*|libutil.so*|ld-linux*) ;;
    *) cp -L "$lib" "$dest/" ;;
  esac
done
du -sh "$dest"
