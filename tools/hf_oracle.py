#!/usr/bin/env python3
"""hf_oracle.py: builds a tiny random Mixtral with HF transformers' MixtralForCausalLM,
saves it with save_pretrained (safetensors), and records the logits of a fixed prompt
and 16 greedy tokens. The fixture is produced by transformers, not by moebench; run it
on the GPU machine (transformers 5.17, torch 2.11):

    python3 tools/hf_oracle.py --out tests/fixtures/hf_tiny

Outputs: OUT/config.json, OUT/model.safetensors, OUT/oracle.json.
"""
import argparse
import json
import os

import torch
import transformers
from transformers import MixtralConfig, MixtralForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    cfg = MixtralConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=256, rope_theta=1e6, rms_norm_eps=1e-5,
        initializer_range=0.2, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        router_jitter_noise=0.0, sliding_window=None, attn_implementation="eager")
    model = MixtralForCausalLM(cfg).float().eval()
    with torch.no_grad():  # make the norms non-trivial so they are tested too
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    from safetensors import safe_open
    with safe_open(os.path.join(args.out, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    print("saved tensors:", len(keys))
    for k in keys[:40]:
        print("  ", k)

    prompt = [1, 17, 254, 99, 3, 411, 78, 78, 200, 5, 333, 64]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        prompt_logits = model(ids).logits[0].float()  # (n, vocab)
        # Greedy decoding by full recomputation (no cache, no logits processors):
        # the raw logits of each step and its argmax, never stopping at EOS.
        seq = list(prompt)
        new_tokens, step_logits = [], []
        for _ in range(16):
            logits = model(torch.tensor([seq])).logits[0, -1].float()
            tok = int(torch.argmax(logits))
            step_logits.append(logits.tolist())
            new_tokens.append(tok)
            seq.append(tok)
    out = {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}, MixtralForCausalLM eager fp32, seed {args.seed}",
        "prompt_ids": prompt,
        "prompt_logits": prompt_logits.tolist(),
        "greedy_tokens": new_tokens,
        "step_logits": step_logits,
        "tensor_names": keys,
    }
    with open(os.path.join(args.out, "oracle.json"), "w") as f:
        json.dump(out, f)
    print("greedy:", new_tokens)


if __name__ == "__main__":
    main()
