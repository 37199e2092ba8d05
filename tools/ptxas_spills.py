#!/usr/bin/env python3
"""ptxas_spills.py LOG --budget BUDGET.json: the register spills of named kernels, as ptxas
reports them (`nvcc -Xptxas -v`, kept by tools/ptxas_log.sh), held to a budget. BUDGET maps
each kernel's demangled name with its anonymous namespaces and the `moebench::` qualifiers
left out (for example `quant_exact_kernel<(QuantFormat)1, false, 2, 1, false, true, true>`,
the function's parameter list dropped) to {"spill_stores": N, "spill_loads": N}: the bytes
ptxas reported when the budget was written, and optionally "registers": N, the most registers
a thread may take (the count that still lets the launch's warps an SM be resident). Prints one
line per kernel and exits 1 when a kernel spills more than its budget, takes more registers
than its ceiling, or is missing from LOG (the kernel was renamed or no longer compiled: write
the budget again), 2 when LOG or BUDGET cannot be read or an entry of BUDGET is malformed (one
line naming it, before any kernel's line). Needs c++filt (binutils). The point: a
change that makes a default decode kernel spill (session 34 found one that cost a format 2.3%
of its decode speed) or lose resident warps (session 51: two-tile blocks at 8-12 warps an SM
against 16 ran slower) shows up here, on any machine, without a GPU.
--arch picks the target whose report is read (default sm_90a)."""
import argparse
import json
import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGS = re.compile(r"Used (\d+) registers")


def read_report(path, arch):
    """{mangled name: (registers, spill stores, spill loads)} of the entry functions for arch."""
    out, cur, spill = {}, None, None
    for line in open(path, errors="replace"):
        m = ENTRY.search(line)
        if m:
            cur, spill = (m.group(1) if m.group(2) == arch else None), None
            continue
        m = SPILL.search(line)
        if m and cur:
            spill = (int(m.group(2)), int(m.group(3)))
            continue
        m = REGS.search(line)
        if m and cur:
            out[cur] = (int(m.group(1)),) + (spill or (0, 0))
            cur = None
    return out


def short_name(demangled):
    """The demangled name without anonymous namespaces, moebench:: qualifiers and parameters."""
    s = re.sub(r"\(anonymous namespace\)::", "", demangled)
    s = re.sub(r"\bmoebench::(cuda::)?", "", s)
    s = re.sub(r"^void ", "", s)
    depth, cut = 0, len(s)
    for i, ch in enumerate(s):  # the parameter list: the first '(' outside template arguments, after a '>'
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and i > 0 and s[i - 1] == ">":
            cut = i
            break
    return s[:cut]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("log")
    ap.add_argument("--budget", required=True)
    ap.add_argument("--arch", default="sm_90a")
    a = ap.parse_args()
    try:
        report = read_report(a.log, a.arch)
    except OSError as e:
        print(f"ptxas_spills: cannot read {a.log}: {e.strerror}")
        return 2
    try:
        budget = json.load(open(a.budget))
    except (OSError, ValueError) as e:
        print(f"ptxas_spills: cannot read the budget {a.budget}: {e}")
        return 2
    if not isinstance(budget, dict):
        print(f"ptxas_spills: {a.budget}: expected an object of kernel names, got {type(budget).__name__}")
        return 2
    for kernel, lim in budget.items():
        if kernel.startswith("_"):
            continue  # a comment
        if not isinstance(lim, dict) or not all(isinstance(lim.get(k), int) for k in ("spill_stores", "spill_loads")) \
                or not isinstance(lim.get("registers", 0), int):
            print(f"ptxas_spills: {a.budget}: {kernel}: expected {{\"spill_stores\": N, \"spill_loads\": N}} "
                  f"and optionally \"registers\": N (integers), got {json.dumps(lim)}")
            return 2
    if not report:
        print(f"ptxas_spills: {a.log} holds no ptxas report for {a.arch} (compiled without -Xptxas -v?)")
        return 2
    names = list(report)
    try:
        dem = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"ptxas_spills: c++filt failed ({e}); it comes with binutils")
        return 2
    by_short = {short_name(d): report[n] for n, d in zip(names, dem.splitlines())}
    bad = 0
    for kernel, lim in budget.items():
        if kernel.startswith("_"):
            continue  # a comment
        got = by_short.get(kernel)
        if got is None:
            print(f"MISSING {kernel}: not in {a.log} for {a.arch} (renamed or no longer compiled: write the budget again)")
            bad += 1
            continue
        regs, st, ld = got
        ceiling = lim.get("registers")
        over = st > lim["spill_stores"] or ld > lim["spill_loads"] or (ceiling is not None and regs > ceiling)
        bad += over
        print(f"{'OVER' if over else 'ok'} {kernel}: {regs} registers"
              + (f" (at most {ceiling})" if ceiling is not None else "")
              + f", spill stores / loads {st} / {ld} bytes (budget {lim['spill_stores']} / {lim['spill_loads']})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
