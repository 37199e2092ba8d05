#!/usr/bin/env python3
"""scaleout_table.py: the multi-GPU scaling table from `moebench bench` results, with the
simulator's prediction for each measured placement beside it.

Each input is a results JSON of `moebench bench --set tensor_parallel=N` or
`--set expert_parallel=N` (any batch sizes). For every case it prints the layout (one GPU,
tp or ep, and N), the batch, the measured decode throughput (all sequences), the case's bound
and its share of it, the collective time per step (the least and the most of the ranks), the
per-GPU load imbalance (the most expert pairs one GPU ran per step over the mean of the GPUs),
and what `moebench simulate-parallel` predicts for that layout, batch and N with the HBM
bandwidth and the collective time the same case measured (its least rank's all-reduces or
all-to-alls per step, spread over the layers; one GPU's case of the same name is the 1x). The simulator routes a synthetic trace
(`--routing`, uniform by default: the synthetic models' gates spread tokens about evenly); the
measured runs route by the model's gate, so the prediction's imbalance is the trace's.

  python3 tools/scaleout_table.py RESULTS.json ... --moebench build/bin/moebench [--json OUT] [--routing R]

A file that is not a bench results JSON, or a case without the fields used, stops it with one
line naming the file and the field.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def fail(msg):
    print(f"scaleout_table: {msg}", file=sys.stderr)
    sys.exit(1)


def field(d, path, where):
    cur = d
    for key in path.split("."):
        if not isinstance(cur, dict) or key not in cur:
            fail(f"{where}: field '{path}' missing")
        cur = cur[key]
    return cur


def predict(moebench, layout, ranks, batch, hbm_gbps, collective_us, layers, routing, model):
    cmd = [moebench, "simulate-parallel", "--routing", routing, "--ranks", str(ranks), "--hbm-gbps", f"{hbm_gbps:.1f}",
           "--collective-us", f"{collective_us:.3f}", "--tokens-per-step", str(batch),
           "--tokens", str(max(256, 16 * batch)), "--layers", str(layers), "--model", model, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{' '.join(cmd)}: {out.stderr.strip() or 'exit ' + str(out.returncode)}")
    rows = json.loads(out.stdout)["results"]
    want = "tp" if layout != "ep" else "ep"
    placement = "-" if want == "tp" else "round-robin"
    for r in rows:
        if r["layout"] == want and r["placement"] == placement and r["ranks"] == ranks:
            return r
    fail(f"simulate-parallel gave no {want} row for {ranks} ranks")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--moebench", required=True)
    ap.add_argument("--routing", default="uniform", choices=["uniform", "mixtral-locality", "fine-grained-locality"])
    ap.add_argument("--model", default="mixtral-8x7b", help="preset whose bytes the simulator counts")
    ap.add_argument("--json", help="also write the rows here (atomically)")
    a = ap.parse_args()
    rows = []
    for path in a.results:
        try:
            with open(path) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            fail(f"{path}: not a readable JSON file ({e})")
        layers = field(d, "model.config.num_hidden_layers", path)
        device = field(d, "device.name", path)
        for c in field(d, "cases", path):
            where = f"{path}: case {c.get('name', '?')}"
            if c.get("status") != "ok":
                continue
            knobs = field(c, "settings.knobs", where)
            tp, ep, batch = int(knobs.get("tensor_parallel", 1)), int(knobs.get("expert_parallel", 1)), int(knobs["batch_size"])
            layout, n = ("tp", tp) if tp > 1 else ("ep", ep) if ep > 1 else ("one GPU", 1)
            bound = c.get("bound")
            if not bound:  # the single-sequence path of an EP run records no counters: no bound to compare with
                continue
            per_seq = field(c, "aggregates.decode_tok_s", where)
            gpus = c.get("gpus") or []
            coll = [g.get("collective_ns_per_step") or 0 for g in gpus] or [0]
            pairs = [g.get("expert_pairs_per_step") for g in gpus if g.get("expert_pairs_per_step") is not None]
            imbalance = max(pairs) / (sum(pairs) / len(pairs)) if pairs and sum(pairs) > 0 else 1.0
            hbm = field(bound, "bandwidth_gbps.hbm", where)
            coll_us_layer = min(coll) / 1e3 / layers
            pred = predict(a.moebench, layout, n, batch, hbm, coll_us_layer, layers, a.routing, a.model)
            rows.append({
                "file": os.path.basename(path), "device": device, "case": c["name"], "layout": layout, "gpus": n,
                "batch": batch, "tok_s": per_seq * batch, "bound_tok_s": bound["value"], "bound_percent": bound["percent"],
                "collective_us_per_step_min": min(coll) / 1e3, "collective_us_per_step_max": max(coll) / 1e3,
                "load_imbalance": imbalance, "predicted_tok_s": pred["tokens_per_s"],
                "predicted_imbalance": pred["mean_step_imbalance"],
            })
    if not rows:
        fail("no case with a bound in " + ", ".join(a.results))
    # One GPU's case of the same name (the same path, batch and lengths) is the 1x of a row.
    one = {r["case"]: r["tok_s"] for r in rows if r["layout"] == "one GPU"}
    print("| case | layout | GPUs | batch | tok/s (all sequences) | x one GPU | % of bound | collectives / step (us) | "
          "load imbalance | predicted tok/s (imbalance) | measured / predicted |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["layout"] != "one GPU", r["layout"], r["gpus"], r["batch"], r["case"])):
        x = f"{r['tok_s'] / one[r['case']]:.2f}x" if r["case"] in one else "-"
        print(f"| {r['case']} | {r['layout']} | {r['gpus']} | {r['batch']} | {r['tok_s']:.1f} | {x} | {r['bound_percent']:.1f} | "
              f"{r['collective_us_per_step_min']:.0f}-{r['collective_us_per_step_max']:.0f} | {r['load_imbalance']:.3f} | "
              f"{r['predicted_tok_s']:.1f} ({r['predicted_imbalance']:.3f}) | {r['tok_s'] / r['predicted_tok_s']:.2f} |")
    if a.json:
        directory = os.path.dirname(os.path.abspath(a.json))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".scaleout_")
        with os.fdopen(fd, "w") as f:
            json.dump({"routing_of_prediction": a.routing, "rows": rows}, f, indent=1)
        os.replace(tmp, a.json)


if __name__ == "__main__":
    main()
