#!/usr/bin/env bash
# test.sh: installs what is missing, builds everything, and runs every test
# (GPU tests skip with a message when no GPU is present).
source "$(dirname "$0")/lib.sh"
moebench_install_deps
moebench_build
cd "$MOEBENCH_ROOT/build"
ctest --output-on-failure -j"$(nproc)" --timeout 600
