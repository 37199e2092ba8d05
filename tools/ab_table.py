#!/usr/bin/env python3
"""ab_table.py INDEX [--md OUT.md] [--json OUT.json]: the table of an A/B series of
`moebench bench` runs (tools/device_run.sh PARTS=ab). INDEX holds one line per run, tab
separated: configuration, variant, round, results JSON, exit status. Per configuration:
every run's decode tok/s and % of bound for each case, then per case each variant's mean
over its rounds and its ratio to the first variant's, and whether the variants' greedy
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
    """{case name: (tok/s, % of bound or None, token hash, repetitions with other tokens)} of a
    run, or an error string."""
    try:
        doc = json.load(open(run["file"]))
    except (OSError, ValueError) as e:
        return f"{run['file']}: {e}"
    out = {}
    for c in doc.get("cases", []):
        if c.get("status") != "ok":
            continue
        tok = c.get("aggregates", {}).get("decode_tok_s")
        if tok is None:
            continue
        pct = c.get("bound", {}).get("percent")
        out[c["name"]] = (tok, pct, c.get("output_token_hash", ""), c.get("other_tokens_repetitions", []))
    return out if out else f"{run['file']}: no finished case with a decode rate"


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
            for name, (tok, pct, h, others) in cases.items():
                other = ""
                if others:
                    reps = ", ".join(str(x) for x in others)
                    other = f" (other tokens in repetitions {reps})"
                    problems.append(f"{s} / {r['variant']} round {r['round']} / {name}: repetitions {reps} generated "
                                    f"other tokens than the first")
                md.append(f"| {r['variant']} | {r['round']} | {name} | {tok:.1f} | "
                          f"{'' if pct is None else f'{pct:.1f}%'} | `{h}`{other} |")
                e = per.setdefault((r["variant"], name), {"tok": [], "hash": set()})
                e["tok"].append(tok)
                e["hash"].add(h)
        md += ["", f"Means over the rounds, against `{variants[0]}`:", "",
               "| case | " + " | ".join(variants) + " | same tokens |", "|---|" + "---:|" * len(variants) + "---|"]
        for name in dict.fromkeys(c for (_, c) in per):
            means = [sum(per[(v, name)]["tok"]) / len(per[(v, name)]["tok"]) if (v, name) in per else None
                     for v in variants]
            base = means[0]
            cells = []
            for i, m in enumerate(means):
                if m is None:
                    cells.append("-")
                elif i > 0 and base:
                    cells.append(f"{m:.1f} ({m / base:.3f}x)")
                else:
                    cells.append(f"{m:.1f}")
            hashes = set().union(*(per[(v, name)]["hash"] for v in variants if (v, name) in per))
            same = len(hashes) == 1
            if not same:
                problems.append(f"{s} / {name}: the variants' greedy tokens differ ({', '.join(sorted(hashes))})")
            md.append(f"| {name} | " + " | ".join(cells) + f" | {'yes' if same else 'NO'} |")
            summary.append({"set": s, "case": name, "variants": variants, "mean_decode_tok_s": means,
                            "same_tokens": same, "hashes": sorted(hashes)})
        md.append("")
        pmd, psum = profile_table(s, rs, variants, problems)
        md += pmd
        profiles += psum
    run_index.finish("ab_table", md, problems, a.md, a.json, {"runs": runs, "summary": summary, "profiles": profiles})


if __name__ == "__main__":
    main()
