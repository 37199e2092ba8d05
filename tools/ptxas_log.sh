#!/usr/bin/env bash
# ptxas_log.sh FILE COMMAND...: a compiler launcher (CMake's <LANG>_COMPILER_LAUNCHER) that runs
# COMMAND and keeps what it writes to stderr in FILE (replaced in one rename once the command
# ends, so a failed or cut compile leaves the last good FILE), for tools/ptxas_spills.py to read
# `-Xptxas -v`'s register and spill report. The command's exit status is the launcher's; its
# stderr is shown only when it fails.
set -u
out=$1
shift
tmp="$out.part"
"$@" 2>"$tmp"
rc=$?
if ((rc != 0)); then
  cat "$tmp" >&2
  rm -f "$tmp"
  exit "$rc"
fi
mv -f "$tmp" "$out"
