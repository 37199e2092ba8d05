#!/usr/bin/env python3
"""ncu_summary.py: one line per profiled kernel from Nsight Compute's raw CSV pages
(`ncu -i REPORT.ncu-rep --csv --page raw > FILE.csv`, a report of the sections SpeedOfLight,
ComputeWorkloadAnalysis, Occupancy, LaunchStats and WarpStateStats at least): the kernel, its
duration, how busy DRAM was, how many issue slots were used, the integer (ALU) and FMA pipes'
shares of their peaks, the warps active per SM as a share of the 64 it can hold, registers per
thread, grid size, and the stall reasons that cost the most warps per issued instruction.

  python3 tools/ncu_summary.py [--stalls N] FILE.csv ...

Markdown table on stdout. A file without ncu's header row or without one of the metrics used
stops it with one line naming the file and the metric.
"""
import argparse
import csv
import sys

METRICS = [
    ("us", "gpu__time_duration.sum"),
    ("DRAM %", "dram__cycles_active.avg.pct_of_peak_sustained_elapsed"),
    ("issue %", "smsp__issue_active.avg.pct_of_peak_sustained_active"),
    ("ALU %", "sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active"),
    ("FMA %", "sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active"),
    ("warps %", "sm__warps_active.avg.pct_of_peak_sustained_active"),
    ("regs", "launch__registers_per_thread"),
]
STALL_PREFIX, STALL_SUFFIX = "smsp__average_warps_issue_stalled_", "_per_issue_active.ratio"


def fail(msg):
    print(f"ncu_summary: {msg}", file=sys.stderr)
    sys.exit(1)


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def rows_of(path):
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        fail(f"{path}: cannot read ({e.strerror})")
    header = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if header is None:
        fail(f"{path}: no row with 'Kernel Name' (not an ncu --page raw --csv export)")
    names = rows[header]
    # The row after the header holds the units; each later row is one profiled launch.
    for r in rows[header + 2:]:
        if len(r) == len(names):
            yield dict(zip(names, r))


def short_name(full):
    """The kernel's own name and template arguments, without its parameters, return type and namespaces."""
    name = full.split("(")[0] if not full.startswith("(") else full
    head, sep, args = name.partition("<")
    head = head.replace("void ", "").strip()
    head = head.rsplit("::", 1)[-1] if "::" in head else head
    return head + sep + args


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--stalls", type=int, default=3, help="stall reasons shown per kernel (default 3)")
    a = ap.parse_args()
    lines = ["| kernel | " + " | ".join(m for m, _ in METRICS) + " | grid | top stalls (warps per issued instruction) |",
             "|---|" + "---:|" * len(METRICS) + "---:|---|"]
    for path in a.csv:
        for d in rows_of(path):
            values = []
            for label, key in METRICS:
                v = number(d.get(key, ""))
                if v is None:
                    fail(f"{path}: metric '{key}' ({label}) missing or not a number")
                values.append(v)
            stalls = sorted(((number(v), k[len(STALL_PREFIX):-len(STALL_SUFFIX)]) for k, v in d.items()
                             if k.startswith(STALL_PREFIX) and k.endswith(STALL_SUFFIX) and number(v) is not None),
                            reverse=True)[:a.stalls]
            if not stalls:
                fail(f"{path}: no '{STALL_PREFIX}*{STALL_SUFFIX}' metrics (profile with --section WarpStateStats)")
            lines.append(f"| {short_name(d['Kernel Name'])} | " + " | ".join(
                [f"{values[0]:.2f}"] + [f"{v:.1f}" for v in values[1:-1]] + [f"{values[-1]:.0f}"]) +
                f" | {d.get('launch__grid_size', '')} | " +
                ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for v, k in stalls) + " |")
    if len(lines) == 2:
        fail("no profiled kernel in " + ", ".join(a.csv))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
