#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer (vocab 4096) of unmask's embedded model on the train split.

Special tokens: 0 <|endoftext|>, 1 <|mask|>, 2 <|pad|>.  ByteLevel pre-tokenizer (add_prefix_space=false,
GPT-2 regex) + ByteLevel decoder + BPE model: standard components the Rust `tokenizers` crate loads.
Verifies decode(encode(s)) == s on every held-out file.
Usage: python3 scripts/train_tokenizer.py [--corpus data/corpus] [--out assets/tokenizer.json]
"""
import argparse, json, sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<|endoftext|>", "<|mask|>", "<|pad|>"]


def texts(path):
    with open(path) as f:
        for line in f:
            yield json.loads(line)["text"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", default="assets/tokenizer.json")
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(Path(args.corpus) / "train.jsonl"), trainer=trainer)
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    assert tok.get_vocab_size() == args.vocab, tok.get_vocab_size()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tok.save(args.out)
    # round-trip check on held-out files (reloaded from disk, as the Rust side will)
    tok = Tokenizer.from_file(args.out)
    n = bad = ntok = nbytes = 0
    for s in texts(Path(args.corpus) / "heldout.jsonl"):
        ids = tok.encode(s).ids
        n += 1; ntok += len(ids); nbytes += len(s.encode())
        if tok.decode(ids, skip_special_tokens=False) != s:
            bad += 1
    print(json.dumps({"vocab": tok.get_vocab_size(), "heldout_files": n, "roundtrip_failures": bad,
                      "heldout_tokens": ntok, "bytes_per_token": round(nbytes / max(1, ntok), 3)}))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
