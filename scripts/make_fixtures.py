#!/usr/bin/env python3
"""Build the tiny dLLM test fixtures under tests/fixtures/.

For each family (LLaDA, Dream, SDAR) this script

* trains a small byte-level BPE tokenizer (``tokenizers``) on an embedded corpus and adds the
  family's special tokens,
* writes config.json / generation_config.json / tokenizer_config.json in the family's real
  Hugging Face layout (key names, architectures, model_type, chat template),
* draws tiny random weights (fixed seeds) into the family's *reference* PyTorch model class and
  saves them with ``safetensors`` under the real tensor names (SDAR sharded in two files),
* reloads each checkpoint with the reference class, checks the logits are bit-identical to the
  in-memory model, and records golden logits (``golden.safetensors`` + ``golden.json``),
* runs the published reference samplers with deterministic settings and records their token
  outputs (``golden_generate.json``),
* renders every chat template with transformers' ``apply_chat_template`` (``chat_golden.json``).

The reference modeling code is NOT part of this repository. It is read from ``--refcode DIR``
(default /tmp/refcode); see tests/fixtures/README.md for how to populate that directory. The
directory must lie outside the repository; this script only adds two small compatibility shims
there (a CPU stand-in ``flash_attn`` package and a ``LossKwargs`` import fix for transformers 4.57).

Run:  /opt/venv-ref/bin/python scripts/make_fixtures.py --refcode /tmp/refcode
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures"
# The published SDAR-4B-Chat metadata (no weights), shipped with the tests.
DEFAULT_PUBLISHED = DEFAULT_OUT / "sdar-4b-chat-published"

# ----------------------------------------------------------------------------------------------
# Geometry shared by the three families (see tests/fixtures/README.md)
# ----------------------------------------------------------------------------------------------
HIDDEN = 64
LAYERS = 2
HEADS = 4
HEAD_DIM = 16
INTERMEDIATE = 128
ROPE_THETA = 10000.0
MAX_POS = 512

W_STD = 0.15      # linear / embedding weights
NORM_STD = 0.05   # norm weights: 1 + N(0, NORM_STD^2)
BIAS_STD = 0.05   # biases (Dream q/k/v)

# total tokenizer sizes (= config vocab_size)
VOCAB = {"llada": 380, "dream": 400, "sdar": 420}
LLADA_EMBEDDING_SIZE = 384  # padded like LLaDA's embedding_size (multiple of 128)

SEEDS = {"llada": 1001, "dream": 2002, "sdar": 3003}

SPECIALS = {
    "llada": ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|start_header_id|>",
              "<|end_header_id|>", "<|eot_id|>"],
    "dream": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"],
    "sdar": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<MASK>"],
}

# Pre-tokenizer split patterns: Qwen2 (Dream, SDAR) and Llama-3 style (LLaDA).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Embedded training corpus: fixed text so the tokenizers do not depend on the local Python install.
CORPUS = r'''
Diffusion language models generate text by starting from a canvas of mask tokens and
unmasking a few positions at every step. The model sees the whole canvas at once, so the
attention is bidirectional; block diffusion models attend causally across blocks and
bidirectionally inside a block. At each step the sampler predicts every masked position,
scores the predictions by confidence, and commits the most confident ones.
The quick brown fox jumps over the lazy dog. A playground lets you watch the tokens appear.
Hello, world! How are you today? I am fine, thank you. What is the capital of France?
Paris is the capital of France. The answer is 42. Please reason step by step.

def add(a, b):
    """Return the sum of a and b."""
    return a + b


def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


class Counter:
    def __init__(self, start=0):
        self.value = start

    def increment(self, step=1):
        self.value += step
        return self.value


for index in range(10):
    print(f"step {index}: value = {index * index}")

import os
import sys
from pathlib import Path

def read_lines(path):
    with open(path, "r", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]

if __name__ == "__main__":
    numbers = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    numbers.sort()
    print(numbers, sum(numbers), max(numbers), min(numbers))
    config = {"steps": 128, "block_length": 32, "temperature": 0.0}
    for key, value in config.items():
        print(key, value)
'''

PROMPT_TEXT = "def add(a, b):\n    return a + b\n\nThe quick brown fox jumps over the lazy dog."
TAIL_TEXT = " return the value"

# ----------------------------------------------------------------------------------------------
# Chat templates
# ----------------------------------------------------------------------------------------------
# Llama-3 style template (the one LLaDA-8B-Instruct ships, as used by its chat.py / generate.py).
LLADA_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

# Qwen2.5 ChatML template with the default system prompt "You are a helpful assistant."
# (Qwen2.5 base tokenizer_config.json; Dream is trained from Qwen2.5-7B).
DREAM_CHAT_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

CHAT_MESSAGES = {
    "user_only": [
        {"role": "user", "content": "Write a haiku about masks."},
    ],
    "system_user": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "  Hello there!  \n"},
    ],
    "multi_turn": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "<think>\nsimple\n</think>\n\n4"},
        {"role": "user", "content": "And 3 + 3?"},
    ],
}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def log(*a):
    print("[make_fixtures]", *a, flush=True)


def write_json(path: Path, obj, indent=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


FLASH_ATTN_INIT = '''\
# CPU stand-in for flash_attn, written by unmask/scripts/make_fixtures.py (fixtures only).
import torch
import torch.nn.functional as F


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, **kw):
    # q, k, v: [batch, len, heads, head_dim]; K/V heads repeated for GQA.
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=softmax_scale)
    return o.transpose(1, 2)


def flash_attn_varlen_func(*a, **kw):
    raise NotImplementedError("flash_attn_varlen_func is not available in the CPU stand-in")
'''

FLASH_ATTN_LAYER_NORM = '''\
import torch


def rms_norm_fn(x, weight, bias=None, eps=1e-6, **kw):
    # plain RMSNorm: f32 compute, cast back to the input dtype, then multiply by the weight
    dt = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    out = weight * h.to(dt)
    if bias is not None:
        out = out + bias
    return out
'''

FLASH_ATTN_BERT_PADDING = '''\
def index_first_axis(*a, **k):
    raise NotImplementedError


def pad_input(*a, **k):
    raise NotImplementedError


def unpad_input(*a, **k):
    raise NotImplementedError
'''

REQUIRED_REFCODE = [
    "llada/__init__.py", "llada/configuration_llada.py", "llada/modeling_llada.py", "llada/generate.py",
    "dream/__init__.py", "dream/configuration_dream.py", "dream/modeling_dream.py",
    "dream/generation_utils.py",
    "sdar/configuration_sdar.py", "sdar/modeling_sdar.py",
    "sdar/fused_linear_diffusion_cross_entropy.py", "sdar/generate.py",
]


def prepare_refcode(refcode: Path):
    refcode = refcode.resolve()
    if REPO in refcode.parents or refcode == REPO:
        sys.exit(f"--refcode must lie outside the repository ({refcode})")
    missing = [p for p in REQUIRED_REFCODE if not (refcode / p).is_file()]
    if missing:
        sys.exit("missing reference files in %s: %s (see tests/fixtures/README.md)" % (refcode, missing))
    (refcode / "sdar" / "__init__.py").touch()
    # transformers >= 4.56 no longer exports LossKwargs; the SDAR file imports it.
    msdar = refcode / "sdar" / "modeling_sdar.py"
    src = msdar.read_text()
    old = "from transformers.utils import LossKwargs, auto_docstring,"
    if old in src:
        src = src.replace(
            old,
            "from typing import TypedDict\n"
            "class LossKwargs(TypedDict, total=False):  # shim added by make_fixtures.py\n"
            "    pass\n"
            "from transformers.utils import auto_docstring,")
        msdar.write_text(src)
        log("patched LossKwargs import in", msdar)
    fa = refcode / "flash_attn"
    files = {
        fa / "__init__.py": FLASH_ATTN_INIT,
        fa / "ops" / "__init__.py": "",
        fa / "ops" / "triton" / "__init__.py": "",
        fa / "ops" / "triton" / "layer_norm.py": FLASH_ATTN_LAYER_NORM,
        fa / "bert_padding.py": FLASH_ATTN_BERT_PADDING,
    }
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
    sys.path.insert(0, str(refcode))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# tokenizers
# ----------------------------------------------------------------------------------------------
def build_tokenizer(family: str):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, \
        pre_tokenizers, processors, trainers

    specials = SPECIALS[family]
    total = VOCAB[family]
    pattern = LLAMA3_PATTERN if family == "llada" else QWEN2_PATTERN
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, fuse_unk=False))
    if family != "llada":
        tok.normalizer = normalizers.NFC()  # Qwen2's tokenizer.json uses NFC
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=total - len(specials), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=False, rstrip=False,
                                       single_word=False) for s in specials])
    size = tok.get_vocab_size(with_added_tokens=True)
    if size != total:
        sys.exit(f"{family}: tokenizer has {size} tokens, expected {total} (corpus too small?)")
    ids = {s: tok.token_to_id(s) for s in specials}
    return tok, ids


def added_tokens_decoder(tok):
    out = {}
    for i, t in sorted(tok.get_added_tokens_decoder().items()):
        out[str(i)] = {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                       "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
    return out


# ----------------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------------
def llada_config(ids):
    # Every field of LLaDA's ModelConfig, enums as plain strings, like the published config.json.
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": {
            "AutoConfig": "configuration_llada.LLaDAConfig",
            "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        },
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": HIDDEN,
        "embedding_dropout": 0.0,
        "embedding_size": LLADA_EMBEDDING_SIZE,
        "eos_token_id": ids["<|endoftext|>"],
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "cpu",
        "init_fn": "normal",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": MAX_POS,
        "mlp_hidden_size": INTERMEDIATE,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": HEADS,
        "n_kv_heads": HEADS,
        "n_layers": LAYERS,
        "pad_token_id": ids["<|endoftext|>"],
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": ROPE_THETA,
        "scale_logits": False,
        "torch_dtype": "float32",
        "train_max_sequence_length": MAX_POS,
        "transformers_version": "4.57.6",
        "use_cache": False,
        "vocab_size": VOCAB["llada"],
        "weight_tying": False,
    }


def dream_config(ids, dtype="float32"):
    return {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "bos_token_id": ids["<|beginoftext|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "mask_token_id": ids["<|mask|>"],
        "max_position_embeddings": MAX_POS,
        "max_window_layers": LAYERS,
        "model_type": "Dream",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": 2,
        "pad_token_id": ids["<|endoftext|>"],
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
        "transformers_version": "4.57.6",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": VOCAB["dream"],
    }


def sdar_config(ids):
    # Layout of the published SDAR-4B-Chat config.json; mask_token_id deliberately absent (the
    # mask id must come from the tokenizer's <MASK> token).
    return {
        "architectures": ["SDARForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_sdar.SDARConfig",
            "AutoModel": "modeling_sdar.SDARModel",
            "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM",
        },
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "debug": False,
        "eos_token_id": ids["<|endoftext|>"],
        "block_size": 4,
        "ep_size": 1,
        "fuse_cross_entropy": True,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POS,
        "max_window_layers": LAYERS,
        "micro_forward": False,
        "model_type": "sdar",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "skip_checkpoint": False,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "transformers_version": "4.57.6",
        "use_cache": False,
        "use_deepep": False,
        "use_sliding_window": False,
        "vocab_size": VOCAB["sdar"],
    }


def tokenizer_config(family, tok, ids, published_tc=None):
    base = {"added_tokens_decoder": added_tokens_decoder(tok)}
    if family == "llada":
        base.update({
            "bos_token": "<|startoftext|>",
            "chat_template": LLADA_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "extra_special_tokens": {},
            "mask_token": "<|mdm_mask|>",
            "model_input_names": ["input_ids", "attention_mask"],
            "model_max_length": MAX_POS,
            "pad_token": "<|endoftext|>",
            "tokenizer_class": "PreTrainedTokenizerFast",
        })
    elif family == "dream":
        base.update({
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": "<|beginoftext|>",
            "chat_template": DREAM_CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "errors": "replace",
            "mask_token": "<|mask|>",
            "model_max_length": MAX_POS,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        })
    else:  # sdar: copy the published file, swap in this tokenizer's added tokens
        tc = dict(published_tc)
        tc.pop("auto_map", None)  # remote tokenizer code is not shipped with the fixture
        tc["added_tokens_decoder"] = base["added_tokens_decoder"]
        tc["additional_special_tokens"] = ["<|im_start|>", "<|im_end|>", "<MASK>"]
        tc["mask_token"] = "<MASK>"
        tc["model_max_length"] = MAX_POS
        base = tc
    return base


def generation_config(family, ids):
    if family == "llada":
        return {"_from_model_config": True, "bos_token_id": ids["<|startoftext|>"],
                "eos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"],
                "transformers_version": "4.57.6"}
    if family == "dream":
        return {"_from_model_config": True, "bos_token_id": ids["<|beginoftext|>"],
                "eos_token_id": ids["<|endoftext|>"], "pad_token_id": ids["<|endoftext|>"],
                "transformers_version": "4.57.6"}
    return {"bos_token_id": ids["<|endoftext|>"], "do_sample": True,
            "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
            "pad_token_id": ids["<|endoftext|>"], "temperature": 0.6, "top_k": 20, "top_p": 0.95,
            "transformers_version": "4.51.0"}


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------
def fill_random(model, seed, skip=()):
    """Overwrite every parameter with seeded random values; return {name: tensor} to save."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters(remove_duplicate=True):
            if name in skip:
                continue
            if name.endswith(".bias"):
                v = torch.randn(p.shape, generator=g) * BIAS_STD
            elif p.dim() == 1:  # RMSNorm weights
                v = 1.0 + torch.randn(p.shape, generator=g) * NORM_STD
            else:
                v = torch.randn(p.shape, generator=g) * W_STD
            p.copy_(v.to(p.dtype))
            out[name] = p.detach().clone().contiguous()
    return out


def save_single(path: Path, tensors, dtype=None):
    from safetensors.torch import save_file
    t = {k: (v.to(dtype) if dtype is not None else v).contiguous() for k, v in sorted(tensors.items())}
    save_file(t, str(path), metadata={"format": "pt"})


def save_sharded(folder: Path, tensors, first_shard_pred):
    from safetensors.torch import save_file
    names = sorted(tensors)
    shards = {1: {}, 2: {}}
    for n in names:
        shards[1 if first_shard_pred(n) else 2][n] = tensors[n].contiguous()
    fn = {i: f"model-0000{i}-of-00002.safetensors" for i in (1, 2)}
    weight_map = {}
    total = 0
    for i in (1, 2):
        save_file(shards[i], str(folder / fn[i]), metadata={"format": "pt"})
        for n, t in shards[i].items():
            weight_map[n] = fn[i]
            total += t.numel() * t.element_size()
    write_json(folder / "model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


# ----------------------------------------------------------------------------------------------
# canvases
# ----------------------------------------------------------------------------------------------
def plain_ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def block_causal_mask(L, B):
    import torch
    i = torch.arange(L)
    return ((i[None, :] // B) <= (i[:, None] // B)).unsqueeze(0)  # [1, L, L] bool, 1 = attend


def check_close_exact(a, b, what):
    import torch
    if a.shape != b.shape or not torch.equal(a, b):
        diff = (a - b).abs().max().item() if a.shape == b.shape else float("nan")
        sys.exit(f"{what}: mismatch (max abs diff {diff})")


class ForwardRecorder:
    """Records the token ids (and a few kwargs) of every forward call the sampler makes."""

    def __init__(self, model):
        self.calls = []
        self.h = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = args[0] if args else kwargs.get("input_ids")
        rec = {"input_ids": ids[0].tolist()}
        pos = kwargs.get("position_ids")
        if pos is None and len(args) >= 3 and args[2] is not None and not isinstance(args[2], str):
            pos = args[2]
        if pos is not None:
            rec["position_ids"] = pos[0].tolist()
        if "store_kv" in kwargs:
            rec["store_kv"] = bool(kwargs["store_kv"])
        self.calls.append(rec)

    def close(self):
        self.h.remove()
        return self.calls


# ----------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------
def make_llada(out: Path, tok, ids, gen: bool):
    import torch
    from safetensors.torch import save_file
    from llada import LLaDAConfig, LLaDAModelLM
    llada_generate = importlib.import_module("llada.generate")

    d = out / "llada"
    write_json(d / "config.json", llada_config(ids))
    cfg = LLaDAConfig.from_pretrained(str(d))
    model = LLaDAModelLM(cfg, init_params=True).eval()
    tensors = fill_random(model, SEEDS["llada"])
    V = VOCAB["llada"]
    with torch.no_grad():  # padded embedding rows (ids >= vocab_size) are zero, as never trained
        model.model.transformer.wte.weight[V:] = 0
        model.model.transformer.ff_out.weight[V:] = 0
        # the mask token must never be the argmax (trained models never predict it)
        model.model.transformer.ff_out.weight[ids["<|mdm_mask|>"]] = 0
    tensors["model.transformer.wte.weight"] = model.model.transformer.wte.weight.detach().clone()
    tensors["model.transformer.ff_out.weight"] = model.model.transformer.ff_out.weight.detach().clone()
    save_single(d / "model.safetensors", tensors)

    bos, eos, mask = ids["<|startoftext|>"], ids["<|endoftext|>"], ids["<|mdm_mask|>"]
    prompt = [bos] + plain_ids(tok, PROMPT_TEXT)[:7]
    tail = plain_ids(tok, TAIL_TEXT)[:3] + [eos]
    canvas = prompt + [mask] * 8 + tail
    x = torch.tensor([canvas])
    with torch.no_grad():
        raw_mem = model(x).logits[0]
    re = LLaDAModelLM.from_pretrained(str(d), dtype=torch.float32).eval()
    with torch.no_grad():
        raw = re(x).logits[0]
    check_close_exact(raw, raw_mem, "llada reload")
    save_file({"input_ids": x[0].to(torch.int64), "raw_logits": raw.contiguous(),
               "logits": raw.clone().contiguous()}, str(d / "golden.safetensors"),
              metadata={"format": "pt"})
    write_json(d / "golden.json", {
        "family": "llada", "canvas_len": len(canvas), "input_ids": canvas, "prompt_ids": prompt,
        "mask_id": mask, "block_size": None, "attention": "bidirectional (no mask)",
        "position_ids": "0..L-1", "logit_shift": "none (logits == raw_logits)",
        "logits_width": LLADA_EMBEDDING_SIZE,
        "note": "logits have embedding_size columns (the ff_out rows); columns >= vocab_size are 0",
    })
    log("llada logits std %.3f" % raw[:, :V].std().item())

    if gen:
        cases = []
        gprompt = [bos] + plain_ids(tok, "The quick brown fox")[:5]
        for steps, block in [(8, 4), (4, 4), (8, 8)]:
            settings = {"function": "ML-GSAI/LLaDA generate.py generate()", "steps": steps,
                        "gen_length": 8, "block_length": block, "temperature": 0.0, "cfg_scale": 0.0,
                        "remasking": "low_confidence", "mask_id": mask, "logits_eos_inf": False,
                        "confidence_eos_eot_inf": False, "attention_mask": None}
            rec = ForwardRecorder(re)
            with torch.no_grad():
                outx = llada_generate.generate(re, torch.tensor([gprompt]), steps=steps, gen_length=8,
                                               block_length=block, temperature=0.0, cfg_scale=0.0,
                                               remasking="low_confidence", mask_id=mask)
            calls = rec.close()
            cases.append({"prompt_ids": gprompt, "settings": settings,
                          "output_ids": outx[0].tolist(), "output_includes_prompt": True,
                          "forward_inputs": [c["input_ids"] for c in calls]})
        write_json(d / "golden_generate.json", cases)
    return re


def make_dream(out: Path, tok, ids, gen: bool):
    import torch
    from safetensors.torch import save_file
    from dream import DreamConfig, DreamModel

    d = out / "dream"
    db = out / "dream-bf16"
    write_json(d / "config.json", dream_config(ids))
    write_json(db / "config.json", dream_config(ids, dtype="bfloat16"))
    cfg = DreamConfig.from_pretrained(str(d))
    cfg._attn_implementation = "sdpa"
    model = DreamModel(cfg).eval()
    tensors = fill_random(model, SEEDS["dream"])
    with torch.no_grad():  # the mask token must never be the argmax (trained models never predict it)
        model.lm_head.weight[ids["<|mask|>"]] = 0
    tensors["lm_head.weight"] = model.lm_head.weight.detach().clone()
    save_single(d / "model.safetensors", tensors)
    save_single(db / "model.safetensors", tensors, dtype=torch.bfloat16)

    eos, mask = ids["<|endoftext|>"], ids["<|mask|>"]
    prompt = plain_ids(tok, PROMPT_TEXT)[:8]
    tail = plain_ids(tok, TAIL_TEXT)[:3] + [eos]
    canvas = prompt + [mask] * 8 + tail
    x = torch.tensor([canvas])

    def shifted(raw):
        return torch.cat([raw[:1], raw[:-1]], dim=0)

    with torch.no_grad():
        raw_mem = model(x).logits[0]
    re = DreamModel.from_pretrained(str(d), dtype=torch.float32, attn_implementation="sdpa").eval()
    with torch.no_grad():
        raw = re(x).logits[0]
    check_close_exact(raw, raw_mem, "dream reload")
    meta = {"family": "dream", "canvas_len": len(canvas), "input_ids": canvas, "prompt_ids": prompt,
            "mask_id": mask, "block_size": None, "attention": "bidirectional (no mask)",
            "position_ids": "0..L-1",
            "logit_shift": "logits[0] = raw_logits[0]; logits[i] = raw_logits[i-1] for i >= 1"}
    save_file({"input_ids": x[0].to(torch.int64), "raw_logits": raw.contiguous(),
               "logits": shifted(raw).contiguous()}, str(d / "golden.safetensors"),
              metadata={"format": "pt"})
    write_json(d / "golden.json", meta)
    log("dream logits std %.3f" % raw.std().item())

    # bf16 checkpoint: golden logits from the bf16 weights upcast to f32
    reb = DreamModel.from_pretrained(str(db), dtype=torch.float32, attn_implementation="sdpa").eval()
    with torch.no_grad():
        model.load_state_dict({k: v.to(torch.bfloat16).to(torch.float32) for k, v in tensors.items()},
                              strict=False)
        rawb_mem = model(x).logits[0]
        rawb = reb(x).logits[0]
    check_close_exact(rawb, rawb_mem, "dream-bf16 reload")
    save_file({"input_ids": x[0].to(torch.int64), "raw_logits": rawb.contiguous(),
               "logits": shifted(rawb).contiguous()}, str(db / "golden.safetensors"),
              metadata={"format": "pt"})
    write_json(db / "golden.json", dict(meta, family="dream-bf16",
                                        note="weights stored as bf16; golden logits computed in f32 "
                                             "from the bf16 weights upcast to f32"))
    log("dream-bf16 vs f32 max logit diff %.4f" % (rawb - raw).abs().max().item())

    if gen:
        cases = []
        gprompt = plain_ids(tok, "The quick brown fox jumps")[:6]
        for alg in ["entropy", "maskgit_plus", "topk_margin"]:
            for steps in [8, 4]:
                settings = {"function": "DreamGenerationMixin.diffusion_generate (NVlabs/Fast-dLLM "
                                        "dream/model/generation_utils.py)",
                            "max_new_tokens": 8, "steps": steps, "temperature": 0.0, "alg": alg,
                            "alg_temp": 0.0, "top_p": None, "top_k": None, "eps": 1e-3,
                            "mask_token_id": mask, "attention_mask": None,
                            # transformers fills the unset top_k with its global default, so the
                            # sampler really filters to the 50 most likely tokens.
                            "effective_top_k": 50}
                rec = ForwardRecorder(re)
                with torch.no_grad():
                    res = re.diffusion_generate(torch.tensor([gprompt]), max_new_tokens=8, steps=steps,
                                                temperature=0.0, alg=alg, alg_temp=0.0,
                                                return_dict_in_generate=True, output_history=True)
                calls = rec.close()
                hist = [h[0].tolist() for h in res.history]
                cases.append({"prompt_ids": gprompt, "settings": settings,
                              "output_ids": res.sequences[0].tolist(), "output_includes_prompt": True,
                              "history": hist,
                              "forward_inputs": [c["input_ids"] for c in calls]})
        write_json(d / "golden_generate.json", cases)
    return re


def make_sdar(out: Path, tok, ids, gen: bool):
    import torch
    from safetensors.torch import save_file
    sdar_cfg_mod = importlib.import_module("sdar.configuration_sdar")
    sdar_mod = importlib.import_module("sdar.modeling_sdar")
    sdar_generate = importlib.import_module("sdar.generate")
    SDARConfig, SDARForCausalLM = sdar_cfg_mod.SDARConfig, sdar_mod.SDARForCausalLM

    d = out / "sdar"
    write_json(d / "config.json", sdar_config(ids))
    cfg = SDARConfig.from_pretrained(str(d))
    model = SDARForCausalLM(cfg).eval()
    tensors = fill_random(model, SEEDS["sdar"], skip={"lm_head.weight"})
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "not tied"
    with torch.no_grad():
        # tied head: shrink the <MASK> row so its logit stays near 0 and it is never the argmax
        # (RMSNorm makes the input side insensitive to the scale)
        model.model.embed_tokens.weight[ids["<MASK>"]] *= 0.05
    tensors["model.embed_tokens.weight"] = model.model.embed_tokens.weight.detach().clone()
    save_sharded(d, tensors, lambda n: n == "model.embed_tokens.weight" or n.startswith("model.layers.0."))

    mask, imend = ids["<MASK>"], ids["<|im_end|>"]
    prompt = plain_ids(tok, PROMPT_TEXT)[:9]
    tail = plain_ids(tok, TAIL_TEXT)[:3] + [imend]
    canvas = prompt + [mask] * 11 + tail
    L = len(canvas)
    x = torch.tensor([canvas])
    pos = torch.arange(L).unsqueeze(0)
    re = SDARForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    assert re.lm_head.weight.data_ptr() == re.model.embed_tokens.weight.data_ptr(), "reload not tied"
    res = {}
    for B in (4, 8):
        m = block_causal_mask(L, B)
        with torch.no_grad():
            a = model(x, attention_mask=m, position_ids=pos).logits[0]
            b = re(x, attention_mask=m, position_ids=pos).logits[0]
        check_close_exact(b, a, f"sdar reload B={B}")
        res[B] = b
    save_file({"input_ids": x[0].to(torch.int64), "raw_logits": res[4].contiguous(),
               "logits": res[4].clone().contiguous(), "logits_b8": res[8].contiguous()},
              str(d / "golden.safetensors"), metadata={"format": "pt"})
    write_json(d / "golden.json", {
        "family": "sdar", "canvas_len": L, "input_ids": canvas, "prompt_ids": prompt, "mask_id": mask,
        "block_size": 4, "block_size_logits_b8": 8,
        "attention": "block-causal: query i attends key j iff j // B <= i // B",
        "position_ids": "0..L-1", "logit_shift": "none (logits == raw_logits)",
        "mask_id_source": "tokenizer token <MASK> (config.json has no mask_token_id)",
    })
    log("sdar logits std %.3f" % res[4].std().item())

    if gen:
        gcfg = json.loads((d / "generation_config.json").read_text())
        stop = gcfg["eos_token_id"]
        gprompt = plain_ids(tok, "The quick brown fox jumps")[:6]
        orig_sampler = sdar_generate.sample_with_temperature_topk_topp

        def greedy_sampler(logits, temperature=1.0, top_k=0, top_p=1.0):
            # token = argmax, confidence = its softmax probability (no sampling)
            orig_shape = logits.shape[:-1]
            logits = logits.reshape(-1, logits.shape[-1])
            if temperature != 1.0:
                logits = logits / temperature
            probs = torch.softmax(logits, dim=-1)
            p, t = probs.max(dim=-1)
            return t.view(*orig_shape), p.view(*orig_shape)

        runs = [
            ("low_confidence_static", 1, None, False),
            ("sequential", 1, None, False),
            ("low_confidence_static", 0, None, True),
            ("low_confidence_dynamic", 0, 0.045, True),
        ]
        cases = []
        for strategy, top_k, thr, greedy in runs:
            settings = {"function": "JetAstra/SDAR generate.py block_diffusion_generate",
                        "gen_length": 8, "block_length": 4, "denoising_steps": 4, "temperature": 1.0,
                        "top_k": top_k, "top_p": 1.0, "remasking_strategy": strategy,
                        "confidence_threshold": thr if thr is not None else 0.85,
                        "stopping_criteria_idx": stop, "mask_id": mask,
                        "sampler": ("patched: token = argmax(softmax(logits)), confidence = its "
                                    "probability (sample_with_temperature_topk_topp replaced)")
                        if greedy else "published sample_with_temperature_topk_topp (multinomial; "
                                       "top_k=1 makes it deterministic, every confidence = 1.0)"}
            sdar_generate.sample_with_temperature_topk_topp = greedy_sampler if greedy else orig_sampler
            torch.manual_seed(0)
            rec = ForwardRecorder(re)
            try:
                with torch.no_grad():
                    outx = sdar_generate.block_diffusion_generate(
                        re, prompt={"input_ids": torch.tensor([gprompt])}, mask_id=mask, gen_length=8,
                        block_length=4, denoising_steps=4, temperature=1.0, top_k=top_k, top_p=1.0,
                        remasking_strategy=strategy,
                        confidence_threshold=thr if thr is not None else 0.85,
                        stopping_criteria_idx=stop)
            finally:
                sdar_generate.sample_with_temperature_topk_topp = orig_sampler
            calls = rec.close()
            cases.append({"prompt_ids": gprompt, "settings": settings, "output_ids": outx[0].tolist(),
                          "output_includes_prompt": True,
                          "portable": not (top_k == 1 and strategy != "sequential"),
                          "portable_note": "all confidences are 1.0, so the commit order is torch.topk's "
                                           "CPU tie order (not leftmost-first): do not use for parity"
                          if (top_k == 1 and strategy != "sequential") else "deterministic, no ties",
                          "output_note": "whole canvas, padded up to a multiple of block_length; "
                                         "blocks after a stop token stay MASK",
                          "forward_calls": calls})
        write_json(d / "golden_generate.json", cases)
    return re


# ----------------------------------------------------------------------------------------------
# chat templates
# ----------------------------------------------------------------------------------------------
def rel_to(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def make_chat_golden(out: Path, published: Path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    cases = []
    for fam in ["llada", "dream", "sdar"]:
        t = AutoTokenizer.from_pretrained(str(out / fam))
        for name, msgs in CHAT_MESSAGES.items():
            text = t.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            cases.append({"template": fam, "tokenizer_config": f"{fam}/tokenizer_config.json",
                          "messages": name, "add_generation_prompt": True, "text": text,
                          "input_ids": t(text, add_special_tokens=False)["input_ids"]})
    # published SDAR-4B-Chat tokenizer_config.json (rendering needs only its template + tokens)
    ptc = json.loads((published / "tokenizer_config.json").read_text())
    kwargs = {k: ptc[k] for k in ("eos_token", "pad_token", "bos_token", "unk_token") if k in ptc}
    pt = PreTrainedTokenizerFast(tokenizer_file=str(out / "sdar" / "tokenizer.json"),
                                 chat_template=ptc["chat_template"], **kwargs)
    for name, msgs in CHAT_MESSAGES.items():
        text = pt.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        cases.append({"template": "sdar-4b-chat-published",
                      # Relative to tests/fixtures where it lies there, so the file travels.
                      "tokenizer_config": rel_to(published / "tokenizer_config.json", out),
                      "tokenizer_config_sha256": file_sha256(published / "tokenizer_config.json"),
                      "messages": name, "add_generation_prompt": True, "text": text})
    write_json(out / "chat_golden.json", {"messages": CHAT_MESSAGES, "cases": cases})


# ----------------------------------------------------------------------------------------------
def verify(out: Path):
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    for fam in ["llada", "dream", "dream-bf16", "sdar"]:
        d = out / fam
        cfg = json.loads((d / "config.json").read_text())
        t = Tokenizer.from_file(str(d / "tokenizer.json"))
        n = t.get_vocab_size(with_added_tokens=True)
        assert n == cfg["vocab_size"], (fam, n, cfg["vocab_size"])
        g = load_file(str(d / "golden.safetensors"))
        assert g["input_ids"].dtype == torch.int64 and g["raw_logits"].dtype == torch.float32
        # fresh reload with the reference class, compare with the stored golden logits
        if fam == "llada":
            from llada import LLaDAModelLM as C
            kw = {}
        elif fam.startswith("dream"):
            from dream import DreamModel as C
            kw = {"attn_implementation": "sdpa"}
        else:
            C = importlib.import_module("sdar.modeling_sdar").SDARForCausalLM
            kw = {}
        m = C.from_pretrained(str(d), dtype=torch.float32, **kw).eval()
        x = g["input_ids"][None]
        with torch.no_grad():
            if fam == "sdar":
                L = x.shape[1]
                pos = torch.arange(L)[None]
                check_close_exact(m(x, attention_mask=block_causal_mask(L, 4), position_ids=pos).logits[0],
                                  g["raw_logits"], "verify sdar B=4")
                check_close_exact(m(x, attention_mask=block_causal_mask(L, 8), position_ids=pos).logits[0],
                                  g["logits_b8"], "verify sdar B=8")
            else:
                check_close_exact(m(x).logits[0], g["raw_logits"], f"verify {fam}")
        log(f"verified {fam}: reloaded logits == golden (max abs diff 0); "
            f"tokenizer size {n} == vocab_size; golden tensors "
            + ", ".join(f"{k}{list(v.shape)}" for k, v in sorted(g.items())))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refcode", default="/tmp/refcode", type=Path,
                    help="directory holding the reference code (llada/, dream/, sdar/), outside the repo")
    ap.add_argument("--out", default=DEFAULT_OUT, type=Path)
    ap.add_argument("--published", default=DEFAULT_PUBLISHED, type=Path,
                    help="published SDAR-4B-Chat metadata folder (tokenizer_config.json)")
    ap.add_argument("--no-generate", action="store_true", help="skip the sampler goldens")
    args = ap.parse_args()

    prepare_refcode(args.refcode)
    import torch
    import transformers
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    out = args.out.resolve()
    published_tc = json.loads((args.published / "tokenizer_config.json").read_text())
    for fam in ["llada", "dream", "dream-bf16", "sdar"]:
        if (out / fam).exists():
            shutil.rmtree(out / fam)
        (out / fam).mkdir(parents=True)

    toks = {}
    for fam in ["llada", "dream", "sdar"]:
        tok, ids = build_tokenizer(fam)
        toks[fam] = (tok, ids)
        dirs = [out / fam] + ([out / "dream-bf16"] if fam == "dream" else [])
        for dd in dirs:
            tok.save(str(dd / "tokenizer.json"))
            write_json(dd / "tokenizer_config.json", tokenizer_config(fam, tok, ids, published_tc))
            write_json(dd / "generation_config.json", generation_config(fam, ids))
        log(fam, "special token ids:", ids)

    gen = not args.no_generate
    make_llada(out, *toks["llada"], gen)
    make_dream(out, *toks["dream"], gen)
    make_sdar(out, *toks["sdar"], gen)
    make_chat_golden(out, args.published)
    verify(out)
    write_json(out / "versions.json", {
        "python": sys.version.split()[0], "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": importlib.import_module("tokenizers").__version__,
        "safetensors": importlib.import_module("safetensors").__version__,
        "refcode_sha256": {p: file_sha256(args.refcode / p) for p in REQUIRED_REFCODE},
    })
    log("done")


if __name__ == "__main__":
    main()
