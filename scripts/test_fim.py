#!/usr/bin/env python3
"""Checks scripts/fim.py (the PyTorch trainer's fill-in-the-middle) on a bare interpreter:
`python3 scripts/test_fim.py [RUST_TOKENIZER_JSON]`. With a tokenizer.json written by
`unmask train --fim-rate …`, also checks that both trainers give the sentinels the same ids.
The Rust side has the same checks in tests/train.rs."""
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fim  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IDS = {"prefix": 4096, "middle": 4097, "suffix": 4098}
SENT = set(IDS.values())


def parts(row):
    assert row[0] == IDS["suffix"], row
    p, m = row.index(IDS["prefix"]), row.index(IDS["middle"])
    e = m + 1 + row[m + 1:].index(0)
    assert all(row.count(s) == 1 for s in SENT), row
    return row[1:p], row[p + 1:m], row[m + 1:e]


def test_transform():
    rng = random.Random(11)
    L = 32
    for case in range(400):
        window = [100 + i for i in range(L + 8)]
        eos_at = (case // 2) % (L - 3) if case % 2 == 0 else None
        if eos_at is not None:
            window[eos_at] = 0
        out = fim.transform(window, L, 0, IDS, rng.randint)
        assert len(out) == len(window)
        s, p, m = parts(out[:L])
        doc_len = eos_at if eos_at is not None else L - 4
        assert p + m + s == window[:doc_len], case
        consumed = L - 3 if eos_at is not None else L - 4
        got = sorted(t for t in out[:L] if t not in SENT)
        want = sorted(window[:consumed] + ([] if eos_at is not None else [0]))
        assert got == want, case
        rest = out[len(fim.layout(p, m, s, IDS, 0)):]
        assert rest == window[doc_len + (eos_at is not None):][:len(rest)], case


def test_tokenizer(rust_file):
    text, ids = fim.grown_tokenizer(ROOT / "assets/tokenizer.json")
    assert ids == IDS, ids
    tok = json.loads(text)
    again = fim.add_sentinels(tok)
    assert again == IDS and len(tok["added_tokens"]) == 6
    if rust_file:
        rust = json.loads(Path(rust_file).read_text())
        key = lambda t: (t["id"], t["content"], t["special"])  # noqa: E731
        assert sorted(map(key, rust["added_tokens"])) == sorted(map(key, tok["added_tokens"])), rust["added_tokens"]


if __name__ == "__main__":
    test_transform()
    test_tokenizer(sys.argv[1] if len(sys.argv) > 1 else None)
    print("fim.py: ok" + (" (sentinel ids match the Rust trainer's)" if len(sys.argv) > 1 else ""))
