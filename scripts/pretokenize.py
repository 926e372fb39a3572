#!/usr/bin/env python3
"""Tokenize the corpus into compact uint16 streams for training (files joined by <|endoftext|>=0).

Train files are ordered by content hash (deterministic), each followed by id 0.  Output (git-ignored):
  .device/tokens/train.u16.xz, .device/tokens/heldout.u16.xz  (raw little-endian uint16, lzma)
  .device/tokens/stats.json
Usage: python3 scripts/pretokenize.py [--corpus data/corpus] [--tokenizer assets/tokenizer.json]
"""
import argparse, json, lzma
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--tokenizer", default="assets/tokenizer.json")
    ap.add_argument("--out", default=".device/tokens")
    ap.add_argument("--max-train-tokens", type=int, default=0, help="0 = all")
    args = ap.parse_args()
    tok = Tokenizer.from_file(args.tokenizer)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in ("train", "heldout"):
        recs = [json.loads(l) for l in open(Path(args.corpus) / f"{split}.jsonl")]
        recs.sort(key=lambda r: r["sha256"])
        parts, n = [], 0
        for i in range(0, len(recs), 512):
            for enc in tok.encode_batch([r["text"] for r in recs[i:i + 512]]):
                a = np.asarray(enc.ids + [0], dtype=np.uint16)
                parts.append(a); n += a.size
            if split == "train" and args.max_train_tokens and n >= args.max_train_tokens:
                break
        arr = np.concatenate(parts)
        if split == "train" and args.max_train_tokens:
            arr = arr[: args.max_train_tokens]
        raw = arr.astype("<u2").tobytes()
        comp = lzma.compress(raw, preset=6)
        (out / f"{split}.u16.xz").write_bytes(comp)
        stats[split] = {"files": len(recs), "tokens": int(arr.size), "bytes_text": sum(len(r["text"].encode()) for r in recs),
                        "u16_bytes": len(raw), "xz_bytes": len(comp)}
        print(split, stats[split], flush=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
