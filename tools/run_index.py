"""run_index.py: the index files of tools/device_run.sh's A/B parts (ab_index.tsv, kab_index.tsv): one
line per run, tab separated, read by tools/ab_table.py and tools/kernel_ab_table.py."""
import json
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


def finish(prog, md, problems, md_path, json_path, doc):
    """Prints the table (md: its lines) with the problems listed under it, writes it to md_path and
    doc (with the problems) to json_path where given, and exits 1 naming each problem on stderr
    when there are any."""
    if problems:
        md += ["Problems:", ""] + [f"- {p}" for p in problems] + [""]
    text = "\n".join(md)
    print(text)
    if md_path:
        open(md_path, "w").write(text + "\n")
    if json_path:
        json.dump(dict(doc, problems=problems), open(json_path, "w"), indent=1)
    if problems:
        for p in problems:
            print(f"{prog}: {p}", file=sys.stderr)
        sys.exit(1)
