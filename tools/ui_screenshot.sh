#!/usr/bin/env bash
# ui_screenshot.sh: renders the dashboard under Xvfb with Mesa software GL and
# writes a PNG; fails when no window can be opened or the image is blank (every
# pixel the same colour: `moebench dashboard --screenshot` checks that itself).
#
#   tools/ui_screenshot.sh [MOEBENCH] [RESULTS.json] [OUT.png] [extra dashboard args...]
# defaults: build/bin/moebench, ui/testdata/cpu_tiny_stages.json, build/dashboard_screenshot.png
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/build/bin/moebench}"
results="${2:-$root/ui/testdata/cpu_tiny_stages.json}"
out="${3:-$root/build/dashboard_screenshot.png}"
shift $(( $# < 3 ? $# : 3 ))
command -v xvfb-run >/dev/null || { echo "ui_screenshot.sh: xvfb-run not found (apt-get install xvfb xauth)" >&2; exit 1; }
rm -f "$out"
# The Xvfb screen must be larger than the window: pixels off screen are undefined.
LIBGL_ALWAYS_SOFTWARE=1 GALLIUM_DRIVER=llvmpipe xvfb-run -a -s "-screen 0 1920x1200x24" \
  "$bin" dashboard "$results" --screenshot "$out" --frames 4 "$@"
[ -s "$out" ] || { echo "ui_screenshot.sh: $out was not written" >&2; exit 1; }
echo "ui_screenshot.sh: $out ($(stat -c %s "$out") bytes)"
