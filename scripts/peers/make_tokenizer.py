# Rebuild a Qwen2 (Qwen2.5) byte-level BPE tokenizer.json from llama.cpp's vocab-only GGUF
# (llama.cpp/models/ggml-vocab-qwen2.gguf) and add Dream's extra special tokens
# (<|beginoftext|> = 151665, <|mask|> = 151666). Output: HF tokenizer files in OUT dir.
# usage (PEERS set): python make_tokenizer.py $PEERS/llama.cpp/models/ggml-vocab-qwen2.gguf OUT
import json, sys, os
# llama.cpp's own GGUF reader, from the tree scripts/peers/setup.sh unpacked into $PEERS.
sys.path.insert(0, os.path.join(os.environ['PEERS'], 'llama.cpp', 'gguf-py'))
from gguf import GGUFReader

src = sys.argv[1]; out = sys.argv[2]
os.makedirs(out, exist_ok=True)
r = GGUFReader(src)
F = r.fields
toks = F['tokenizer.ggml.tokens']; n = len(toks.data)
tokens = [toks.contents(i) for i in range(n)]
ttypes = [F['tokenizer.ggml.token_type'].contents(i) for i in range(n)]
mf = F['tokenizer.ggml.merges']
merges = [mf.contents(i) for i in range(len(mf.data))]
print('gguf tokens', n, 'merges', len(merges))
for k in F:
    if k.startswith('tokenizer.ggml.') and k not in ('tokenizer.ggml.tokens','tokenizer.ggml.token_type','tokenizer.ggml.merges'):
        try: print(' ', k, F[k].contents())
        except Exception: pass

# normal (type 1) tokens go into the BPE vocab; control/user-defined go to added_tokens
vocab = {}
added = []
for i, (t, ty) in enumerate(zip(tokens, ttypes)):
    if ty == 1:
        vocab[t] = i
    else:
        added.append((i, t, ty))
print('normal', len(vocab), 'added', [(i, t, ty) for i, t, ty in added][:40])

# Dream-v0 (Qwen2.5) special-token layout: 151643..151664 = Qwen2.5 added tokens,
# 151665 = <|beginoftext|> (Dream bos), 151666 = <|mask|> (Dream mask_token_id)
assert len(vocab) == 151643
specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
            '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
            '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>', '<tool_call>',
            '</tool_call>', '<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|fim_pad|>',
            '<|repo_name|>', '<|file_sep|>', '<|beginoftext|>', '<|mask|>']
added_tokens = []
for j, t in enumerate(specials):
    added_tokens.append({"id": 151643 + j, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                         "normalized": False, "special": t not in ('<tool_call>', '</tool_call>')})
next_id = 151643 + len(specials)

qwen2_regex = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
tj = {
  "version": "1.0", "truncation": None, "padding": None,
  "added_tokens": added_tokens,
  "normalizer": {"type": "NFC"},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": qwen2_regex}, "behavior": "Isolated", "invert": False},
      {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
  "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
  "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
  "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [m.split(' ', 1) for m in merges]},
}
json.dump(tj, open(os.path.join(out, 'tokenizer.json'), 'w'), ensure_ascii=False)

atd = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")} for a in added_tokens}
tc = {
  "add_bos_token": False, "add_prefix_space": False,
  "added_tokens_decoder": atd,
  "bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
  "mask_token": "<|mask|>", "unk_token": None,
  "clean_up_tokenization_spaces": False, "errors": "replace",
  "model_max_length": 131072, "split_special_tokens": False,
  "tokenizer_class": "Qwen2Tokenizer",
  "chat_template": "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
}
json.dump(tc, open(os.path.join(out, 'tokenizer_config.json'), 'w'), ensure_ascii=False, indent=1)
json.dump({"bos_token": "<|beginoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|mask|>"},
          open(os.path.join(out, 'special_tokens_map.json'), 'w'), indent=1)
print('total ids', next_id, 'mask id', next_id - 1)
