#!/usr/bin/env python3
"""ab_table.py INDEX [--md OUT.md] [--json OUT.json]: the table of an A/B series of
`moebench bench` runs (tools/device_run.sh PARTS=ab). INDEX holds one line per run, tab
separated: configuration, variant, round, results JSON, exit status. Per configuration:
every run's decode tok/s and % of bound for each case, then per case each variant's mean
over its rounds and its ratio to the first variant's; where the runs report a time to first
token (warm, and cold, the model's load included, where the case measured one: the aggregates'
ttft_warm_ns, ttft_cold_ns),
the same means of it, in ms, so that a prefill change reads off one table (a case with a
time to first token and no decode rate, `--new-tokens 1`, counts too); and whether the variants' greedy
tokens agree (each case's output token hash), and whether every repetition of a run gave its
first repetition's tokens (each case's other_tokens_repetitions). Where a run has a kernel profile beside its
results (NAME.kprof.json for NAME.json: `moebench bench --kernel-profile`, AB_PROFILE=1), per
case each variant's mean exposed time per decode step of the kernels that add the most (what
each launch adds to the step), with the span and the idle gaps. Exits 1 when a run failed or left no
results, when the variants of one configuration disagree on a case's tokens, or when a run's
repetitions disagree (naming them); a malformed INDEX line is a one-line error naming the file and line."""
import argparse
import json

import run_index


def read_index(path):
    runs = run_index.read_index(path, "ab_table", ["configuration", "variant", "round", "results JSON", "exit status"],
                                {"round", "exit status"})
    return [{"set": r["configuration"], "variant": r["variant"], "round": r["round"], "file": r["results JSON"],
             "rc": r["exit status"]} for r in runs]


def load_cases(run):
    """{case name: (tok/s or None, % of bound or None, token hash, repetitions with other tokens,
    {"warm": ms or None, "cold": ms or None})} of a run, or an error string."""
    try:
        doc = json.load(open(run["file"]))
    except (OSError, ValueError) as e:
        return f"{run['file']}: {e}"
    out = {}
    for c in doc.get("cases", []):
        if c.get("status") != "ok":
            continue
        agg = c.get("aggregates", {})
        tok = agg.get("decode_tok_s")
        # 0 (or null) where the case did not measure one: a cold start is measured only once a model
        ttft = {k: (agg[f"ttft_{k}_ns"] / 1e6 if agg.get(f"ttft_{k}_ns") else None) for k in ("warm", "cold")}
        if tok is None and ttft["warm"] is None:
            continue
        pct = (c.get("bound") or {}).get("percent")
        out[c["name"]] = (tok, pct, c.get("output_token_hash", ""), c.get("other_tokens_repetitions", []), ttft)
    return out if out else f"{run['file']}: no finished case with a decode rate or a time to first token"


def mean_cells(values, fmt):
    """Markdown cells of per-variant means (None: "-"), each after the first with its ratio to the first."""
    cells = []
    for i, m in enumerate(values):
        if m is None:
            cells.append("-")
        elif i > 0 and values[0]:
            cells.append(f"{m:{fmt}} ({m / values[0]:.3f}x)")
        else:
            cells.append(f"{m:{fmt}}")
    return cells


def mean_of(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def load_profile(run):
    """{case name: {kernel: exposed us, "(span)": us, "(idle)": us}} of the run's kernel profile
    (NAME.kprof.json beside NAME.json), {} without one, or an error string."""
    path = run["file"][:-len(".json")] + ".kprof.json" if run["file"].endswith(".json") else None
    try:
        doc = json.load(open(path)) if path else None
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        return f"{path}: {e}"
    out = {}
    for case, t in (doc or {}).items():
        if not isinstance(t, dict) or "kernels" not in t:
            continue
        row = {k["kernel"]: k.get("exposed_ns_per_step", 0) / 1e3 for k in t["kernels"]}
        row["(span)"] = t.get("span_ns_per_step", 0) / 1e3
        row["(idle)"] = t.get("idle_ns_per_step", 0) / 1e3
        out[case] = row
    return out


def profile_table(s, rs, variants, problems, top=10):
    """Markdown lines and summary entries: per case, each variant's mean exposed us per step."""
    md, summary = [], []
    per = {}  # (variant, case) -> [row]
    for r in rs:
        if r["rc"] != 0:
            continue
        prof = load_profile(r)
        if isinstance(prof, str):
            problems.append(f"{s} / {r['variant']} round {r['round']}: {prof}")
            continue
        for case, row in prof.items():
            per.setdefault((r["variant"], case), []).append(row)
    for case in dict.fromkeys(c for (_, c) in per):
        means = {}
        for v in variants:
            rows = per.get((v, case), [])
            keys = dict.fromkeys(k for row in rows for k in row)
            means[v] = {k: sum(row.get(k, 0) for row in rows) / len(rows) for k in keys} if rows else None
        # Each variant's top kernels, the first variant's first: a kernel that only another
        # variant launches (one launch in place of two) gets its row too.
        def top_of(m):
            return [k for k in sorted(m, key=lambda k: -m[k]) if not k.startswith("(")][:top]
        kernels = list(dict.fromkeys(k for m in means.values() if m for k in top_of(m)))
        md += [f"Exposed time per decode step, {case} (kernel profile, us; mean over the rounds):", "",
               "| kernel | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
        for k in kernels + ["(span)", "(idle)"]:
            md.append(f"| {k} | " + " | ".join("-" if means[v] is None else f"{means[v].get(k, 0):.1f}"
                                              for v in variants) + " |")
        md.append("")
        summary.append({"set": s, "case": case, "variants": variants,
                        "exposed_us_per_step": {v: means[v] for v in variants}})
    return md, summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("index")
    ap.add_argument("--md")
    ap.add_argument("--json")
    a = ap.parse_args()
    runs = read_index(a.index)
    problems, md, summary, profiles = [], [], [], []
    sets = list(dict.fromkeys(r["set"] for r in runs))
    for s in sets:
        rs = [r for r in runs if r["set"] == s]
        variants = list(dict.fromkeys(r["variant"] for r in rs))
        md += [f"## {s if s != '-' else 'no --set'}", "", "| variant | round | case | decode tok/s | % of bound | tokens |", "|---|---:|---|---:|---:|---|"]
        per = {}  # (variant, case) -> [tok/s], hashes
        for r in rs:
            cases = load_cases(r) if r["rc"] == 0 else f"exit status {r['rc']}"
            if isinstance(cases, str):
                problems.append(f"{s} / {r['variant']} round {r['round']}: {cases}")
                md.append(f"| {r['variant']} | {r['round']} | (failed: {cases}) | | | |")
                continue
            for name, (tok, pct, h, others, ttft) in cases.items():
                other = ""
                if others:
                    reps = ", ".join(str(x) for x in others)
                    other = f" (other tokens in repetitions {reps})"
                    problems.append(f"{s} / {r['variant']} round {r['round']} / {name}: repetitions {reps} generated "
                                    f"other tokens than the first")
                md.append(f"| {r['variant']} | {r['round']} | {name} | {'-' if tok is None else f'{tok:.1f}'} | "
                          f"{'' if pct is None else f'{pct:.1f}%'} | `{h}`{other} |")
                e = per.setdefault((r["variant"], name), {"tok": [], "hash": set(), "warm": [], "cold": []})
                e["tok"].append(tok)
                e["hash"].add(h)
                e["warm"].append(ttft["warm"])
                e["cold"].append(ttft["cold"])
        md += ["", f"Means over the rounds, against `{variants[0]}`:", "",
               "| case | " + " | ".join(variants) + " | same tokens |", "|---|" + "---:|" * len(variants) + "---|"]
        names = list(dict.fromkeys(c for (_, c) in per))
        ttfts = {}  # case -> {"warm": [mean per variant], "cold": [...]}
        for name in names:
            means = [mean_of(per[(v, name)]["tok"]) if (v, name) in per else None for v in variants]
            cells = mean_cells(means, ".1f")
            ttfts[name] = {k: [mean_of(per[(v, name)][k]) if (v, name) in per else None for v in variants]
                           for k in ("warm", "cold")}
            hashes = set().union(*(per[(v, name)]["hash"] for v in variants if (v, name) in per))
            same = len(hashes) == 1
            if not same:
                problems.append(f"{s} / {name}: the variants' greedy tokens differ ({', '.join(sorted(hashes))})")
            md.append(f"| {name} | " + " | ".join(cells) + f" | {'yes' if same else 'NO'} |")
            summary.append({"set": s, "case": name, "variants": variants, "mean_decode_tok_s": means,
                            "mean_ttft_warm_ms": ttfts[name]["warm"], "mean_ttft_cold_ms": ttfts[name]["cold"],
                            "same_tokens": same, "hashes": sorted(hashes)})
        md.append("")
        for kind, what in (("warm", "warm (the model already loaded)"), ("cold", "cold (the model's load included)")):
            rows = [n for n in names if any(m is not None for m in ttfts[n][kind])]
            if not rows:
                continue
            md += [f"Time to first token, {what}, ms: means over the rounds, against `{variants[0]}`:", "",
                   "| case | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
            md += [f"| {n} | " + " | ".join(mean_cells(ttfts[n][kind], ".2f")) + " |" for n in rows]
            md.append("")
        pmd, psum = profile_table(s, rs, variants, problems)
        md += pmd
        profiles += psum
    run_index.finish("ab_table", md, problems, a.md, a.json, {"runs": runs, "summary": summary, "profiles": profiles})


if __name__ == "__main__":
    main()
