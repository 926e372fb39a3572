#!/usr/bin/env python3
"""Cross-check: our PyTorch SDAR forward == transformers Qwen3ForCausalLM (tied) under an additive block-causal mask.
Needs transformers (>= 4.51). Usage: python3 scripts/check_against_qwen3.py  (reads assets/)"""
import sys, json, torch
sys.path.insert(0, 'scripts')
from model_sdar import load_hf, block_causal_mask
from transformers import Qwen3Config, Qwen3ForCausalLM
from safetensors.torch import load_file
cfg = json.load(open('assets/config.json'))
m = load_hf('assets')
qc = Qwen3Config(vocab_size=cfg['vocab_size'], hidden_size=cfg['hidden_size'], intermediate_size=cfg['intermediate_size'],
    num_hidden_layers=cfg['num_hidden_layers'], num_attention_heads=cfg['num_attention_heads'], num_key_value_heads=cfg['num_key_value_heads'],
    head_dim=cfg['head_dim'], max_position_embeddings=1024, rms_norm_eps=cfg['rms_norm_eps'], rope_theta=cfg['rope_theta'],
    tie_word_embeddings=True, attention_bias=False, torch_dtype=torch.float32)
qc._attn_implementation = 'eager'
q = Qwen3ForCausalLM(qc)
sd = {k: v.float() for k, v in load_file('assets/model.safetensors').items()}
missing, unexpected = q.load_state_dict(sd, strict=False); print('missing', missing, 'unexpected', unexpected)
q.tie_weights(); q.eval()
n, B = 40, 8
ids = torch.randint(3, 4096, (1, n)); ids[0, 30:] = 1
allow = block_causal_mask(n, B)
add = torch.zeros(1, 1, n, n).masked_fill(~allow, float('-inf'))
with torch.no_grad():
    a = m(ids, torch.arange(n), allow)
    b = q(input_ids=ids, attention_mask=add, position_ids=torch.arange(n)[None]).logits
print('max abs diff', (a - b).abs().max().item(), 'logit std', a.std().item())
