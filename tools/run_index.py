"""run_index.py: the index files of tools/device_run.sh's A/B parts (ab_index.tsv, kab_index.tsv): one
line per run, tab separated, read by tools/ab_table.py and tools/kernel_ab_table.py."""
import sys


def read_index(path, prog, fields, ints):
    """The runs of index file `path`, one dict a line with the keys `fields` (tab separated);
    those named in `ints` are integers (the last may be negative: an exit status). A malformed
    line or an empty file is one error naming the file and line, prefixed with `prog`."""
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        sys.exit(f"{prog}: {path}: {e}")
    runs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        f = line.split("\t")
        ok = len(f) == len(fields) and all(f[i].lstrip("-").isdigit() for i, k in enumerate(fields) if k in ints)
        if not ok:
            sys.exit(f"{prog}: {path}:{n}: expected {len(fields)} tab-separated fields ({', '.join(fields)}), "
                     f"got {line!r}")
        runs.append({k: int(v) if k in ints else v for k, v in zip(fields, f)})
    if not runs:
        sys.exit(f"{prog}: {path}: no runs")
    return runs
