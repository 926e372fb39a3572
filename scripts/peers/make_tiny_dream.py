# Build a small random-initialised Dream (DreamModel, Qwen2-like) HF folder: the peer benchmark's model.
# usage (PEERS set, $PEERS/fastdllm and $PEERS/tok_test made by scripts/peers/setup.sh): python make_tiny_dream.py OUT
import json, os, shutil, sys, torch
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get('PEERS', 'peers'), 'tiny-dream')
SRC = os.path.join(os.environ.get('PEERS', 'peers'), 'fastdllm/dream/model')   # Dream remote-code files (copy in NVlabs/Fast-dLLM)
TOK = os.path.join(os.environ.get('PEERS', 'peers'), 'tok_test')
os.makedirs(OUT, exist_ok=True)
for f in ('configuration_dream.py', 'modeling_dream.py', 'generation_utils.py'):
    shutil.copy(os.path.join(SRC, f), OUT)
for f in ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'):
    shutil.copy(os.path.join(TOK, f), OUT)
cfg = {
  "architectures": ["DreamModel"],
  "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
  "model_type": "Dream",
  "attention_dropout": 0.0, "hidden_act": "silu",
  "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
  "num_attention_heads": 8, "num_key_value_heads": 2,
  "vocab_size": 152064, "max_position_embeddings": 131072, "max_window_layers": 8,
  "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
  "sliding_window": None, "use_sliding_window": False, "tie_word_embeddings": False,
  "initializer_range": 0.02, "use_cache": False,
  "bos_token_id": 151643, "eos_token_id": 151643, "pad_token_id": 151643, "mask_token_id": 151666,
  "torch_dtype": "float32", "transformers_version": "4.57.6",
}
json.dump(cfg, open(os.path.join(OUT, 'config.json'), 'w'), indent=2)
json.dump({"bos_token_id": 151643, "eos_token_id": 151643, "pad_token_id": 151643, "mask_token_id": 151666,
           "_from_model_config": True, "transformers_version": "4.57.6"},
          open(os.path.join(OUT, 'generation_config.json'), 'w'), indent=2)

sys.path.insert(0, OUT)
from transformers import AutoConfig, AutoModel
torch.manual_seed(0)
config = AutoConfig.from_pretrained(OUT, trust_remote_code=True)
model = AutoModel.from_config(config, trust_remote_code=True, torch_dtype=torch.float32)
# random init: N(0, 0.02) for all Linear/Embedding weights (post_init does this); give q/k/v biases small noise
with torch.no_grad():
    for n, p in model.named_parameters():
        if n.endswith('bias'):
            p.normal_(0, 0.02)
n_params = sum(p.numel() for p in model.parameters())
print('params', n_params)
model.save_pretrained(OUT, safe_serialization=True)
# save_pretrained may drop/rewrite auto_map; make sure config.json still points to local code
c = json.load(open(os.path.join(OUT, 'config.json')))
c['auto_map'] = cfg['auto_map']; c['architectures'] = ['DreamModel']
json.dump(c, open(os.path.join(OUT, 'config.json'), 'w'), indent=2)
print(sorted(os.listdir(OUT)))
