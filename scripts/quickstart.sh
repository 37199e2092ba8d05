#!/usr/bin/env bash
# quickstart.sh: installs what is missing, builds, and runs the main job on the
# embedded default: greedy generation with the tiny synthetic model (CPU when no GPU).
source "$(dirname "$0")/lib.sh"
moebench_install_deps
moebench_build
"$MOEBENCH_ROOT/build/bin/moebench" generate --preset tiny --prompt "The quick brown fox" --max-new-tokens 32
