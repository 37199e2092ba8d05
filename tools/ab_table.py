#!/usr/bin/env python3
"""ab_table.py INDEX [--md OUT.md] [--json OUT.json]: the table of an A/B series of
`moebench bench` runs (tools/device_run.sh PARTS=ab). INDEX holds one line per run, tab
separated: configuration, variant, round, results JSON, exit status. Per configuration:
every run's decode tok/s and % of bound for each case, then per case each variant's mean
over its rounds and its ratio to the first variant's, and whether the variants' greedy
tokens agree (each case's output token hash). Exits 1 when a run failed or left no
results, or when the variants of one configuration disagree on a case's tokens (naming
them); a malformed INDEX line is a one-line error naming the file and line."""
import argparse
import json

import run_index


def read_index(path):
    runs = run_index.read_index(path, "ab_table", ["configuration", "variant", "round", "results JSON", "exit status"],
                                {"round", "exit status"})
    return [{"set": r["configuration"], "variant": r["variant"], "round": r["round"], "file": r["results JSON"],
             "rc": r["exit status"]} for r in runs]


def load_cases(run):
    """{case name: (tok/s, % of bound or None, token hash)} of a run, or an error string."""
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
        out[c["name"]] = (tok, pct, c.get("output_token_hash", ""))
    return out if out else f"{run['file']}: no finished case with a decode rate"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("index")
    ap.add_argument("--md")
    ap.add_argument("--json")
    a = ap.parse_args()
    runs = read_index(a.index)
    problems, md, summary = [], [], []
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
            for name, (tok, pct, h) in cases.items():
                md.append(f"| {r['variant']} | {r['round']} | {name} | {tok:.1f} | "
                          f"{'' if pct is None else f'{pct:.1f}%'} | `{h}` |")
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
    run_index.finish("ab_table", md, problems, a.md, a.json, {"runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
