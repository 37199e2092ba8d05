#!/usr/bin/env python3
"""kernel_ab_table.py INDEX [--md OUT.md] [--json OUT.json]: the table of an A/B series of the
kernel microbenchmarks (tools/device_run.sh PARTS=kab: moebench_bench alternated between
builds and environment settings, round by round, in one call). INDEX holds one line per run,
tab separated: variant, round, Google Benchmark JSON, exit status. Per benchmark: each
variant's real time over its rounds (min-max, microseconds) and its fraction of the same-size
read stream (`of_same_size_stream`), then the ratio of its mean time to the first variant's
(below 1: faster). A fraction above 1.01 is marked (the stream measured against itself varies
by about half a percent): the kernel read faster than the harness's same-size stream, so that
stream is no upper limit at that size (a yardstick, not a bound).
Exits 1 when a run failed or left no results (naming it); a malformed INDEX line is a
one-line error naming the file and line."""
import argparse
import json

import run_index


def read_index(path):
    runs = run_index.read_index(path, "kernel_ab_table", ["variant", "round", "benchmark JSON", "exit status"],
                                {"round", "exit status"})
    return [{"variant": r["variant"], "round": r["round"], "file": r["benchmark JSON"], "rc": r["exit status"]}
            for r in runs]


def load(run):
    """{benchmark name: (microseconds, fraction of the same-size stream or None)}, or an error string."""
    try:
        doc = json.load(open(run["file"]))
    except (OSError, ValueError) as e:
        return f"{run['file']}: {e}"
    if not isinstance(doc.get("benchmarks"), list):
        return f"{run['file']}: no 'benchmarks' array (expected Google Benchmark JSON)"
    scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}
    out = {}
    for b in doc["benchmarks"]:
        if "real_time" not in b or b.get("run_type") == "aggregate":
            continue
        name = b.get("run_name", b["name"]).replace("/manual_time", "").replace("/min_time:0.050", "")
        out[name] = (b["real_time"] * scale.get(b.get("time_unit", "ns"), 1e-3), b.get("of_same_size_stream"))
    return out if out else f"{run['file']}: no benchmark results"


kOver = 1.01  # a same-size fraction above this is marked


def span(xs, fmt):
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else fmt.format(lo) + "-" + fmt.format(hi)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("index")
    ap.add_argument("--md")
    ap.add_argument("--json")
    a = ap.parse_args()
    runs = read_index(a.index)
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    problems, per = [], {}  # (benchmark, variant) -> {"us": [...], "frac": [...]}
    for r in runs:
        res = load(r) if r["rc"] == 0 else f"exit status {r['rc']}"
        if isinstance(res, str):
            problems.append(f"{r['variant']} round {r['round']}: {res}")
            continue
        for name, (us, frac) in res.items():
            e = per.setdefault((name, r["variant"]), {"us": [], "frac": []})
            e["us"].append(us)
            if frac is not None:
                e["frac"].append(frac)
    md = ["µs over the rounds (in brackets the fraction of a same-size read stream), and each variant's mean "
          f"time against `{variants[0]}`'s:", "",
          "| benchmark | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
    summary, over = [], set()
    for name in dict.fromkeys(b for (b, _) in per):
        cells, means = [], []
        for v in variants:
            e = per.get((name, v))
            if not e:
                cells.append("-")
                means.append(None)
                continue
            m = sum(e["us"]) / len(e["us"])
            means.append(m)
            cell = span(e["us"], "{:.1f}")
            if e["frac"]:
                cell += f" ({span(e['frac'], '{:.3f}')})"
                if max(e["frac"]) > kOver:
                    cell += " *"
                    over.add(name)
            base = means[0]
            if len(means) > 1 and base:
                cell += f", {m / base:.3f}x"
            cells.append(cell)
        md.append(f"| {name} | " + " | ".join(cells) + " |")
        summary.append({"benchmark": name, "variants": variants, "mean_us": means,
                        "of_same_size_stream": [per[(name, v)]["frac"] if (name, v) in per else None
                                                for v in variants]})
    md.append("")
    if over:
        md += ["`*`: more than 1% faster than the harness's same-size read stream, which is then no upper limit at "
               "that size (compare against `of_read_stream`, the 1 GiB stream).", ""]
    run_index.finish("kernel_ab_table", md, problems, a.md, a.json, {"runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
