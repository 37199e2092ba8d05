#!/usr/bin/env python3
"""mixtral_oracle.py: moebench's CUDA logits against HF transformers' MixtralForCausalLM at
Mixtral-8x7B layer shapes, and transformers' generate() speed beside `moebench bench`.
Run on the GPU machine (torch 2.11, transformers 5.17) by tools/device_run.sh (PARTS=mixtral).

  ids        --vocab V --n N --seed S                  print N pseudo-random token ids in [3, V)
  compare    --ckpt DIR --ids-file F --prompt-len P --ours OURS.npy --out CMP.json
             transformers loads the checkpoint `moebench make-model` wrote (bf16, cuda) and
             runs the whole id sequence in one forward; the same weights upcast to fp32
             (TF32 off) give the fp32 reference. Tolerance (derived, not chosen):
               tol = 2 x max_v |hf_bf16 - hf_fp32| over the positions before the first one
                     where bf16 and fp32 route any layer to a different top-2 expert set
             i.e. transformers' own bf16 rounding spread around the exact (fp32) computation
             of the same weights, counted twice: |ours - hf| <= |ours - fp32| + |hf - fp32|,
             so a bf16 implementation no less accurate than transformers' stays within it.
             Positions from the first routing divergence on are left out of the spread: a
             router score within bf16 noise of a tie sends fp32 to another expert (and, via
             the KV cache, changes every later position) -- a discrete jump, not rounding.
             If bf16 and fp32 part at position 0, tol falls back to 2 bf16 ulps of the
             largest |logit|. Argmax must agree wherever transformers' (bf16) top-2 margin
             exceeds tol. The JSON also gives |ours - fp32| so the premise is visible.
  hf-generate --layers L --prompt-tokens P --new-tokens N --out HF.json
             MixtralForCausalLM (Mixtral-8x7B shape, L layers, random bf16 weights, on cuda)
             .generate greedy, batch 1, after one full-length warm-up: decode tok/s =
             (N - 1) / (t(N) - t(1)) on medians, and on the fastest runs (transformers' best).
  side-by-side --hf HF.json --bench BENCH.json --out SBS.json   ratio of decode tok/s
             (moebench's median over transformers' median, and over transformers' best).

The comparison itself is plain Python (array module) so it also runs where numpy is absent.
"""
import argparse
import array
import ast
import json
import math
import os
import random
import re
import struct
import sys
import time


def read_npy_f32(path):
    """A (rows, cols) little-endian float32 .npy file -> (rows, cols, array('f'))."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        sys.exit(f"error: {path}: not a .npy file")
    major = data[6]
    if major == 1:
        hlen = struct.unpack("<H", data[8:10])[0]
        off = 10
    else:
        hlen = struct.unpack("<I", data[8:12])[0]
        off = 12
    header = ast.literal_eval(data[off:off + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"] or len(header["shape"]) != 2:
        sys.exit(f"error: {path}: expected a C-order float32 2-d array, found {header}")
    rows, cols = header["shape"]
    a = array.array("f")
    a.frombytes(data[off + hlen:off + hlen + 4 * rows * cols])
    if sys.byteorder != "little":
        a.byteswap()
    if len(a) != rows * cols:
        sys.exit(f"error: {path}: truncated ({len(a)} of {rows * cols} floats)")
    return rows, cols, a


def row(a, cols, i):
    return a[i * cols:(i + 1) * cols]


def max_abs_diff(x, y):
    return max(abs(p - q) for p, q in zip(x, y))


def top2(x):
    """(argmax (lowest id on ties), top-2 margin)."""
    best, second, arg = -math.inf, -math.inf, 0
    for i, v in enumerate(x):
        if v > best:
            second, best, arg = best, v, i
        elif v > second:
            second = v
    return arg, best - second


def bf16_ulp(x):
    """Spacing of bf16 numbers at |x| (8 significant bits)."""
    return 2.0 ** (math.floor(math.log2(abs(x))) - 7) if x else 2.0 ** -133


def compare_rows(ours, hf16, hf32, cols, positions, prompt_len, first_divergence=None):
    """Per position: diffs, margins, argmax. The tolerance is 2 x the hf16 vs hf32 spread over
    the positions before first_divergence (None: no divergence), else 2 bf16 ulps."""
    per = []
    for p in positions:
        o, h, r = row(ours, cols, p), row(hf16, cols, p), row(hf32, cols, p)
        ao, _ = top2(o)
        ah, mh = top2(h)
        ar, _ = top2(r)
        per.append({
            "position": p,
            "phase": "prefill" if p < prompt_len else "decode",
            "max_abs_ours_vs_hf_bf16": max_abs_diff(o, h),
            "max_abs_hf_bf16_vs_fp32": max_abs_diff(h, r),
            "max_abs_ours_vs_fp32": max_abs_diff(o, r),
            "max_abs_logit_hf_bf16": max(abs(v) for v in h),
            "hf_bf16_top2_margin": mh,
            "argmax_ours": ao, "argmax_hf_bf16": ah, "argmax_fp32": ar,
        })
    clean = [e for e in per if first_divergence is None or e["position"] < first_divergence]
    if clean:
        spread = max(e["max_abs_hf_bf16_vs_fp32"] for e in clean)
        tol = 2 * spread
    else:
        spread = None
        tol = 2 * bf16_ulp(max(e["max_abs_logit_hf_bf16"] for e in per))
    clean_pos = {e["position"] for e in clean}
    for e in per:
        e["in_spread"] = e["position"] in clean_pos
    for e in per:
        e["within_tol"] = e["max_abs_ours_vs_hf_bf16"] <= tol
        e["argmax_checked"] = e["hf_bf16_top2_margin"] > tol
        e["argmax_agrees"] = e["argmax_ours"] == e["argmax_hf_bf16"]
    return per, spread, tol


def summarise(per, spread, tol):
    def sel(phase):
        return [e for e in per if e["phase"] == phase]
    top = max(e["max_abs_logit_hf_bf16"] for e in per)
    out = {"tolerance": tol, "hf_bf16_vs_fp32_spread_routing_consistent": spread,
           "spread_positions": sum(e["in_spread"] for e in per),
           "hf_bf16_vs_fp32_max_spread_all_positions": max(e["max_abs_hf_bf16_vs_fp32"] for e in per),
           "max_abs_logit": top, "bf16_ulp_at_max_logit": bf16_ulp(top),
           "tolerance_in_bf16_ulps_at_max_logit": tol / bf16_ulp(top)}
    for phase in ("decode", "prefill"):
        es = sel(phase)
        if not es:
            continue
        checked = [e for e in es if e["argmax_checked"]]
        out[phase] = {
            "positions": len(es),
            "max_abs_ours_vs_hf_bf16": max(e["max_abs_ours_vs_hf_bf16"] for e in es),
            "max_abs_ours_vs_fp32": max(e["max_abs_ours_vs_fp32"] for e in es),
            "max_abs_hf_bf16_vs_fp32": max(e["max_abs_hf_bf16_vs_fp32"] for e in es),
            "all_within_tol": all(e["within_tol"] for e in es),
            "argmax_checked": len(checked),
            "argmax_agree_where_checked": sum(e["argmax_agrees"] for e in checked),
            "argmax_agree_all": sum(e["argmax_agrees"] for e in es),
        }
    d = out.get("decode", {})
    p = out.get("prefill", {"all_within_tol": True, "argmax_checked": 0, "argmax_agree_where_checked": 0})
    out["pass"] = bool(d) and d["all_within_tol"] and p["all_within_tol"] and \
        d["argmax_agree_where_checked"] == d["argmax_checked"] and \
        p["argmax_agree_where_checked"] == p["argmax_checked"]
    return out


def device_record():
    import torch
    p = torch.cuda.get_device_properties(0)
    return {"name": torch.cuda.get_device_name(0), "memory_bytes": p.total_memory,
            "sm_count": p.multi_processor_count, "torch": torch.__version__}


def cmd_ids(a):
    rng = random.Random(a.seed)
    print(",".join(str(rng.randrange(3, a.vocab)) for _ in range(a.n)))


def cmd_compare(a):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    with open(a.ids_file) as f:
        ids = [int(t) for t in f.read().replace(",", " ").split()]
    rows, cols, ours = read_npy_f32(a.ours)
    if rows != len(ids):
        sys.exit(f"error: {a.ours} has {rows} rows but {a.ids_file} has {len(ids)} ids")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t0 = time.time()
    # AutoModel: the checkpoint's own family (tools/families_oracle.py compares Qwen3-MoE,
    # OLMoE and Qwen2-MoE through this function too).
    model = AutoModelForCausalLM.from_pretrained(a.ckpt, dtype=torch.bfloat16, device_map="cuda",
                                                 attn_implementation=a.attn).eval()
    load_s = time.time() - t0
    if model.config.vocab_size != cols:
        sys.exit(f"error: vocab {model.config.vocab_size} in {a.ckpt} but {cols} columns in {a.ours}")
    x = torch.tensor([ids], device="cuda")
    k = model.config.num_experts_per_tok
    n_exp = getattr(model.config, "num_local_experts", None) or model.config.num_experts
    # The router's scores of every layer, caught with forward hooks on the gate modules
    # (model.layers.L.mlp.gate in transformers 5, block_sparse_moe.gate before).
    gates = {}
    for name, mod in model.named_modules():
        mt = re.search(r"layers\.(\d+)\.(mlp|block_sparse_moe)\.gate$", name)
        if mt:
            gates[int(mt.group(1))] = mod
    caught = {}

    def hook_for(layer):
        def hook(mod, inp, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            caught[layer] = t.detach().float().reshape(-1, n_exp)
        return hook
    for layer, mod in gates.items():
        mod.register_forward_hook(hook_for(layer))

    def run():
        caught.clear()
        logits = model(x).logits[0].float().cpu()
        try:
            sets = [[sorted(r) for r in torch.topk(caught[l], k, dim=-1).indices.tolist()] for l in sorted(caught)]
        except Exception as ex:  # routing unknown: the tolerance falls back to the ulp rule
            print(f"warning: router scores not readable ({ex}); tolerance from bf16 ulps", file=sys.stderr)
            sets = None
        return logits, sets
    if len(gates) != model.config.num_hidden_layers:
        sys.exit(f"error: found {len(gates)} router gates for {model.config.num_hidden_layers} layers")
    with torch.no_grad():
        hf16, route16 = run()
        model = model.float()
        hf32, route32 = run()
    if route16 is None or route32 is None or len(route16) != len(route32):
        layers_differ = [["unknown"] for _ in ids]
    else:
        layers_differ = [[l for l in range(len(route16)) if route16[l][p] != route32[l][p]] for p in range(len(ids))]
    first_div = next((p for p, d in enumerate(layers_differ) if d), None)
    del model
    torch.cuda.empty_cache()
    h16 = array.array("f", hf16.flatten().tolist())
    h32 = array.array("f", hf32.flatten().tolist())
    # Positions: every prompt row (prefill path) and the decode rows after it.
    positions = list(range(rows))
    per, spread, tol = compare_rows(ours, h16, h32, cols, positions, a.prompt_len, first_div)
    for e in per:
        e["layers_routed_differently_bf16_vs_fp32"] = layers_differ[e["position"]]
    summary = summarise(per, spread, tol)
    summary["first_routing_divergence_bf16_vs_fp32"] = first_div
    cfg = json.load(open(os.path.join(a.ckpt, "config.json")))
    out = {
        "what": "moebench CUDA logits vs transformers MixtralForCausalLM, teacher-forced, same safetensors",
        "device": device_record(),
        "transformers": transformers.__version__,
        "reference": f"MixtralForCausalLM.from_pretrained(dtype=bfloat16, attn_implementation={a.attn}) on cuda, "
                     "one forward over all ids; fp32 reference: the same model .float(), TF32 off",
        "ours": f"moebench logits --backend cuda --prompt-len {a.prompt_len} (prefill rows 0..{a.prompt_len - 1}, "
                f"then one decode step per id)",
        "model": {"checkpoint": a.ckpt, "note": a.model_note, "config": cfg},
        "hf_load_s": load_s,
        "ids": ids,
        "prompt_len": a.prompt_len,
        "decode_steps": rows - a.prompt_len,
        "tolerance_rule": "tol = 2 x max_v |hf_bf16 - hf_fp32| over the positions before the first where bf16 "
                          "and fp32 route any layer to a different top-2 expert set (transformers' own bf16 rounding "
                          "spread on these weights; |ours - hf| <= |ours - fp32| + |hf - fp32|; a routing flip is a "
                          "discrete jump that also reaches later positions through the KV cache, not rounding); "
                          "2 bf16 ulps of the largest |logit| if they part at position 0. Argmax must agree where "
                          "hf_bf16's top-2 margin > tol",
        "summary": summary,
        "positions": per,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    s = summary
    print(f"tolerance {tol:.5f} (hf bf16 vs fp32 spread {spread} over {summary['spread_positions']} positions "
          f"before the first routing divergence at {first_div}; {summary['tolerance_in_bf16_ulps_at_max_logit']:.2f} "
          f"bf16 ulps at max|logit| {summary['max_abs_logit']:.3f})")
    for e in per:
        print(f"  pos {e['position']:3d} {e['phase']:7s} |ours-hf16| {e['max_abs_ours_vs_hf_bf16']:.5f} "
              f"|ours-fp32| {e['max_abs_ours_vs_fp32']:.5f} |hf16-fp32| {e['max_abs_hf_bf16_vs_fp32']:.5f} "
              f"max|logit| {e['max_abs_logit_hf_bf16']:.3f} margin {e['hf_bf16_top2_margin']:.5f} "
              f"argmax {e['argmax_ours']}/{e['argmax_hf_bf16']}{'' if e['argmax_agrees'] else ' DIFF'}"
              f"{'' if e['within_tol'] else ' OVER TOL'}"
              f"{' routing(bf16 vs fp32) differs in layers ' + str(e['layers_routed_differently_bf16_vs_fp32']) if e['layers_routed_differently_bf16_vs_fp32'] else ''}")
    print("summary:", json.dumps(s))
    return 0 if s["pass"] else 1


def mixtral_config(layers):
    from transformers import MixtralConfig
    return MixtralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, num_local_experts=8,
                         num_experts_per_tok=2, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, router_jitter_noise=0.0, sliding_window=None,
                         bos_token_id=1, eos_token_id=2)


def cmd_hf_generate(a):
    import torch
    import transformers
    from transformers import MixtralForCausalLM
    torch.manual_seed(a.seed)
    cfg = mixtral_config(a.layers)
    t0 = time.time()
    with torch.device("cuda"):
        model = MixtralForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.bfloat16}:
        sys.exit(f"error: expected bf16 parameters, found {dtypes}")
    torch.cuda.synchronize()
    init_s = time.time() - t0
    g = torch.Generator().manual_seed(a.seed)
    prompt = torch.randint(3, cfg.vocab_size, (1, a.prompt_tokens), generator=g).to("cuda")

    def timed(n):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                                 pad_token_id=0, attention_mask=torch.ones_like(prompt))
        torch.cuda.synchronize()
        assert out.shape[1] == a.prompt_tokens + n, out.shape
        return time.perf_counter() - t
    timed(a.new_tokens)  # warm-up at full length
    t1 = [timed(1) for _ in range(a.repetitions)]
    tn = [timed(a.new_tokens) for _ in range(a.repetitions)]
    med = lambda v: sorted(v)[len(v) // 2]
    decode_tok_s = (a.new_tokens - 1) / (med(tn) - med(t1))
    best_decode_tok_s = (a.new_tokens - 1) / (min(tn) - min(t1))
    out = {
        "what": "transformers MixtralForCausalLM.generate, greedy, batch 1, random bf16 weights on cuda",
        "device": device_record(),
        "transformers": transformers.__version__,
        "attn_implementation": model.config._attn_implementation,
        "layers": a.layers, "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens,
        "repetitions": a.repetitions, "init_s": init_s,
        "generate_1_s": t1, "generate_n_s": tn,
        "decode_tok_s": decode_tok_s,
        "best_decode_tok_s": best_decode_tok_s,
        "end_to_end_tok_s": a.new_tokens / med(tn),
        "ms_per_decode_token": 1000 / decode_tok_s,
        "decode_rule": "(new_tokens - 1) / (median t(generate new_tokens) - median t(generate 1)); best_: the "
                       "same on the fastest runs; samples in run order, after one full-length warm-up",
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k not in ("generate_1_s", "generate_n_s")}))
    return 0


def cmd_side_by_side(a):
    hf = json.load(open(a.hf))
    bench = json.load(open(a.bench))
    # --case NAME picks one of bench's cases (e.g. the batched path at batch 1,
    # "batch1_p50_n128", or the single-sequence path "b1_..."); default: the first.
    names = [c["name"] for c in bench["cases"]]
    if a.case and a.case not in names:
        sys.exit(f"side-by-side: {a.bench} has no case {a.case!r} (it has {', '.join(names)})")
    case = next(c for c in bench["cases"] if not a.case or c["name"] == a.case)
    others = {c["name"]: c["aggregates"]["decode_tok_s"] for c in bench["cases"] if c["name"] != case["name"]}
    ours = case["aggregates"]["decode_tok_s"]
    ratio = ours / hf["decode_tok_s"]
    ratio_best = ours / hf["best_decode_tok_s"]
    out = {
        "what": "moebench bench vs transformers generate, same device call, Mixtral-8x7B shape, bf16, batch 1",
        "device": bench["device"],
        "device_torch": hf["device"],
        "shape": {"layers": hf["layers"], "prompt_tokens": hf["prompt_tokens"], "new_tokens": hf["new_tokens"]},
        "moebench": {"decode_tok_s": ours, "case": case["name"], "status": case["status"],
                     "aggregates": case["aggregates"], "bound": case.get("bound"), "model": bench.get("model"),
                     "commit": bench.get("run", {}).get("commit")},
        "moebench_other_cases_decode_tok_s": others,
        "transformers": hf,
        "ratio_decode_tok_s": ratio,
        "ratio_vs_transformers_best_run": ratio_best,
        "target_ratio": 4.0,
        "meets_target": ratio >= 4.0,
        "meets_target_vs_transformers_best_run": ratio_best >= 4.0,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"moebench {ours:.1f} tok/s, transformers {hf['decode_tok_s']:.1f} tok/s (median; best run "
          f"{hf['best_decode_tok_s']:.1f}): {ratio:.2f}x ({ratio_best:.2f}x vs its best run; target 4x) "
          f"on {bench['device'].get('name')}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("ids")
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(fn=cmd_ids)
    p = sp.add_parser("compare")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--ids-file", required=True)
    p.add_argument("--prompt-len", type=int, required=True)
    p.add_argument("--ours", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--attn", default="eager", choices=["eager", "sdpa"])
    p.add_argument("--model-note", default="")
    p.set_defaults(fn=cmd_compare)
    p = sp.add_parser("hf-generate")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=50)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_hf_generate)
    p = sp.add_parser("side-by-side")
    p.add_argument("--hf", required=True)
    p.add_argument("--bench", required=True)
    p.add_argument("--case", default="", help="bench case to hold against transformers (default: the first)")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_side_by_side)
    a = ap.parse_args()
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
