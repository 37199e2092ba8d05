#!/usr/bin/env bash
# check_layers.sh: the folders of moebench are layers that only point down. Every
# #include "folder/..." in a layer folder must name the same folder or one below it
# (docs/ARCHITECTURE.md, Layers). Prints one line per violation,
#   file:line: includes "engine/x.h": variants may include common, model (not engine)
# and exits 1; exits 0 when every include points down. The build runs it at configure
# and build time, ctest runs it on the tree and on a fixture that includes upward.
#   scripts/check_layers.sh [ROOT]   (ROOT: the repository root, default: this checkout)
set -uo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

# Layer table, lowest first: each layer may include the folders listed after it.
# app and ui are siblings at the top: neither includes the other.
declare -A allowed=(
  [common]=""
  [model]="common"
  [variants]="common model"
  [profiler]="common model variants"
  [engine]="common model variants profiler"
  [reports]="common model variants profiler engine"
  [suites]="common model variants profiler engine reports"
  [cli]="common model variants profiler engine reports suites"
  [app]="common model variants profiler engine reports suites cli"
  [ui]="common model variants profiler engine reports suites cli"
)

bad=0
for layer in "${!allowed[@]}"; do
  [ -d "$root/$layer" ] || continue
  while IFS= read -r hit; do
    # hit: path:line:text
    file="${hit%%:*}" rest="${hit#*:}"
    line="${rest%%:*}" text="${rest#*:}"
    [[ "$text" =~ \"([^\"]*)\" ]] || continue
    inc="${BASH_REMATCH[1]}"
    rel="${file#"$root"/}"
    if [[ "$inc" == *../* ]]; then
      echo "$rel:$line: includes \"$inc\": a relative path that leaves the folder hides its layer; write \"folder/file.h\""
      bad=1
      continue
    fi
    top="${inc%%/*}"
    [ "$top" = "$inc" ] && continue        # same-folder include
    [ -n "${allowed[$top]+x}" ] || continue  # not a layer folder (tests/, a library)
    [ "$top" = "$layer" ] && continue
    case " ${allowed[$layer]} " in *" $top "*) continue ;; esac
    echo "$rel:$line: includes \"$inc\": $layer may include ${allowed[$layer]:-no other folder} (not $top)"
    bad=1
  done < <(grep -rnE --include='*.h' --include='*.hpp' --include='*.cpp' --include='*.cu' --include='*.cuh' \
             '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$root/$layer")
done
if [ "$bad" -ne 0 ]; then
  echo "check_layers: an include points up a layer (table: scripts/check_layers.sh, docs/ARCHITECTURE.md)" >&2
  exit 1
fi
exit 0
