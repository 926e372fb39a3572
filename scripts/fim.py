"""Fill-in-the-middle for scripts/train_embedded.py: the same definition as unmask's src/fim.rs
(layout, transform) and src/train/vocab.rs (sentinels added to the tokenizer, embedding growth).

Layout of one document cut into prefix P, middle M, suffix S (suffix first, so that under
block-causal attention the middle's blocks come last and attend to both sides, and the prefix
sits right before the middle, which it continues):

    <|fim_suffix|> S <|fim_prefix|> P <|fim_middle|> M <|endoftext|>

No torch or numpy here: `python3 scripts/test_fim.py` checks it on a bare interpreter.
"""
import json

PREFIX, MIDDLE, SUFFIX = "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"
SENTINELS = (PREFIX, MIDDLE, SUFFIX)  # the order in which they are added to a tokenizer
LAYOUT = "suffix-prefix-middle"       # config.json "fim_layout"
OVERHEAD = 4                          # three sentinels and the closing end-of-text


def layout(prefix, middle, suffix, ids, eos):
    """ids: {"prefix": id, "middle": id, "suffix": id}."""
    return [ids["suffix"], *suffix, ids["prefix"], *prefix, ids["middle"], *middle, eos]


def transform(window, L, eos, ids, randint):
    """FIM transform of one training window (len >= L > OVERHEAD), keeping its length, as
    unmask's fim::transform: the document is the window up to its first end-of-text within the
    first L-3 tokens (which then closes the middle), else its first L-4 tokens (an end-of-text is
    added); two cut points uniform over the document (randint(a, b) draws from a..b inclusive)
    split it; the window's tokens after the document follow unchanged."""
    window = list(window)
    room = L - OVERHEAD
    head = window[:room + 1]
    if eos in head:
        doc_len = head.index(eos)
        consumed = doc_len + 1
    else:
        doc_len = consumed = room
    i, j = sorted((randint(0, doc_len), randint(0, doc_len)))
    doc = window[:doc_len]
    out = layout(doc[:i], doc[i:j], doc[j:], ids, eos) + window[consumed:]
    return out[:len(window)]


def add_sentinels(tok):
    """Adds the sentinels a tokenizer.json dict lacks as special tokens after its last id (in
    place); returns their ids. Matches the tokenizers library's add_special_tokens."""
    added = tok.setdefault("added_tokens", [])
    have = {t["content"]: t["id"] for t in added}
    vocab = tok.get("model", {}).get("vocab", {})
    have.update({k: v for k, v in vocab.items() if k in SENTINELS and k not in have})
    nxt = max([len(vocab)] + [t["id"] + 1 for t in added])
    for s in SENTINELS:
        if s not in have:
            added.append({"id": nxt, "content": s, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True})
            have[s] = nxt
            nxt += 1
    return {"prefix": have[PREFIX], "middle": have[MIDDLE], "suffix": have[SUFFIX]}


def grown_tokenizer(path):
    """(tokenizer.json text with the sentinels, their ids)."""
    tok = json.loads(open(path, encoding="utf-8").read())
    ids = add_sentinels(tok)
    return json.dumps(tok, ensure_ascii=False, indent=2), ids
