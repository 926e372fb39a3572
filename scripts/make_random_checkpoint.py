#!/usr/bin/env python3
"""Random-weight checkpoints with the published shapes of SDAR-1.7B-Chat and Dream-7B, in the real
Hugging Face layout (config.json, sharded bf16 safetensors + index, tokenizer files), for GPU speed
and memory benchmarks: the weights are noise, so only timings and memory mean anything.

Usage: python3 make_random_checkpoint.py {sdar-1.7b|dream-7b} OUT_DIR [--tokenizer assets/tokenizer.json]
Needs torch and safetensors (both on the GPU machine). Tensors are drawn on the GPU when one is there.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

SHAPES = {
    # dllm-inference.md §4.1 (1.7B geometry, marked secondary there) and the published SDAR-4B config.
    "sdar-1.7b": dict(arch="SDARForCausalLM", model_type="sdar", hidden=2048, layers=28, heads=16, kv=8,
                      head_dim=128, inter=6144, vocab=151936, tied=True, bias=False, qk_norm=True,
                      mask=151669, eos=[151643, 151645], block_size=4),
    # dllm-inference.md §3.1: Qwen2.5-7B geometry.
    "dream-7b": dict(arch="DreamModel", model_type="Dream", hidden=3584, layers=28, heads=28, kv=4,
                     head_dim=128, inter=18944, vocab=152064, tied=False, bias=True, qk_norm=False,
                     mask=151666, eos=[151643], block_size=None),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--tokenizer", default="assets/tokenizer.json")
    ap.add_argument("--shard-gb", type=float, default=4.0)
    a = ap.parse_args()
    s = SHAPES[a.shape]
    os.makedirs(a.out, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=dev).manual_seed(0)
    h, hd = s["hidden"], s["head_dim"]
    shapes = {"model.embed_tokens.weight": (s["vocab"], h), "model.norm.weight": (h,)}
    if not s["tied"]:
        shapes["lm_head.weight"] = (s["vocab"], h)
    for i in range(s["layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (s["heads"] * hd, h), p + "self_attn.k_proj.weight": (s["kv"] * hd, h),
            p + "self_attn.v_proj.weight": (s["kv"] * hd, h), p + "self_attn.o_proj.weight": (h, s["heads"] * hd),
            p + "mlp.gate_proj.weight": (s["inter"], h), p + "mlp.up_proj.weight": (s["inter"], h),
            p + "mlp.down_proj.weight": (h, s["inter"]),
        })
        if s["bias"]:
            shapes.update({p + "self_attn.q_proj.bias": (s["heads"] * hd,), p + "self_attn.k_proj.bias": (s["kv"] * hd,),
                           p + "self_attn.v_proj.bias": (s["kv"] * hd,)})
        if s["qk_norm"]:
            shapes.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    # Shard in order, as the hub does.
    shards, cur, size = [], {}, 0
    for name, shp in shapes.items():
        n = 1
        for d in shp:
            n *= d
        if cur and size + 2 * n > a.shard_gb * 1e9:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = shp
        size += 2 * n
    shards.append(cur)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for name, shp in shard.items():
            if len(shp) == 1:
                t = 1.0 + 0.02 * torch.randn(shp, generator=g, device=dev)
            else:
                t = torch.randn(shp, generator=g, device=dev) * (1.0 / shp[-1] ** 0.5)
            tensors[name] = t.to(torch.bfloat16).cpu().contiguous()
            total += 2 * t.numel()
            weight_map[name] = fname
        save_file(tensors, os.path.join(a.out, fname), metadata={"format": "pt"})
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
              open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
    cfg = {"architectures": [s["arch"]], "model_type": s["model_type"], "vocab_size": s["vocab"],
           "hidden_size": h, "intermediate_size": s["inter"], "num_hidden_layers": s["layers"],
           "num_attention_heads": s["heads"], "num_key_value_heads": s["kv"], "head_dim": hd,
           "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
           "rope_theta": 1000000.0, "tie_word_embeddings": s["tied"], "torch_dtype": "bfloat16",
           "mask_token_id": s["mask"], "eos_token_id": s["eos"], "attention_bias": s["bias"]}
    if s["block_size"]:
        cfg["block_size"] = s["block_size"]
    json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    # Any tokenizer no larger than the vocabulary: the benchmark feeds token ids directly.
    shutil.copy(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
    print(f"{a.shape}: {len(shapes)} tensors, {total / 1e9:.2f} GB bf16 in {len(shards)} shards at {a.out}")


if __name__ == "__main__":
    main()
