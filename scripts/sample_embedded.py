#!/usr/bin/env python3
"""Greedy block-diffusion decoding with the exported model (PyTorch reference for the Rust engine).

SDAR-style: canvas = prompt + masks, blocks by absolute index (the prompt's trailing partial block is the
first decode block), block-causal attention, within a block commit one token per step: the masked position
with the highest max-probability (greedy argmax token). No KV cache (small model, reference only).
Usage: python3 scripts/sample_embedded.py --model assets --block 8 --max-new 96 --prompt "def fib(n):"
       python3 scripts/sample_embedded.py --model assets --prompts assets/eval_prompts.jsonl --n 3
"""
import argparse, json, sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_sdar import EOS_ID, MASK_ID, PAD_ID, block_causal_mask, load_hf  # noqa: E402


@torch.no_grad()
def generate(model, ids, B, max_new, stop_eos=True):
    canvas = list(ids)
    P = len(canvas)
    target = P + max_new
    while len(canvas) < target:
        s = (len(canvas) // B) * B
        canvas = canvas + [MASK_ID] * (s + B - len(canvas))
        n = len(canvas)
        mask = block_causal_mask(n, B)
        pos = torch.arange(n)
        while True:
            masked = [i for i in range(s, n) if canvas[i] == MASK_ID]
            if not masked:
                break
            logits = model(torch.tensor([canvas]), pos, mask)[0, masked].float()
            logits[:, MASK_ID] = -float("inf"); logits[:, PAD_ID] = -float("inf")
            p = logits.softmax(-1)
            conf, tok = p.max(-1)
            k = int(conf.argmax())
            canvas[masked[k]] = int(tok[k])
        if stop_eos and EOS_ID in canvas[P:]:
            return canvas[P:P + canvas[P:].index(EOS_ID)], True
    return canvas[P:target], False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="assets")
    ap.add_argument("--tokenizer", default=None)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=96)
    ap.add_argument("--prompt", default=None)
    ap.add_argument("--prompts", default=None)
    ap.add_argument("--n", type=int, default=3)
    args = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(args.tokenizer or str(Path(args.model) / "tokenizer.json"))
    model = load_hf(args.model)
    prompts = [args.prompt] if args.prompt else [json.loads(l)["prefix"] for l in open(args.prompts)][: args.n]
    for pr in prompts:
        out, eos = generate(model, tok.encode(pr).ids, args.block, args.max_new)
        print(f"===== {args.model} block {args.block} | prompt:\n{pr}\n----- completion{' (EOS)' if eos else ''}:\n"
              f"{tok.decode(out, skip_special_tokens=False)}\n", flush=True)


if __name__ == "__main__":
    main()
