#!/usr/bin/env python3
"""families_oracle.py: moebench against HF transformers for the MoE families beyond Mixtral
(Qwen3MoeForCausalLM, OlmoeForCausalLM, Qwen2MoeForCausalLM). Run on the GPU machine
(torch, transformers 5.17; no network: token ids are fed directly, no tokenizer).

  all --bin DIR --out RESULT.json [--families qwen3_moe,olmoe,qwen2_moe] [--no-cuda] [--work DIR] [--keep DIR]
      for each family: `make`, `ref`, then moebench (DIR/moebench) `logits --backend cpu` on
      the saved checkpoint against the fp32 reference (tolerance 1e-4, greedy tokens
      identical), and unless --no-cuda `logits --backend cuda` against the fp32 reference
      on the same weights rounded to bf16 (the weights the CUDA engine holds) within a
      derived tolerance: 2 x transformers' own bf16-vs-fp32 spread on these weights before
      its bf16 and fp32 runs route differently (measured by mixtral_oracle.py compare,
      whose bf16 comparison is kept as information), with our router's choices set to the
      reference's (--routing trace:FILE; our own routing's run reported beside). One JSON.
  make --family F --out DIR [--seed S]
      a tiny random model of family F built by transformers (fp32, eager attention):
      3 layers, hidden 64, 32 experts of width 48 with top-8, GQA 4/2, random norm
      weights (1 + 0.1 N(0,1)) and biases (0.1 N(0,1)) so that every family tensor
      matters; saved with save_pretrained (safetensors). Should transformers save the
      experts fused (experts.gate_up_proj / experts.down_proj), they are rewritten in the
      per-expert layout of the published checkpoints (noted in DIR/oracle_note.txt).
  ref --ckpt DIR --prompt-len P --new-tokens N --out-dir DIR2
      transformers in fp32 on the CPU: N greedy tokens by full recomputation from the
      prompt (no cache, no logits processors, never stopping at EOS); DIR2/ids.txt = prompt
      + greedy tokens, DIR2/ref.npy = the logits of every position of ids.txt in one
      forward, DIR2/ref.json = the greedy tokens; DIR2/ref_bf16w.npy and routing_bf16w.txt =
      the logits and the experts chosen at every position and layer of the same forward
      with every parameter rounded to bf16 (the CUDA check's reference), and those choices
      as a moebench routing trace (routing_bf16w_trace.json).
  check --ref-dir DIR2 --ours OURS.npy --prompt-len P --tol T --out CMP.json
      max |ours - ref| over every position and token (<= T) and greedy identity: our
      argmax at every position from P-1 on equals transformers' next greedy token (with
      teacher forcing on transformers' tokens, so a greedy run of ours yields the same
      sequence exactly when all of them agree).

The CPU check is exact arithmetic on both sides (fp32 from the same weights): 1e-4.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mixtral_oracle import read_npy_f32, row, top2  # noqa: E402

FAMILIES = ["qwen3_moe", "olmoe", "qwen2_moe"]
PROMPT = [1, 17, 254, 99, 3, 411, 78, 78, 200, 5, 333, 64]
SHAPE = dict(vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             num_experts_per_tok=8, max_position_embeddings=256, rms_norm_eps=1e-6, initializer_range=0.2,
             bos_token_id=1, eos_token_id=2, attn_implementation="eager")
EXPERTS, EXPERT_WIDTH = 32, 48  # 2 x 48 != hidden 64, so a fused layout's orientation is unambiguous


def family_model(family):
    """(model class, config) of a tiny random model of the family."""
    import transformers as tf
    if family == "qwen3_moe":
        # head_dim 32 beside hidden 64 / 4 heads = 16: Qwen3's decoupled head size.
        cfg = tf.Qwen3MoeConfig(**SHAPE, head_dim=32, num_experts=EXPERTS, moe_intermediate_size=EXPERT_WIDTH,
                                intermediate_size=128, norm_topk_prob=True, decoder_sparse_step=1,
                                mlp_only_layers=[], rope_theta=1e6, tie_word_embeddings=False,
                                use_sliding_window=False, attention_bias=False)
        return tf.Qwen3MoeForCausalLM, cfg
    if family == "olmoe":
        cfg = tf.OlmoeConfig(**SHAPE, num_experts=EXPERTS, intermediate_size=EXPERT_WIDTH, norm_topk_prob=False,
                             rope_theta=1e4, clip_qkv=None, tie_word_embeddings=False, attention_bias=False)
        return tf.OlmoeForCausalLM, cfg
    if family == "qwen2_moe":
        # Tied embeddings here, so that path is checked too; 32 experts of width 48 + a
        # shared expert of width 96 behind its sigmoid gate, top-8 not renormalised.
        cfg = tf.Qwen2MoeConfig(**SHAPE, num_experts=EXPERTS, moe_intermediate_size=EXPERT_WIDTH,
                                shared_expert_intermediate_size=96, intermediate_size=128, norm_topk_prob=False,
                                decoder_sparse_step=1, mlp_only_layers=[], rope_theta=1e6,
                                tie_word_embeddings=True, use_sliding_window=False)
        return tf.Qwen2MoeForCausalLM, cfg
    sys.exit(f"error: family {family!r} is not one of {', '.join(FAMILIES)}")


def unfuse_experts(path, hidden, inter):
    """Rewrites fused expert tensors (E, 2I, H) / (E, H, I) (or their transposes) of a saved
    model.safetensors into per-expert gate_proj / up_proj / down_proj. Returns a note or ''."""
    import torch
    from safetensors.torch import load_file, save_file
    sd = load_file(path)
    fused = [k for k in sd if k.endswith(".experts.gate_up_proj") or k.endswith(".experts.down_proj")]
    if not fused:
        return ""
    out = {k: v for k, v in sd.items() if k not in fused}
    for k in fused:
        base, what = k.rsplit(".", 1)
        t = sd[k]
        for e in range(t.shape[0]):
            m = t[e]
            if what == "gate_up_proj":
                if m.shape == (hidden, 2 * inter):
                    m = m.t()
                if m.shape != (2 * inter, hidden):
                    sys.exit(f"error: {k} has shape {tuple(t.shape)}, expected (E, {2 * inter}, {hidden}) or transposed")
                out[f"{base}.{e}.gate_proj.weight"] = m[:inter].contiguous()
                out[f"{base}.{e}.up_proj.weight"] = m[inter:].contiguous()
            else:
                if m.shape == (inter, hidden):
                    m = m.t()
                if m.shape != (hidden, inter):
                    sys.exit(f"error: {k} has shape {tuple(t.shape)}, expected (E, {hidden}, {inter}) or transposed")
                out[f"{base}.{e}.down_proj.weight"] = m.contiguous()
    save_file(out, path, metadata={"format": "pt"})
    return f"transformers saved fused experts ({', '.join(sorted(fused)[:2])}, ...): rewritten per expert"


def cmd_make(a):
    import torch
    torch.manual_seed(a.seed)
    cls, cfg = family_model(a.family)
    model = cls(cfg).float().eval()
    with torch.no_grad():  # non-trivial norms and biases: every family tensor matters
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    if os.path.exists(a.out):
        import shutil
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    model.save_pretrained(a.out, safe_serialization=True)
    st = os.path.join(a.out, "model.safetensors")
    note = unfuse_experts(st, cfg.hidden_size, EXPERT_WIDTH)
    if note:
        with open(os.path.join(a.out, "oracle_note.txt"), "w") as f:
            f.write(note + "\n")
    from safetensors import safe_open
    with safe_open(st, "pt") as f:
        keys = sorted(f.keys())
    print(f"{a.family}: {len(keys)} tensors; layer 0: " + ", ".join(k for k in keys if ".layers.0." in k and
                                                                     ".experts.1" not in k and ".experts.2" not in k))
    return 0


def load_fp32(ckpt):
    import torch
    from transformers import AutoModelForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    return AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()


def routed_forward(model, seq):
    """Logits of every position of seq (one forward) and the experts each layer's gate chose
    there: {(position, layer): sorted ids}, read with forward hooks on the gate modules."""
    import re
    import torch
    k = model.config.num_experts_per_tok
    n_exp = getattr(model.config, "num_local_experts", None) or model.config.num_experts
    caught, hooks = {}, []
    for name, mod in model.named_modules():
        mt = re.search(r"layers\.(\d+)\.mlp\.gate$", name)
        if mt:
            def hook(mod, inp, out, layer=int(mt.group(1))):
                t = out[0] if isinstance(out, (tuple, list)) else out
                caught[layer] = t.detach().float().reshape(-1, n_exp)
            hooks.append(mod.register_forward_hook(hook))
    if len(hooks) != model.config.num_hidden_layers:
        sys.exit(f"error: found {len(hooks)} router gates for {model.config.num_hidden_layers} layers")
    logits = model(torch.tensor([seq])).logits[0].float()
    for h in hooks:
        h.remove()
    sets = {(p, layer): sorted(r) for layer, t in caught.items()
            for p, r in enumerate(torch.topk(t, k, dim=-1).indices.tolist())}
    return logits, sets


def write_routing(path, sets):
    """The format of `moebench logits --routing-out`: 'position layer e1 .. ek' lines."""
    with open(path, "w") as f:
        for (p, layer) in sorted(sets):
            f.write(f"{p} {layer} " + " ".join(str(e) for e in sets[(p, layer)]) + "\n")


def write_trace(path, sets, n_layers, n_experts, k, prompt_len, n_positions, source):
    """sets as a moebench routing trace (the format of variants/routing_trace.h) for
    `moebench logits --routing trace:FILE --prompt-len P`: step 0 the prompt's P tokens, then
    one step per decoded position; ids in (layer, token, k) order, experts ascending."""
    steps = []
    for first, count in [(0, prompt_len)] + [(p, 1) for p in range(prompt_len, n_positions)]:
        ids = []
        for layer in range(n_layers):
            for p in range(first, first + count):
                if (p, layer) not in sets:
                    sys.exit(f"error: no routing for position {p} layer {layer} to write to {path}")
                ids.extend(sets[(p, layer)])
        steps.append({"n_tokens": count, "ids": ids})
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"format": "moebench-routing-trace", "version": 1, "layers": n_layers, "experts": n_experts,
                   "top_k": k, "source": source, "steps": steps}, f)
    os.replace(tmp, path)


def read_routing(path):
    sets = {}
    with open(path) as f:
        for line in f:
            v = [int(t) for t in line.split()]
            if len(v) < 3:
                sys.exit(f"error: {path}: line {line.strip()!r} is not 'position layer e1 .. ek'")
            sets[(v[0], v[1])] = sorted(v[2:])
    return sets


def first_routing_difference(a, b):
    """First position where a and b chose differently in any layer both recorded (None: none)."""
    diff = [key[0] for key in a if key in b and a[key] != b[key]]
    return min(diff) if diff else None


def cmd_ref(a):
    import torch
    model = load_fp32(a.ckpt)
    seq = list(PROMPT[:a.prompt_len])
    greedy = []
    with torch.no_grad():
        for _ in range(a.new_tokens):
            logits = model(torch.tensor([seq])).logits[0, -1].float()
            tok = int(torch.argmax(logits))
            greedy.append(tok)
            seq.append(tok)
        full, sets32 = routed_forward(model, seq)
        # The reference a bf16-weight engine is held to: the same fp32 computation on the
        # weights rounded to bf16 (round to nearest even, as moebench's CUDA upload and
        # transformers' bf16 load round them), so that only activation rounding is left.
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        full16w, sets16w = routed_forward(model, seq)
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "ids.txt"), "w") as f:
        f.write(",".join(str(t) for t in seq) + "\n")
    write_npy_f32(os.path.join(a.out_dir, "ref.npy"), full.tolist())
    write_npy_f32(os.path.join(a.out_dir, "ref_bf16w.npy"), full16w.tolist())
    write_routing(os.path.join(a.out_dir, "routing_bf16w.txt"), sets16w)
    cfg = model.config
    write_trace(os.path.join(a.out_dir, "routing_bf16w_trace.json"), sets16w, cfg.num_hidden_layers,
                getattr(cfg, "num_local_experts", None) or cfg.num_experts, cfg.num_experts_per_tok, a.prompt_len,
                len(seq), f"transformers {type(model).__name__} fp32 on bf16-rounded weights (families_oracle.py ref)")
    import transformers
    with open(os.path.join(a.out_dir, "ref.json"), "w") as f:
        json.dump({"prompt": seq[:a.prompt_len], "greedy_tokens": greedy,
                   "source": f"transformers {transformers.__version__}, torch {torch.__version__}, "
                             f"{type(model).__name__} fp32 eager on the CPU",
                   "bf16_weights_reference": "ref_bf16w.npy, routing_bf16w.txt: the same fp32 forward with every "
                                             "parameter rounded to bf16",
                   "first_routing_difference_fp32_vs_bf16_weights": first_routing_difference(sets32, sets16w)}, f)
    print(f"greedy: {greedy}")
    return 0


def write_npy_f32(path, rows):
    import array
    import struct
    n, v = len(rows), len(rows[0])
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {v}), }}"
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    data = array.array("f", [x for r in rows for x in r])
    if sys.byteorder != "little":
        data.byteswap()
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data.tobytes())


def check(ref_dir, ours_path, prompt_len, tol):
    rr, cols, ref = read_npy_f32(os.path.join(ref_dir, "ref.npy"))
    ro, co, ours = read_npy_f32(ours_path)
    if (ro, co) != (rr, cols):
        sys.exit(f"error: {ours_path} is ({ro}, {co}) but the reference is ({rr}, {cols})")
    greedy = json.load(open(os.path.join(ref_dir, "ref.json")))["greedy_tokens"]
    per = []
    for p in range(rr):
        o, r = row(ours, cols, p), row(ref, cols, p)
        d = max(abs(x - y) for x, y in zip(o, r))
        ao, margin = top2(o)
        ar, _ = top2(r)
        per.append({"position": p, "max_abs_diff": d, "argmax_ours": ao, "argmax_ref": ar, "ref_top2_margin": margin})
    # Row p predicts position p + 1: rows prompt_len - 1 .. n - 2 predict the greedy tokens.
    ours_greedy = [per[p]["argmax_ours"] for p in range(prompt_len - 1, rr - 1)]
    worst = max(e["max_abs_diff"] for e in per)
    out = {"tolerance": tol, "max_abs_diff": worst, "positions": rr, "greedy_tokens_ref": greedy,
           "greedy_tokens_ours_teacher_forced": ours_greedy, "greedy_identical": ours_greedy == greedy,
           "within_tol": worst <= tol, "per_position": per}
    out["pass"] = out["within_tol"] and out["greedy_identical"]
    return out


def cmd_check(a):
    out = check(a.ref_dir, a.ours, a.prompt_len, a.tol)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"max |ours - ref| {out['max_abs_diff']:.3g} (tol {a.tol}), greedy identical: {out['greedy_identical']}")
    return 0 if out["pass"] else 1


def check_cuda(ref_dir, forced_path, forced_routing, natural_path, natural_routing, hf):
    """moebench's CUDA (bf16) logits against the fp32 reference on the same bf16-rounded
    weights (ref_bf16w.npy: the weights the engine holds), with our router's choices set to
    the reference's (forced_path: `--routing trace:` of its choices; the weights of the
    chosen experts still come from our own gate's softmax), so that only activation
    rounding is compared at every position: a near-tied router score that bf16 activations
    send the other way is a discrete jump, not rounding, and with 32 experts and top-8 even
    rounding the weights to bf16 flips some. tol = 2 x transformers' own bf16-vs-fp32 spread
    on these weights (max over the positions before its bf16 and fp32 runs first route
    differently; 2 bf16 ulps of the largest |logit| if they part at position 0); every
    position within tol; argmax equal where the reference's top-2 margin exceeds tol. Our
    own routing's run (natural_path) is reported beside: where its choices first differ
    from the reference's, and its logits before that."""
    rr, cols, ref = read_npy_f32(os.path.join(ref_dir, "ref_bf16w.npy"))
    _, _, ref32w = read_npy_f32(os.path.join(ref_dir, "ref.npy"))
    ref_sets = read_routing(os.path.join(ref_dir, "routing_bf16w.txt"))
    runs = {}
    for name, path, rpath in (("forced", forced_path, forced_routing), ("natural", natural_path, natural_routing)):
        ro, co, v = read_npy_f32(path)
        if (ro, co) != (rr, cols):
            sys.exit(f"error: {path} is ({ro}, {co}) but the reference is ({rr}, {cols})")
        sets = read_routing(rpath)
        missing = sorted(set(ref_sets) - set(sets))
        if missing:
            sys.exit(f"error: {rpath} has no routing for (position, layer) {missing[0]} "
                     f"({len(missing)} missing of {len(ref_sets)})")
        runs[name] = (v, first_routing_difference(sets, ref_sets))
    ours, forced_div = runs["forced"]
    natural, natural_div = runs["natural"]
    if forced_div is not None:
        sys.exit(f"error: {forced_routing}: the forced run chose other experts than the reference's trace at "
                 f"position {forced_div}")
    s = hf["summary"]
    spread = s["hf_bf16_vs_fp32_spread_routing_consistent"]
    top = max(abs(x) for x in ref)
    tol = 2 * spread if spread is not None else 2 * 2.0 ** (math.floor(math.log2(top)) - 7)
    per = []
    for p in range(rr):
        o, r, r32, nat = row(ours, cols, p), row(ref, cols, p), row(ref32w, cols, p), row(natural, cols, p)
        ao, _ = top2(o)
        ar, margin = top2(r)
        d = max(abs(x - y) for x, y in zip(o, r))
        per.append({"position": p, "max_abs_ours_vs_ref": d, "within_tol": d <= tol, "ref_top2_margin": margin,
                    "argmax_ours": ao, "argmax_ref": ar, "argmax_checked": margin > tol, "argmax_agrees": ao == ar,
                    "max_abs_ours_own_routing_vs_ref": max(abs(x - y) for x, y in zip(nat, r)),
                    "max_abs_bf16_weights_vs_fp32_weights": max(abs(x - y) for x, y in zip(r, r32))})
    checked = [e for e in per if e["argmax_checked"]]
    before = [e for e in per if natural_div is None or e["position"] < natural_div]
    out = {"rule": "moebench CUDA (bf16 weights, bf16 matmul inputs, fp32 accumulation), its router's choices set to "
                   "the reference's, vs transformers fp32 on the same bf16-rounded weights: |ours - ref| <= tol = 2 x "
                   "transformers' own bf16-vs-fp32 spread on these weights (positions before its first bf16/fp32 "
                   "routing divergence) at every position; argmax equal where the reference's top-2 margin > tol",
           "tolerance": tol, "hf_bf16_vs_fp32_spread": spread,
           "max_abs_ours_vs_ref": max(e["max_abs_ours_vs_ref"] for e in per),
           "ours_vs_ref_over_spread": max(e["max_abs_ours_vs_ref"] for e in per) / spread if spread else None,
           "all_within_tol": all(e["within_tol"] for e in per),
           "argmax_checked": len(checked), "argmax_agree_where_checked": sum(e["argmax_agrees"] for e in checked),
           "argmax_agree_all": sum(e["argmax_agrees"] for e in per),
           "own_routing": {"first_routing_difference_vs_ref": natural_div,
                           "max_abs_vs_ref_before_it": max((e["max_abs_ours_own_routing_vs_ref"] for e in before),
                                                           default=None),
                           "max_abs_vs_ref_all": max(e["max_abs_ours_own_routing_vs_ref"] for e in per)},
           "max_abs_bf16_weights_vs_fp32_weights": max(e["max_abs_bf16_weights_vs_fp32_weights"] for e in per),
           "transformers_bf16_run": {k: s.get(k) for k in ("first_routing_divergence_bf16_vs_fp32",
                                                         "hf_bf16_vs_fp32_max_spread_all_positions", "decode",
                                                         "prefill")},
           "device": hf.get("device"), "per_position": per}
    out["pass"] = out["all_within_tol"] and out["argmax_agree_where_checked"] == out["argmax_checked"]
    return out


def sh(cmd, log):
    t = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.append({"cmd": " ".join(cmd), "rc": r.returncode, "s": round(time.time() - t, 2), "tail": r.stdout[-2000:]})
    print(f"$ {' '.join(cmd)}  -> rc {r.returncode}\n{r.stdout[-1500:]}", flush=True)
    return r.returncode


def cmd_all(a):
    import torch
    import transformers
    moebench = os.path.join(a.bin, "moebench")
    cuda = not a.no_cuda and torch.cuda.is_available()
    result = {"what": "moebench vs HF transformers, tiny random models of each MoE family, token ids fed directly",
              "transformers": transformers.__version__, "torch": torch.__version__,
              "cpu_rule": "moebench logits --backend cpu (fp32) vs transformers fp32 eager on the CPU, same "
                          "safetensors: max |diff| <= 1e-4 over every position and token, and transformers' greedy "
                          "tokens identical to our argmax under teacher forcing",
              "cuda_rule": "moebench logits --backend cuda (bf16 weights, fp32 accumulation) with its router's "
                           "choices set to the reference's (--routing trace:, the chosen experts' weights from our own "
                           "gate) vs transformers fp32 on the same weights rounded to bf16 (ref_bf16w.npy; the spread "
                           "below is measured on those weights too), every position: tol = 2 x max |hf_bf16 - hf_fp32| "
                           "over the positions before the first routing divergence of transformers' own bf16 and fp32 "
                           "runs (mixtral_oracle.py compare measures it); argmax must agree where the reference's top-2 "
                           "margin exceeds tol. Our run with its own routing is reported beside (where its choices "
                           "first differ from the reference's). Against transformers' bf16 run itself no tolerance "
                           "holds: its routing flips away from fp32 at near-tied router scores (a discrete jump), so it "
                           "is reported, not held",
              "families": {}}
    ok = True
    for fam in a.families.split(","):
        d = os.path.join(a.work, fam)
        ref_dir = d + "_ref"
        log = []
        entry = {"commands": log}
        result["families"][fam] = entry
        rc = sh([sys.executable, __file__, "make", "--family", fam, "--out", d], log)
        rc = rc or sh([sys.executable, __file__, "ref", "--ckpt", d, "--prompt-len", str(a.prompt_len),
                       "--new-tokens", str(a.new_tokens), "--out-dir", ref_dir], log)
        if rc:
            entry["pass"] = False
            ok = False
            continue
        entry["config"] = json.load(open(os.path.join(d, "config.json")))
        note = os.path.join(d, "oracle_note.txt")
        if os.path.exists(note):
            entry["note"] = open(note).read().strip()
        ids = os.path.join(ref_dir, "ids.txt")
        ours_cpu = os.path.join(ref_dir, "ours_cpu.npy")
        rc = sh([moebench, "logits", "--model", d, "--backend", "cpu", "--ids-file", ids, "--prompt-len",
                 str(a.prompt_len), "--out", ours_cpu], log)
        if rc == 0:
            c = check(ref_dir, ours_cpu, a.prompt_len, 1e-4)
            entry["cpu"] = {k: v for k, v in c.items() if k != "per_position"}
            entry["cpu"]["max_abs_diff_per_position"] = [e["max_abs_diff"] for e in c["per_position"]]
        else:
            entry["cpu"] = {"pass": False, "error": log[-1]["tail"]}
        ok &= entry["cpu"]["pass"]
        if cuda:
            ours_cuda = os.path.join(ref_dir, "ours_cuda.npy")
            ours_routing = os.path.join(ref_dir, "ours_cuda_routing.txt")
            forced = os.path.join(ref_dir, "ours_cuda_forced.npy")
            forced_routing = os.path.join(ref_dir, "ours_cuda_forced_routing.txt")
            cmp = os.path.join(ref_dir, "cuda_vs_transformers.json")
            cuda_run = [moebench, "logits", "--model", d, "--backend", "cuda", "--max-model-len", "64", "--ids-file",
                        ids, "--prompt-len", str(a.prompt_len)]
            rc = sh(cuda_run + ["--out", ours_cuda, "--routing-out", ours_routing], log)
            rc = rc or sh(cuda_run + ["--routing", "trace:" + os.path.join(ref_dir, "routing_bf16w_trace.json"),
                                      "--out", forced, "--routing-out", forced_routing], log)
            if rc == 0:  # transformers' bf16 run beside its fp32 one: the spread the tolerance comes from
                sh([sys.executable, os.path.join(os.path.dirname(__file__), "mixtral_oracle.py"), "compare",
                    "--ckpt", d, "--ids-file", ids, "--prompt-len", str(a.prompt_len), "--ours", ours_cuda,
                    "--model-note", f"families_oracle.py make --family {fam}", "--out", cmp], log)
            if rc == 0 and os.path.exists(cmp):
                entry["cuda"] = check_cuda(ref_dir, forced, forced_routing, ours_cuda, ours_routing,
                                           json.load(open(cmp)))
            else:
                entry["cuda"] = {"pass": False, "error": log[-1]["tail"]}
            ok &= entry["cuda"]["pass"]
        entry["pass"] = entry["cpu"]["pass"] and (not cuda or entry["cuda"]["pass"])
    if a.keep:  # the checkpoints, ids and references, for a CPU fixture test
        import shutil
        for fam in result["families"]:
            for suffix in ("", "_ref"):
                src = os.path.join(a.work, fam + suffix)
                if os.path.isdir(src):
                    dst = os.path.join(a.keep, fam + suffix)
                    shutil.rmtree(dst, ignore_errors=True)
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ours_cuda*"))
            spread = result["families"][fam].get("cuda", {}).get("hf_bf16_vs_fp32_spread")
            ref_json = os.path.join(a.keep, fam + "_ref", "ref.json")
            if spread is not None and os.path.exists(ref_json):  # the CUDA fixture test's tolerance (2 x spread)
                r = json.load(open(ref_json))
                r["transformers_bf16_vs_fp32_spread"] = spread
                r["transformers_bf16_vs_fp32_spread_source"] = "mixtral_oracle.py compare in the oracle run that " \
                    "kept this fixture: max |transformers bf16 - transformers fp32 on the bf16-rounded weights| " \
                    "over the positions before their routing first differs"
                with open(ref_json, "w") as f:
                    json.dump(r, f)
    result["cuda_checked"] = cuda
    result["pass"] = ok
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, a.out)
    for fam, e in result["families"].items():
        cpu = e.get("cpu", {})
        line = f"{fam}: cpu max|diff| {cpu.get('max_abs_diff', math.nan):.3g} greedy {cpu.get('greedy_identical')}"
        if "cuda" in e and "tolerance" in e["cuda"]:
            c = e["cuda"]
            o = c["own_routing"]
            line += f"; cuda (reference's routing) max|ours - fp32 on bf16 weights| {c['max_abs_ours_vs_ref']:.4g} " \
                    f"(tol {c['tolerance']:.4g}), argmax {c['argmax_agree_where_checked']}/{c['argmax_checked']} " \
                    f"where checked; own routing first differs at {o['first_routing_difference_vs_ref']}; bf16 " \
                    f"weights alone move fp32 by {c['max_abs_bf16_weights_vs_fp32_weights']:.4g}"
        print(line + f" -> {'PASS' if e.get('pass') else 'FAIL'}")
    print("families oracle:", "PASS" if ok else "FAIL", "->", a.out)
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("make")
    p.add_argument("--family", required=True, choices=FAMILIES)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1234)
    p.set_defaults(fn=cmd_make)
    p = sp.add_parser("ref")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--prompt-len", type=int, default=len(PROMPT))
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(fn=cmd_ref)
    p = sp.add_parser("check")
    p.add_argument("--ref-dir", required=True)
    p.add_argument("--ours", required=True)
    p.add_argument("--prompt-len", type=int, default=len(PROMPT))
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_check)
    p = sp.add_parser("all")
    p.add_argument("--bin", required=True, help="folder holding the moebench binary")
    p.add_argument("--out", required=True)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--work", default="/tmp/families_oracle")
    p.add_argument("--prompt-len", type=int, default=len(PROMPT))
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--keep", default="", help="copy each family's checkpoint and reference here")
    p.set_defaults(fn=cmd_all)
    a = ap.parse_args()
    if getattr(a, "prompt_len", 1) < 1 or getattr(a, "prompt_len", 1) > len(PROMPT):
        sys.exit(f"error: --prompt-len must be in 1..{len(PROMPT)}")
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
