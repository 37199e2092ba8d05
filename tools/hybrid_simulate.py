#!/usr/bin/env python3
"""hybrid_simulate.py RESULTS.json --compute-ms-per-token MS [--case NAME] [--moebench BIN] [--tokens N]:
for every offloaded case of a `moebench run` results file (or the one named), runs
`moebench simulate` with what the case measured — its routing, cache policy and slot
count, expert bytes per load, the copy link's decode rate (decode bytes moved / decode
copy time), and with the host link (expert_exec cpu | hybrid, cpu_moe_layers) the host
kernel's decode rate (decode host bytes / decode host busy time) and the mean fixed
cost of a layer with host work, and for hybrid the split of a miss's rows into
parts (variants/hybrid_split.h split_units_for) by the case's hybrid_split rule (--no-split
/ --split-copies for a run with MOEBENCH_HYBRID_SPLIT=0 / all; --no-split too for a quantised
run with MOEBENCH_SPLIT_QUANT=0) — and prints the predicted decode tok/s beside the
measured one. The device work per token is not in the file: pass the resident decode
step time of the same model and expert format (docs/HYBRID.md). Exits 1 naming the
file or the case when a field it needs is missing.

By default each case is simulated as the engine runs it: its prompt through the cache
first (--prefill-tokens: decode starts with the cache the prefill left), then its
new_tokens - 1 decode steps, replayed for its warm-up runs (untimed) and repetitions
(timed) on one cache, the routing restarting each time as the engine's does (--cold: the
old way, --tokens decode steps from an empty cache). A hybrid case whose results carry both links' joint rates (joint_copy_gbps,
joint_host_gbps, measured at load) is simulated with the joint model: the copies at the
device's host->device rate alone and the joint one beside the host (the split deciding with
the solo copy rate the engine measured, solo_copy_gbps, where recorded); the host at its
solo decode rate — the cpu-mode case's of the same file and format where there is one,
else the host kernel's median at load — and beside each other at the rates the case's decode
reached with both links at once (decode_joint_*; --load-joint, or a file without them: the
load's joint copy rate, and the host's solo rate times the load measurement's share); a case
run with hybrid_split=balance with the same feedback share (--split-balance; --no-joint: each
link at its decode rate, as before)."""
import argparse, json, os, subprocess, sys


def need(obj, key, where):
    if key not in obj:
        sys.exit(f"hybrid_simulate: {where} has no '{key}'")
    return obj[key]


def cpu_mode_host_gbps(r, dtype):
    """The decode host rate of the file's cpu-mode case of this expert format (None if none)."""
    for c in r.get("cases", []):
        k = c.get("settings", {}).get("knobs", {})
        e = c.get("experts", {})
        if c.get("status") == "ok" and k.get("expert_exec") == "cpu" and k.get("expert_dtype") == dtype:
            hb, hns = e.get("decode_host_bytes", 0), e.get("decode_host_busy_ns", 0)
            if hb > 0 and hns > 0:
                return hb / hns
    return None


def matrix_bytes(dtype, rows, cols):
    """Bytes of one expert matrix (rows x cols) in an expert format (engine/quant.h quant_parts; int4 without zero
    points, as the synthetic and bf16-converted stores hold it)."""
    groups = -(-cols // 128)
    if dtype == "bf16":
        return 2 * rows * cols
    if dtype == "int8":
        return rows * cols + 4 * rows
    if dtype == "fp8":
        return rows * cols + 4 * -(-rows // 128) * groups
    if dtype == "int4":
        return rows * cols // 2 + 2 * rows * groups
    sys.exit(f"hybrid_simulate: expert_dtype {dtype}: expected bf16, fp8, int8 or int4")


def simulate_args(r, c, tokens, compute_ms, a_no_split=False, a_split_copies=False, cold=False, no_joint=False,
                  load_joint=False):
    name = c.get("name", "?")
    knobs = need(need(c, "settings", name), "knobs", name)
    e = need(c, "experts", name)
    cfg = need(need(r, "model", "results"), "config", "model")
    slots = e.get("slots", 0)
    if slots <= 0:
        sys.exit(f"hybrid_simulate: case {name} records no slot count (a run from before it was recorded)")
    loads, moved = need(e, "loads", name), need(e, "bytes_moved", name)
    exe, cpu_layers = knobs.get("expert_exec", "gpu"), int(knobs.get("cpu_moe_layers", 0))
    hidden, inter = need(cfg, "hidden_size", "model config"), need(cfg, "intermediate_size", "model config")
    # hybrid splits a miss's rows (parts of 256 rows, 32 for small models; int4 and fp8 only where a part is a
    # multiple of their 128-row scale groups) and copies parts that are no load: the expert size is the format's
    # shape's, not bytes moved per load.
    units = next((inter // rows for rows in (256, 32) if inter >= 2 * rows and inter % rows == 0), 1)
    dtype = knobs.get("expert_dtype", "bf16")
    cuts = units > 1 and (dtype in ("bf16", "int8") or (inter // units) % 128 == 0)
    # The split rule the case ran with: its hybrid_split knob (files from before it: host experts' parts, or what
    # --no-split / --split-copies say; files from before quantised experts split: --no-split).
    rule = knobs.get("hybrid_split", "host")
    split = exe == "hybrid" and cuts and not a_no_split and rule != "off"
    split_copies = a_split_copies or rule == "all"
    if split:
        expert_bytes = 2 * matrix_bytes(dtype, inter, hidden) + matrix_bytes(dtype, hidden, inter)
    elif loads > 0:
        expert_bytes = moved // loads
    else:
        sys.exit(f"hybrid_simulate: case {name} loaded no expert: its expert size is unknown")
    copy_ns, copy_bytes = e.get("decode_load_time_ns", 0), e.get("decode_bytes_moved", 0)
    h2d = copy_bytes / copy_ns if copy_ns > 0 and copy_bytes > 0 else need(need(r, "device", "results"), "h2d_gbps", "device")
    args = ["--routing", knobs.get("routing", "mixtral-locality"),
            "--layers", str(cfg["num_hidden_layers"]), "--experts", str(cfg["num_local_experts"]),
            "--top-k", str(cfg["num_experts_per_tok"]),
            "--seed", str(knobs.get("routing_seed", 1)),
            "--policy", knobs["cache_policy"], "--capacity", str(slots),
            "--expert-bytes", str(expert_bytes), "--h2d-gbps", f"{h2d:.3f}",
            "--prefetch-accuracy", str(knobs.get("prefetch_accuracy", 0.8)),
            "--compute-ms-per-token", str(compute_ms), "--json"]
    if cold:
        args += ["--tokens", str(tokens)]
    else:
        prompt, new = need(c, "prompt_tokens", name), need(c, "new_tokens", name)
        if new < 2:
            sys.exit(f"hybrid_simulate: case {name} decoded {new} token(s): nothing to simulate after its prefill")
        runs, warmup = max(1, int(c.get("repetitions", 1))), max(0, int(c.get("warmup", 0)))
        args += ["--tokens", str(prompt + new - 1), "--prefill-tokens", str(prompt),
                 "--runs", str(runs), "--warmup-runs", str(warmup)]
    if exe != "gpu" or cpu_layers > 0:
        hb, hns = e.get("decode_host_bytes", 0), e.get("decode_host_busy_ns", 0)
        host = hb / hns if hb > 0 and hns > 0 else e.get("host_kernel_gbps", 0)
        jc, jh, median = e.get("joint_copy_gbps", 0), e.get("joint_host_gbps", 0), e.get("host_kernel_median_gbps", 0)
        joint = exe == "hybrid" and jc > 0 and jh > 0 and median > 0 and not no_joint
        if joint:
            solo = cpu_mode_host_gbps(r, knobs.get("expert_dtype")) or median
            h2d = need(need(r, "device", "results"), "h2d_gbps", "device")
            args[args.index("--h2d-gbps") + 1] = f"{h2d:.3f}"
            host = solo
            # Beside each other: what the case's decode reached with both links at once where recorded (its
            # copies that finished beside host work, its host work with copies in flight at both ends), else
            # the load-time measurement (the host's share of it applied to its solo decode rate).
            dcb, dcn = e.get("decode_joint_copy_bytes", 0), e.get("decode_joint_copy_ns", 0)
            dhb, dhn = e.get("decode_joint_host_bytes", 0), e.get("decode_joint_host_ns", 0)
            if dcb > 0 and dcn > 0 and dhb > 0 and dhn > 0 and not load_joint:
                jc_use, jh_use = dcb / dcn, dhb / dhn
            else:
                jc_use, jh_use = jc, jh * solo / median
            args += ["--joint-copy-gbps", f"{min(jc_use, h2d):.3f}", "--joint-host-gbps", f"{min(solo, jh_use):.3f}"]
            # The engine's split decides with the copies' solo rate measured at its load (never under the
            # joint one); the simulator's copies run at the device's h2d.
            solo_copy = e.get("solo_copy_gbps", 0)
            if solo_copy > 0:
                args += ["--model-copy-gbps", f"{max(solo_copy, jc):.3f}"]
        if not host > 0:
            sys.exit(f"hybrid_simulate: case {name} has the host link but no host rate")
        layers = e.get("decode_host_layers", 0)
        overhead_us = e.get("decode_host_overhead_ns", 0) / layers / 1e3 if layers > 0 else 0
        args += ["--expert-exec", exe, "--cpu-moe-layers", str(cpu_layers), "--host-gbps", f"{host:.3f}",
                 "--host-overhead-us", f"{overhead_us:.1f}"]
        if split:
            args += ["--split-units", str(units)] + (["--split-copies"] if split_copies else [])
            if rule == "balance":
                args += ["--split-balance"]
    return args


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--compute-ms-per-token", type=float, required=True)
    ap.add_argument("--case", default="")
    ap.add_argument("--moebench", default="build/bin/moebench")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--no-split", action="store_true",
                    help="the case ran with MOEBENCH_HYBRID_SPLIT=0 (whole experts per link)")
    ap.add_argument("--split-copies", action="store_true",
                    help="the case ran with MOEBENCH_HYBRID_SPLIT=all (copies may give way to parts)")
    ap.add_argument("--json", default="",
                    help="also write every case's measured and simulated tok/s and the simulator's JSON to this file")
    ap.add_argument("--cold", action="store_true",
                    help="decode --tokens steps from an empty cache (no prefill), as before")
    ap.add_argument("--load-joint", action="store_true",
                    help="the joint rates from the load-time measurement even where the case's decode recorded them")
    ap.add_argument("--no-joint", action="store_true",
                    help="each link at its decode rate (the case ran with MOEBENCH_HYBRID_JOINT=0, or as before)")
    a = ap.parse_args()
    try:
        with open(a.results) as f:
            r = json.load(f)
    except (OSError, ValueError) as err:
        sys.exit(f"hybrid_simulate: {a.results}: {err}")
    cases = [c for c in need(r, "cases", a.results)
             if c.get("status") == "ok" and c.get("settings", {}).get("knobs", {}).get("expert_tier") == "pinned"
             and (not a.case or c.get("name") == a.case)]
    if not cases:
        sys.exit(f"hybrid_simulate: {a.results}: no ok pinned-tier case{' named ' + a.case if a.case else ''}")
    rows = []
    print(f"{'case':<40} {'measured tok/s':>15} {'simulated tok/s':>16} {'difference':>11}")
    for c in cases:
        args = simulate_args(r, c, a.tokens, a.compute_ms_per_token, a.no_split, a.split_copies, a.cold, a.no_joint,
                             a.load_joint)
        out = subprocess.run([a.moebench, "simulate"] + args, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"hybrid_simulate: case {c['name']}: moebench simulate {' '.join(args)}: {out.stderr.strip()}")
        simulated = json.loads(out.stdout)
        sim = simulated["results"][0]["tokens_per_s"]
        measured = c["aggregates"]["decode_tok_s"]
        rows.append({"case": c["name"], "measured_tok_s": measured, "simulated_tok_s": sim,
                     "difference": sim / measured - 1, "args": args, "simulate": simulated})
        print(f"{c['name']:<40} {measured:>15.2f} {sim:>16.2f} {100 * (sim / measured - 1):>+10.1f}%")
        print(f"  moebench simulate {' '.join(args)}")
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"results": a.results, "cases": rows}, f, indent=2)
        os.replace(tmp, a.json)


if __name__ == "__main__":
    main()
