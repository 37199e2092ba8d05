#!/usr/bin/env bash
# quickstart.sh: installs what is missing, builds, and runs the `default` benchmark
# suite (tiny synthetic model on the CPU when there is no usable GPU backend),
# printing its Markdown table; results and HTML report go to results/.
source "$(dirname "$0")/lib.sh"
moebench_install_deps
moebench_build
cd "$MOEBENCH_ROOT"
build/bin/moebench run --suite default --out results/quickstart.json --html results/quickstart.html
