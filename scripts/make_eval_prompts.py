#!/usr/bin/env python3
"""Regenerate assets/eval_prompts.jsonl: 100 held-out prompts for `unmask eval`.

From data/corpus/heldout.jsonl (files sorted by content hash), take top-level `def`/`class` statements
and cut a prefix = the definition header plus the start of its body (docstring start), whole lines only, without the final newline (a prompt ending in "\n" splits the
"\n    " whitespace token the BPE learned, an out-of-distribution boundary),
100-400 characters.  At most 2 prompts per file, round-robin over files, deterministic.
Record: {"id": "heldout-NNN", "file": "<source>:<path>", "prefix": "..."}
"""
import argparse, ast, json
from pathlib import Path


def candidates(text):
    lines = text.split("\n")
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or not node.body:
            continue
        start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
        body0 = node.body[0].lineno - 1
        end = body0 + 2  # header + first two lines of the body (docstring start)
        pre = "\n".join(lines[start:end]).rstrip()
        while len(pre) > 400 and end > body0 + 1:
            end -= 1
            pre = "\n".join(lines[start:end]).rstrip()
        if 100 <= len(pre) <= 400:
            out.append(pre)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", default="assets/eval_prompts.jsonl")
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    recs = sorted((json.loads(l) for l in open(Path(args.corpus) / "heldout.jsonl")), key=lambda r: r["sha256"])
    per_file = [(r, candidates(r["text"])) for r in recs]
    picked = []
    for rnd in range(2):
        for r, c in per_file:
            if len(c) > rnd and len(picked) < args.n:
                picked.append((r, c[rnd]))
    with open(args.out, "w") as f:
        for i, (r, pre) in enumerate(picked):
            f.write(json.dumps({"id": f"heldout-{i:03d}", "file": f"{r['source']}:{r['path']}", "prefix": pre}) + "\n")
    print(f"wrote {len(picked)} prompts to {args.out}")


if __name__ == "__main__":
    main()
