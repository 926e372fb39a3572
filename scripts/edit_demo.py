#!/usr/bin/env python3
"""Show the effect of stage 2 (edit-based training): feed a clean held-out-style snippet in which a few tokens
were replaced by wrong ones (no masks), run one block-causal pass, and list the positions where the model's
argmax disagrees with its input ("doubts") for each checkpoint.
Usage: python3 scripts/edit_demo.py [--block 8] [--models checkpoints/stage1 assets]
"""
import argparse, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_sdar import block_causal_mask, load_hf  # noqa: E402

CLEAN = '''def read_config(path):
    """Load a JSON configuration file."""
    with open(path) as f:
        return json.load(f)
'''
BROKEN = '''def read_config(path):
    """Load a JSON configuration file."""
    with open(path) ax f:
        return json.load(f)
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--models", nargs="+", default=["checkpoints/stage1", "assets"])
    ap.add_argument("--text", default=BROKEN)
    args = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file("assets/tokenizer.json")
    ids = tok.encode(args.text).ids
    n = len(ids)
    for m in args.models:
        model = load_hf(m)
        with torch.no_grad():
            p = model(torch.tensor([ids]), torch.arange(n), block_causal_mask(n, args.block))[0].softmax(-1)
        conf, pred = p.max(-1)
        print(f"== {m} (block {args.block}): positions where argmax != input")
        for i in range(n):
            if pred[i] != ids[i]:
                print(f"  pos {i:3d}: input {tok.decode([ids[i]])!r:>14} -> {tok.decode([int(pred[i])])!r:<14} "
                      f"p={conf[i]:.2f} (p(input)={p[i, ids[i]]:.2f})")
        low = torch.tensor([p[i, ids[i]] for i in range(n)]).argsort()[:3].tolist()
        print("  least trusted input tokens: " + ", ".join(f"{tok.decode([ids[i]])!r} (p={p[i, ids[i]]:.3f}, "
              f"best {tok.decode([int(pred[i])])!r})" for i in low))
        fixed = ids[:]
        for i in range(n):
            if pred[i] != ids[i] and conf[i] > 0.5:
                fixed[i] = int(pred[i])
        print("  text after replacing tokens doubted with p>0.5:\n" + tok.decode(fixed))


if __name__ == "__main__":
    main()
