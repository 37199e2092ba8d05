#!/usr/bin/env python3
"""Checks that tools/device_run.sh's `tests` part runs every test that needs a GPU.

The part runs `moebench_tests --gtest_filter=$GPU_FILTER`. A test that asks
`gpu_available()` skips itself on a machine without a GPU (CI), so a suite missing from
the filter is never run anywhere. This script reads GPU_FILTER from device_run.sh (its
`GPU_FILTER="..."` and `GPU_FILTER+="..."` lines), finds each TEST / TEST_F / TEST_P in
the given test files that needs a GPU (its body, or its fixture's, asks gpu_available() or
visible_gpus(), or skips with a message naming the GPU), and prints one line per such test
whose name the filter does not match. Exit 0 when every one is matched, 1 when one is
not, 2 on unreadable input.

usage: gpu_filter_check.py DEVICE_RUN_SH TEST_FILE...
"""
import fnmatch
import re
import sys

TEST_RE = re.compile(r"^\s*(TEST|TEST_F|TEST_P)\(\s*(\w+)\s*,\s*(\w+)\s*\)", re.M)
FIXTURE_RE = re.compile(r"^\s*(?:class|struct)\s+(\w+)\s*(?:final\s*)?:\s*public\s+(?:::)?testing::", re.M)
INSTANTIATE_RE = re.compile(r"INSTANTIATE_TEST_SUITE_P\(\s*(\w+)\s*,\s*(\w+)\s*,")
# What a test that needs a GPU does: asks whether one is there, or skips saying so.
GPU_RE = re.compile(r"gpu_available\(\)|visible_gpus\(\)|GTEST_SKIP\(\)\s*<<\s*\"[^\"]*\bGPUs?\b")


def gpu_filter(path):
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        print(f"{path}: cannot read ({e.strerror})", file=sys.stderr)
        sys.exit(2)
    parts = re.findall(r'^GPU_FILTER\+?="([^"]*)"', text, re.M)
    if not parts:
        print(f"{path}: no GPU_FILTER=\"...\" line", file=sys.stderr)
        sys.exit(2)
    pats = [p for p in "".join(parts).split(":") if p]
    if any(p.startswith("-") for p in pats):
        print(f"{path}: GPU_FILTER has a negative pattern, which this check does not read", file=sys.stderr)
        sys.exit(2)
    return pats


def gpu_tests(path):
    """(full test name as the filter sees it, line) of each test in `path` that needs a GPU:
    its body asks for one, or its fixture's does. A parameterised test is named as its
    first instantiation's first case (Prefix/Suite.Name/0)."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        print(f"{path}: cannot read ({e.strerror})", file=sys.stderr)
        sys.exit(2)
    starts = sorted([m.start() for m in TEST_RE.finditer(text)] + [m.start() for m in FIXTURE_RE.finditer(text)])

    def chunk(m):  # from a definition to the next test or fixture definition
        nxt = [x for x in starts if x > m.start()]
        return text[m.end():nxt[0] if nxt else len(text)]

    gpu_fixtures = {m.group(1) for m in FIXTURE_RE.finditer(text) if GPU_RE.search(chunk(m))}
    prefixes = {}
    for m in INSTANTIATE_RE.finditer(text):
        prefixes.setdefault(m.group(2), m.group(1))
    for m in TEST_RE.finditer(text):
        macro, suite, name = m.groups()
        if GPU_RE.search(chunk(m)) or (macro != "TEST" and suite in gpu_fixtures):
            full = f"{suite}.{name}"
            if macro == "TEST_P":
                full = f"{prefixes.get(suite, '*')}/{full}/0"
            yield full, text.count("\n", 0, m.start()) + 1


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    pats = gpu_filter(argv[1])
    missing = 0
    checked = 0
    for path in argv[2:]:
        for full, line in gpu_tests(path):
            checked += 1
            if not any(fnmatch.fnmatchcase(full, p) for p in pats):
                print(f"{path}:{line}: {full} needs a GPU and is not in {argv[1]}'s GPU_FILTER")
                missing += 1
    if missing == 0:
        print(f"{checked} GPU tests, each in GPU_FILTER")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
