#!/usr/bin/env python3
"""fp8_oracle.py: moebench's CPU reference on a checkpoint that transformers quantised and
saved with FineGrainedFP8Config, against transformers run in fp32 on the same fp8 weights
dequantised with torch. Run on the GPU machine (transformers 5.17, torch 2.11): its fp8
forward needs a `kernels` package that is absent there, so the oracle dequantises instead.

  make     --out DIR
           a small random MixtralForCausalLM (hidden 192: full and partial 128x128
           blocks; intermediate 384, a multiple of 128: transformers 5.17 quantises w1
           and w3 as one fused gate_up matrix and splits its block scales when it saves
           them, so with an intermediate size that is not a multiple of 128 (320 was
           tried) w3's saved scales no longer line up with its rows and the checkpoint
           is not a valid block-fp8 file; Mixtral-8x7B's 14336 is a multiple of 128), loaded with quantization_config=FineGrainedFP8Config()
           on cuda and saved with save_pretrained to DIR; prints every tensor's name, dtype
           and shape; writes DIR/ids.txt (the prompt).
  ref      --ckpt DIR --out REF.npy
           every F8_E4M3 weight times its weight_scale_inv (one f32 per 128x128 block) in
           fp32, the other tensors as stored; saved without quantization_config into
           DIR.dequant and loaded by MixtralForCausalLM.from_pretrained in fp32 on the CPU;
           the logits of ids.txt in one forward, float32 .npy.
  compare  --ours OURS.npy --ref REF.npy --tol T --out CMP.json
           max |ours - ref| over every position and token; passes when <= T (the CPU
           reference: 1e-4, both sides computing in fp32 from the same dequantised weights).
"""
import argparse
import json
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mixtral_oracle import read_npy_f32  # noqa: E402

PROMPT = [1, 17, 254, 99, 3, 411, 78, 78, 200, 5, 333, 64, 12, 480, 7, 250]


def cmd_make(a):
    import torch
    from transformers import FineGrainedFP8Config, MixtralConfig, MixtralForCausalLM
    torch.manual_seed(4321)
    cfg = MixtralConfig(
        vocab_size=512, hidden_size=192, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=48, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=256, rope_theta=1e6, rms_norm_eps=1e-5,
        initializer_range=0.1, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        router_jitter_noise=0.0, sliding_window=None)
    model = MixtralForCausalLM(cfg).to(torch.bfloat16).eval()
    with torch.no_grad():  # non-trivial norms
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    plain = a.out + ".bf16"
    os.makedirs(plain, exist_ok=True)
    model.save_pretrained(plain, safe_serialization=True)
    q = MixtralForCausalLM.from_pretrained(plain, quantization_config=FineGrainedFP8Config(), device_map="cuda")
    os.makedirs(a.out, exist_ok=True)
    q.save_pretrained(a.out, safe_serialization=True)
    from safetensors import safe_open
    for fn in sorted(os.listdir(a.out)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(a.out, fn), "pt") as f:
                for k in sorted(f.keys()):
                    t = f.get_slice(k)
                    print(f"{fn}: {k} {t.get_dtype()} {t.get_shape()}")
    with open(os.path.join(a.out, "config.json")) as f:
        print("quantization_config:", json.load(f).get("quantization_config"))
    with open(os.path.join(a.out, "ids.txt"), "w") as f:
        f.write(",".join(map(str, PROMPT)))


def cmd_ref(a):
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import MixtralForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    tensors = {}
    for fn in sorted(os.listdir(a.ckpt)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(a.ckpt, fn), "pt") as f:
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
    out = {}
    n_fp8 = 0
    for k, t in tensors.items():
        if k.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = tensors[k + "_scale_inv"].float()
            rows, cols = t.shape
            s = s.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
            out[k] = (t.float() * s).contiguous()
            n_fp8 += 1
        else:
            out[k] = t.float().contiguous()
    print(f"dequantised {n_fp8} fp8 tensors of {len(out)}")
    d = a.ckpt.rstrip("/") + ".dequant"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with open(os.path.join(a.ckpt, "config.json")) as f:
        cfg = json.load(f)
    cfg.pop("quantization_config", None)
    cfg["torch_dtype"] = "float32"
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file(out, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    model = MixtralForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    with open(os.path.join(a.ckpt, "ids.txt")) as f:
        ids = [int(x) for x in f.read().split(",")]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().contiguous()
    rows, cols = logits.shape
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, cols)
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    with open(a.out, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(logits.numpy().tobytes())
    print(f"reference logits ({rows}, {cols}) -> {a.out}")


def cmd_compare(a):
    r1, c1, ours = read_npy_f32(a.ours)
    r2, c2, ref = read_npy_f32(a.ref)
    if (r1, c1) != (r2, c2):
        sys.exit(f"error: {a.ours} is ({r1}, {c1}) but {a.ref} is ({r2}, {c2})")
    worst = max(abs(x - y) for x, y in zip(ours, ref))
    scale = max(abs(y) for y in ref)
    res = {"positions": r1, "vocab": c1, "max_abs_diff": worst, "max_abs_ref": scale, "tol": a.tol,
           "pass": worst <= a.tol}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res))
    return 0 if res["pass"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    m.set_defaults(fn=cmd_make)
    r = sub.add_parser("ref")
    r.add_argument("--ckpt", required=True)
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_ref)
    c = sub.add_parser("compare")
    c.add_argument("--ours", required=True)
    c.add_argument("--ref", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    c.add_argument("--out", required=True)
    c.set_defaults(fn=cmd_compare)
    a = ap.parse_args()
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
