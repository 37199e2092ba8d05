#!/usr/bin/env python3
"""kernel_diff.py BEFORE.json AFTER.json [--max-slowdown PCT]: two Google Benchmark JSON
files of the kernel microbenchmarks (tools/device_run.sh PARTS=kernels, with an older
build in $BIN/before), compared benchmark by benchmark (matched by name; the median aggregate when the runs
had repetitions): real time
before/after, the ratio, bytes/s where the benchmark reports it. Exits 1 when any
benchmark present in both is slower by more than --max-slowdown percent (default 2),
naming it; benchmarks only in one file are listed, not judged."""
import argparse, json, sys


def load(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"kernel_diff: {path}: {e}")
    if not isinstance(doc.get("benchmarks"), list):
        sys.exit(f"kernel_diff: {path}: no 'benchmarks' array (expected Google Benchmark JSON)")
    # With --benchmark_repetitions the median aggregate stands for the benchmark
    # (keyed by its run_name); otherwise the single iteration row.
    out, medians = {}, {}
    for b in doc["benchmarks"]:
        if "real_time" not in b:
            continue
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[b.get("run_name", b["name"])] = b
        else:
            out[b.get("run_name", b["name"])] = b
    out.update(medians)
    return doc.get("context", {}), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--max-slowdown", type=float, default=2.0)
    a = ap.parse_args()
    _, before = load(a.before)
    _, after = load(a.after)
    worse = []
    print(f"| benchmark | before | after | after/before time | GB/s after |")
    print("|---|--:|--:|--:|--:|")
    for name in sorted(set(before) & set(after)):
        tb, ta = before[name]["real_time"], after[name]["real_time"]
        ratio = ta / tb if tb > 0 else float("inf")
        bps = after[name].get("bytes_per_second")
        unit = after[name].get("time_unit", "ns")
        gbps = f"{bps / 1e9:.0f}" if bps else ""
        print(f"| {name} | {tb:.3g} {unit} | {ta:.3g} {unit} | {ratio:.3f} | {gbps} |")
        if ratio > 1 + a.max_slowdown / 100:
            worse.append((name, ratio))
    for name in sorted(set(before) ^ set(after)):
        print(f"only in {'before' if name in before else 'after'}: {name}")
    for name, ratio in worse:
        print(f"kernel_diff: {name} is {100 * (ratio - 1):.1f}% slower (limit {a.max_slowdown}%)", file=sys.stderr)
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
