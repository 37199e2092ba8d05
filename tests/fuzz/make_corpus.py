#!/usr/bin/env python3
"""make_corpus.py: writes the seed inputs of the fuzz targets into tests/fuzz/corpus/<target>/.
Seeds are small valid files (plus a few near-misses), derived from the fixtures and
shipped suites where those exist. Rerun after a format change; the output is deterministic.
  python3 tests/fuzz/make_corpus.py            # every target's seeds
  python3 tests/fuzz/make_corpus.py trace      # only the named targets' seeds
Findings kept as regression inputs live beside them as crash-*/regress-* files and are
not touched by this script."""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, odd=False):
    """tensors: [(name, dtype, shape, bytes)] laid out in order."""
    header, blob = {}, b""
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":"))
    while len(h) % 8 != (1 if odd else 0):  # the writer pads to 8; odd leaves the data at an odd offset
        h += " "
    return struct.pack("<Q", len(h)) + h.encode() + blob


def seeds_safetensors():
    f32 = struct.pack("<6f", 1, -2, 0.5, 3, 1e-3, -7)
    bf16 = bytes([0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F, 0x40, 0x40])
    f16 = bytes([0x00, 0x3C, 0x00, 0xC0, 0x00, 0x38, 0x00, 0x7C])
    put("safetensors", "two_tensors.safetensors",
        safetensors([("a", "F32", [2, 3], f32), ("b", "BF16", [4], bf16)], {"format": "pt"}))
    # Header of odd length: every 16-bit element sits at an odd offset.
    put("safetensors", "odd_header.safetensors",
        safetensors([("h", "F16", [2, 2], f16), ("b", "BF16", [4], bf16)], odd=True))
    put("safetensors", "zero_length.safetensors",
        safetensors([("x", "F32", [0, 4], b""), ("y", "BF16", [2, 2], bf16), ("s", "F32", [], f32[:4])]))
    put("safetensors", "empty.safetensors", safetensors([]))
    put("safetensors", "metadata_only.safetensors", safetensors([], {"k": "v", "n": "1"}))


def seeds_config():
    put("config", "hf_tiny.json", open(os.path.join(ROOT, "tests/fixtures/hf_tiny/config.json")).read())
    put("config", "minimal.json", json.dumps({
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 1e6, "bos_token_id": 1,
        "eos_token_id": 2, "model_type": "mixtral"}, indent=1))
    put("config", "mixtral.json", json.dumps({
        "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8, "num_experts_per_tok": 2,
        "max_position_embeddings": 32768, "rope_theta": 1e6, "tie_word_embeddings": False,
        "head_dim": 128, "model_type": "mixtral"}))


def seeds_tokenizer():
    full = json.load(open(os.path.join(ROOT, "tests/fixtures/mistral/tokenizer.json")))
    vocab = full["model"]["vocab"]
    keep_ids = 300  # specials, the 256 byte tokens, the first merged pieces
    small_vocab = {p: i for p, i in vocab.items() if i < keep_ids}
    merges = []
    for m in full["model"]["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a in small_vocab and b in small_vocab and a + b in small_vocab:
            merges.append(m)
    t = dict(full)
    t["model"] = dict(full["model"], vocab=small_vocab, merges=merges)
    t["added_tokens"] = [a for a in full["added_tokens"] if a["id"] < keep_ids]
    put("tokenizer", "mistral_small.json", json.dumps(t, ensure_ascii=False))
    # The newer layout: no normalizer, a Metaspace pre-tokenizer, merges as pairs.
    m = dict(t)
    m["normalizer"] = None
    m["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    m["model"] = dict(t["model"], merges=[x.split(" ") if isinstance(x, str) else x for x in merges])
    put("tokenizer", "metaspace_pairs.json", json.dumps(m, ensure_ascii=False))
    # No byte fallback, a handful of pieces.
    tiny_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5, "\u2581a": 6, "ab": 7, "\u2581ab": 8}
    put("tokenizer", "tiny_no_bytes.json", json.dumps({
        "added_tokens": [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "<s>", "special": True},
                         {"id": 2, "content": "</s>", "special": True}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "},
                                                            "content": "\u2581"}]},
        "pre_tokenizer": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": False,
                  "vocab": tiny_vocab, "merges": ["\u2581 a", "a b", "\u2581a b"]}}, ensure_ascii=False))
    # Byte-level BPE (Qwen): the Qwen3 fixture with its first 200 merges, three added tokens.
    q = json.load(open(os.path.join(ROOT, "tests/fixtures/qwen3/tokenizer.json")))
    merges = q["model"]["merges"][:200]
    keep = {p for p, i in q["model"]["vocab"].items() if i < 256}  # the byte characters come first
    keep |= {a + b for a, b in merges}
    pieces = sorted(keep, key=lambda p: q["model"]["vocab"][p])
    vocab = {p: i for i, p in enumerate(pieces)}
    added = [dict(a, id=len(vocab) + k) for k, a in enumerate(q["added_tokens"][:2] + q["added_tokens"][-2:])]
    put("tokenizer", "qwen_small.json", json.dumps(dict(q, added_tokens=added, model=dict(q["model"], vocab=vocab, merges=merges)),
                                                   ensure_ascii=False))
    # GPT-2's layout (ByteLevel with its own pattern), the same cut, NFC, one added token matched
    # after normalizing, and the same with a space before each part.
    g = json.load(open(os.path.join(ROOT, "tests/fixtures/gpt2/tokenizer.json")))
    added = [dict(g["added_tokens"][0], id=len(vocab)),
             {"id": len(vocab) + 1, "content": "  ", "normalized": True, "special": False}]
    g2 = dict(g, normalizer={"type": "NFC"}, added_tokens=added, model=dict(g["model"], vocab=vocab, merges=merges))
    put("tokenizer", "gpt2_small.json", json.dumps(g2, ensure_ascii=False))
    put("tokenizer", "gpt2_prefix_space.json",
        json.dumps(dict(g2, pre_tokenizer=dict(g["pre_tokenizer"], add_prefix_space=True)), ensure_ascii=False))


def seeds_suite():
    for name in ["ci", "short", "stages", "budget", "capacity"]:
        put("suite", name + ".json", open(os.path.join(ROOT, "suites", name + ".json")).read())
    put("suite", "everything.json", json.dumps({
        "name": "everything", "description": "every field",
        "defaults": {"model": {"cpu": "micro", "cuda": "tiny"}, "backend": "cpu", "seed": 3, "warmup_runs": 0,
                     "repetitions": 2, "rounds": 2, "new_tokens": 4, "cpu_threads": 1, "clock": "thread_cpu",
                     "cold_each_case": True, "stage": "P1", "settings": {"cache_policy": "lru", "cache_slots": "4"}},
        "cases_from": ["short"],
        "cases": [{"name": "x", "prompt": "hi", "new_tokens": 2, "batch_size": 2, "stage": "P0",
                   "settings": {"cache_slots": "8"}},
                  {"name": "ref", "workload": "calibration", "prompt_tokens": 4, "new_tokens": 2}],
        "sweep": {"stage": ["baseline", "P2"], "cache_slots": [2, 4], "batch_size": [1, 2]}}, indent=1))


def seeds_results():
    # The results seeds were cut from a CPU results file that the gate's work counts have
    # since replaced; the committed seeds stay as they are.
    source = os.path.join(ROOT, "reports/baselines/ci-cpu.json")
    if not os.path.exists(source):
        print(f"make_corpus.py: results seeds kept ({os.path.relpath(source, ROOT)} is gone)")
        return
    full = json.load(open(source))

    def trim(case, reps):
        c = dict(case)
        c["samples"] = c["samples"][:reps]
        for k in ("repetitions",):
            if k in c:
                c[k] = reps
        return c

    one = dict(full, cases=[trim(full["cases"][1], 2)])
    put("results", "one_case.json", json.dumps(one, indent=1))
    two = dict(full, cases=[trim(c, 1) for c in full["cases"][:2]])
    put("results", "two_cases.json", json.dumps(two))
    put("results", "no_cases.json", json.dumps(dict(full, cases=[])))


def seeds_trace():
    def trace(layers, experts, top_k, steps, source="seed"):
        return {"format": "moebench-routing-trace", "version": 1, "layers": layers, "experts": experts,
                "top_k": top_k, "source": source, "steps": steps}
    put("trace", "two_steps.json", json.dumps(trace(2, 8, 2, [
        {"n_tokens": 1, "ids": [0, 1, 2, 3]},
        {"n_tokens": 2, "ids": [4, 5, 6, 7, 0, 7, 1, 6]}])))
    put("trace", "weights.json", json.dumps(trace(1, 4, 2, [
        {"n_tokens": 2, "ids": [3, 0, 1, 2], "weights": [0.75, 0.25, 0.5, 0.5]}], "model")))
    put("trace", "top8_of_16.json", json.dumps(trace(1, 16, 8, [
        {"n_tokens": 1, "ids": [15, 3, 9, 0, 12, 5, 7, 1]}])))
    put("trace", "no_steps.json", json.dumps(trace(4, 8, 2, [])))


def seeds_dashboard():
    """The dashboard's three kinds of file (results, Chrome trace, Google Benchmark JSON), cut from
    ui/testdata, and one of them gzip-compressed (written without a time stamp: deterministic)."""
    import gzip
    td = os.path.join(ROOT, "ui", "testdata")
    stages = json.load(open(os.path.join(td, "cpu_tiny_stages.json")))

    def few_reps(case, reps):
        c = dict(case, samples=case["samples"][:reps])
        c["repetitions"] = min(c.get("repetitions", reps), reps)
        return c

    put("dashboard", "stages_results.json", json.dumps(dict(stages, cases=[few_reps(c, 2) for c in stages["cases"]])))
    trace = json.load(open(os.path.join(td, "cpu_tiny_trace.json")))
    events = trace["traceEvents"]
    cut = [e for e in events if e.get("ph") == "M"] + [e for e in events if e.get("ph") == "X"][:40]
    # B/E pairs, a counter and a GPU process: what the profiler's writer leaves out on the CPU.
    cut += [{"name": "process_name", "ph": "M", "pid": 100, "tid": 0, "args": {"name": "GPU 0"}},
            {"name": "moe", "cat": "kernel", "ph": "B", "pid": 100, "tid": 7, "ts": 400000.0},
            {"name": "gemv", "cat": "kernel", "ph": "X", "pid": 100, "tid": 7, "ts": 400010.5, "dur": 3.25},
            {"name": "moe", "ph": "E", "pid": 100, "tid": 7, "ts": 400020.0},
            {"name": "memory", "ph": "C", "pid": 1, "ts": 400000.0, "args": {"arena_used_bytes": 1048576}},
            {"name": "memory", "ph": "C", "pid": 1, "ts": 399000.0, "args": {"arena_used_bytes": 0}}]
    text = json.dumps(dict(trace, traceEvents=cut))
    put("dashboard", "trace.json", text)
    put("dashboard", "trace_array.json", json.dumps(cut[:12]))
    put("dashboard", "trace.json.gz", gzip.compress(text.encode(), mtime=0))
    bench = json.load(open(os.path.join(td, "kernels_h200_linear.json")))
    put("dashboard", "bench.json", json.dumps(dict(bench, benchmarks=bench["benchmarks"][:6])))
    row = bench["benchmarks"][0]
    aggregates = [dict(row, run_type="aggregate", aggregate_name=a, repetitions=3, real_time=row["real_time"] * f)
                  for a, f in (("mean", 1.0), ("median", 0.99), ("stddev", 0.01))]
    put("dashboard", "bench_aggregates.json", json.dumps(dict(bench, benchmarks=aggregates)))


def seeds_chat_template():
    """The real templates of the chat-template fixture and every template its cases render."""
    d = os.path.join(ROOT, "tests", "fixtures", "chat_templates")
    for name in ("qwen3", "qwen2_5"):
        put("chat_template", name + ".jinja", json.load(open(os.path.join(d, name + "_tokenizer_config.json")))["chat_template"])
    seen = set()
    for c in json.load(open(os.path.join(d, "cases.json")))["cases"]:
        src = c.get("source")
        if src and src not in seen:
            seen.add(src)
            put("chat_template", c["template"].replace(" ", "_") + ".jinja", src)


if __name__ == "__main__":
    import sys
    targets = {"safetensors": seeds_safetensors, "config": seeds_config, "tokenizer": seeds_tokenizer,
               "suite": seeds_suite, "results": seeds_results, "trace": seeds_trace,
               "chat_template": seeds_chat_template, "dashboard": seeds_dashboard}
    for name in sys.argv[1:] or targets:
        if name not in targets:
            sys.exit(f"make_corpus.py: unknown target {name} (expected one of: {' '.join(targets)})")
        targets[name]()
