#!/usr/bin/env python3
"""sass_loops.py: what a kernel's loops are made of, from its disassembly (`cuobjdump -sass
BINARY > FILE.sass`, on a machine with the CUDA toolkit's cuobjdump; gzip accepted). For each
function whose (mangled) name matches REGEX: every loop (a branch back to an earlier address)
with its address range, how deep it sits in other loops, its instruction count and the
opcodes that fill it, in address order. The point is to check the machine code against what
the source asks for: the int4 nibble conversion's mask-and-or, written as one expression, had
become two LOP3 per pair (docs/QUANT.md), which only this count showed.

  python3 tools/sass_loops.py [--kernel REGEX] [--min-size N] [--top N] [--json OUT] [--keep OUT.sass.gz] FILE.sass

Markdown on stdout: per function its size, then per loop of at least N instructions (default
32) one row with its depth (1: inside no other loop), the instruction count and the top
opcodes (base opcode, modifiers dropped; predicates ignored). --keep writes the matching
functions' instructions (without their encodings), gzipped, in the form this tool reads.
A file without a `Function :` header, or no function matching REGEX, stops it with one line
naming the file (and the pattern) and exit status 2.
"""
import argparse
import collections
import gzip
import json
import re
import sys

FUNC = re.compile(r"^\s*Function : (\S+)\s*$")
INSN = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
TARGET = re.compile(r"\b0x([0-9a-f]+)\b")


def fail(msg):
    print(f"sass_loops: {msg}", file=sys.stderr)
    sys.exit(2)


def read_lines(path):
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", errors="replace") as f:
            return f.read().splitlines()
    except OSError as e:
        fail(f"{path}: cannot read it ({e.strerror or e})")


def functions(lines, pattern):
    """({name: [(address, instruction text), ...]} of the functions whose name matches, in file
    order; how many functions the file has). Only the matching functions' instructions are
    parsed: a whole binary's dump is hundreds of MB."""
    out, name, total = {}, None, 0
    for line in lines:
        m = FUNC.match(line)
        if m:
            total += 1
            name = m.group(1) if pattern.search(m.group(1)) else None
            if name is not None:
                out[name] = []
            continue
        if name is None:
            continue
        m = INSN.match(line)
        if m:
            out[name].append((int(m.group(1), 16), m.group(2)))
    return out, total


def keep(path, chosen):
    text = "".join(f"\t\tFunction : {n}\n" + "".join(f"        /*{a:04x}*/ {t} ;\n" for a, t in i)
                   for n, i in chosen.items())
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(text.encode())


def opcode(text):
    """The base opcode: predicate (@P0, @!UP1) and modifiers (.E.128, .U32) dropped."""
    text = re.sub(r"^@!?U?P[T0-9]+\s+", "", text)
    return text.split()[0].split(".")[0] if text else ""


def loops(insns):
    """[(start, end)] of every backward branch: the loop from its target to the branch."""
    found = []
    for addr, text in insns:
        if opcode(text) not in ("BRA", "JMP"):
            continue
        m = TARGET.search(text)
        if m and int(m.group(1), 16) <= addr:
            found.append((int(m.group(1), 16), addr))
    return found


def summarise(name, insns, min_size, top):
    spans = sorted(set(loops(insns)))
    rows = []
    for start, end in spans:
        body = [t for a, t in insns if start <= a <= end]
        if len(body) < min_size:
            continue
        depth = 1 + sum(1 for s, e in spans if s <= start and end <= e and (s, e) != (start, end))
        hist = collections.Counter(opcode(t) for t in body)
        rows.append({"start": start, "end": end, "depth": depth, "instructions": len(body),
                     "opcodes": dict(hist.most_common())})
    whole = collections.Counter(opcode(t) for _, t in insns)
    return {"function": name, "instructions": len(insns), "opcodes": dict(whole.most_common(top)), "loops": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--kernel", default=".", help="regular expression on the mangled function name (default: all)")
    ap.add_argument("--min-size", type=int, default=32, help="loops of at least N instructions (default 32)")
    ap.add_argument("--top", type=int, default=8, help="opcodes shown per row (default 8)")
    ap.add_argument("--json", help="also write the whole summary (every opcode) as JSON here")
    ap.add_argument("--keep", help="also write the matching functions' instructions here (gzip)")
    a = ap.parse_args()
    try:
        pattern = re.compile(a.kernel)
    except re.error as e:
        fail(f"--kernel '{a.kernel}': not a regular expression ({e})")
    chosen, total = functions(read_lines(a.file), pattern)
    if not total:
        fail(f"{a.file}: no 'Function :' header (expected the output of cuobjdump -sass)")
    if not chosen:
        fail(f"{a.file}: no function matches '{a.kernel}' (of {total})")
    out = [summarise(n, i, a.min_size, a.top) for n, i in chosen.items()]
    for s in out:
        print(f"### {s['function']}\n")
        print(f"{s['instructions']} instructions; " + ", ".join(f"{k} {v}" for k, v in s["opcodes"].items()) + "\n")
        print("| loop | depth | instructions | top opcodes |")
        print("|---|---:|---:|---|")
        for r in s["loops"]:
            ops = ", ".join(f"{k} {v}" for k, v in list(r["opcodes"].items())[: a.top])
            print(f"| 0x{r['start']:x}-0x{r['end']:x} | {r['depth']} | {r['instructions']} | {ops} |")
        print()
    if a.keep:
        keep(a.keep, chosen)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
