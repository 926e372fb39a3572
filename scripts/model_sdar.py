"""Minimal SDAR / Qwen3 block-diffusion model in PyTorch, matching the layout the Rust engine loads.

Same-position prediction (logits at i predict token i), Qwen3 math (RMSNorm in f32, per-head q/k norm
before NeoX rotate-half RoPE, GQA, SwiGLU MLP, final norm, lm_head tied to the embeddings, no biases).
Shared by train_embedded.py, sample_embedded.py and make_eval_prompts.py.
"""
import json
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

EOS_ID, MASK_ID, PAD_ID = 0, 1, 2

DEFAULT_CONFIG = {
    "architectures": ["SDARForCausalLM"], "model_type": "sdar", "vocab_size": 4096,
    "hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6,
    "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 64, "hidden_act": "silu",
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "attention_bias": False, "tie_word_embeddings": True, "torch_dtype": "float16",
    "block_size": 8, "mask_token_id": MASK_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID,
    "bos_token_id": None,
}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dt)


def rope_cos_sin(positions, head_dim, theta, dtype):
    # inv_freq_j = theta^(-2j/head_dim); emb = [f, f] (NeoX rotate-half layout)
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    f = positions.float()[..., None] * inv
    emb = torch.cat([f, f], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, A, K, D = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.A, self.K, self.D = A, K, D
        self.q_proj = nn.Linear(H, A * D, bias=False)
        self.k_proj = nn.Linear(H, K * D, bias=False)
        self.v_proj = nn.Linear(H, K * D, bias=False)
        self.o_proj = nn.Linear(A * D, H, bias=False)
        self.q_norm = RMSNorm(D, c["rms_norm_eps"])
        self.k_norm = RMSNorm(D, c["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        b, n, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, n, self.A, self.D)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, n, self.K, self.D)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.K, self.D).transpose(1, 2)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.A // self.K
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, n, self.A * self.D))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, I = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(H, I, bias=False)
        self.up_proj = nn.Linear(H, I, bias=False)
        self.down_proj = nn.Linear(I, H, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class SDAR(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = dict(c)
        self.model = Backbone(c)
        std = 0.02
        for n, p in self.named_parameters():
            if p.dim() == 2:
                s = std / math.sqrt(2 * c["num_hidden_layers"]) if n.endswith(("o_proj.weight", "down_proj.weight")) else std
                nn.init.normal_(p, 0.0, s)

    def hidden(self, ids, positions, mask):
        """ids [b,n] long, positions [n] or [b,n], mask bool [n,n] / [b,1,n,n] (True = attend)."""
        c = self.config
        x = self.model.embed_tokens(ids)
        cos, sin = rope_cos_sin(positions, c["head_dim"], c["rope_theta"], torch.float32)
        if cos.dim() == 2:
            cos, sin = cos[None, None], sin[None, None]
        else:
            cos, sin = cos[:, None], sin[:, None]
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        return self.model.norm(x)

    def logits(self, h):
        return F.linear(h, self.model.embed_tokens.weight)  # tied lm_head

    def forward(self, ids, positions, mask):
        return self.logits(self.hidden(ids, positions, mask))


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def block_causal_mask(n, B, device=None):
    """query i attends key j iff j // B <= i // B (absolute indices)."""
    blk = torch.arange(n, device=device) // B
    return blk[None, :] <= blk[:, None]


def export_hf(model, outdir, tokenizer_path=None, extra_config=None):
    """Write config.json + model.safetensors (f16, tied: no lm_head.weight) in the SDAR/Qwen3 layout."""
    from safetensors.torch import save_file
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    assert not any(k.startswith("lm_head") for k in sd)
    save_file(sd, str(outdir / "model.safetensors"), metadata={"format": "pt"})
    cfg = dict(DEFAULT_CONFIG)
    for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta"):
        cfg[k] = model.config[k]
    if extra_config:
        cfg.update(extra_config)
    (outdir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if tokenizer_path:
        (outdir / "tokenizer.json").write_bytes(Path(tokenizer_path).read_bytes())
    return outdir


def load_hf(path, device="cpu", dtype=torch.float32):
    from safetensors.torch import load_file
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    model = SDAR(cfg)
    sd = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.to(device, dtype).eval()
