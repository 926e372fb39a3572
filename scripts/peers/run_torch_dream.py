# The reference PyTorch Dream `diffusion_generate` (the remote code in the model folder) on the CPU,
# for scripts/bench-peers.sh. It does only what the timed run needs: load, one generate, write the ids.
# The bench times the whole process, so no warm-up or extra forwards happen here.
# `--top_k none` is plain greedy confidence; without it transformers fills top_k = 50 from its
# generation-config default, which `--top_k model` keeps (the reference as its README calls it).
import argparse, json, os, time
ap = argparse.ArgumentParser()
ap.add_argument('--model', required=True)
ap.add_argument('--prompt', required=True)
ap.add_argument('--gen', type=int, default=256)
ap.add_argument('--steps', type=int, default=64)
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--temperature', type=float, default=0.0)
ap.add_argument('--top_p', type=float, default=1.0)
ap.add_argument('--top_k', default='none', help="none (no top-k), model (transformers' default 50) or N")
ap.add_argument('--eps', type=float, default=1e-3)
ap.add_argument('--dtype', default='float32')
ap.add_argument('--seed', type=int, default=0)
ap.add_argument('--ids-out', default=None, help='write prompt ids + generated ids as JSON')
a = ap.parse_args()
import torch
torch.set_num_threads(a.threads); torch.set_num_interop_threads(1)
from transformers import AutoModel, AutoTokenizer
tok = AutoTokenizer.from_pretrained(a.model)
model = AutoModel.from_pretrained(a.model, trust_remote_code=True, dtype=getattr(torch, a.dtype)).eval()
x = tok.apply_chat_template([{"role": "user", "content": a.prompt}], add_generation_prompt=True,
                            return_tensors='pt', return_dict=True)['input_ids']
n_in = x.shape[1]
kw = {}
if a.top_k == 'none':
    kw['top_k'] = None
elif a.top_k != 'model':
    kw['top_k'] = int(a.top_k)
torch.manual_seed(a.seed)
t0 = time.perf_counter()
out = model.diffusion_generate(x, attention_mask=None, max_new_tokens=a.gen, output_history=False,
                               return_dict_in_generate=True, steps=a.steps, temperature=a.temperature,
                               top_p=a.top_p, alg='maskgit_plus', alg_temp=0., eps=a.eps, **kw)
el = time.perf_counter() - t0
seq = out.sequences[0]
masks_left = int((seq[n_in:] == model.config.mask_token_id).sum())
print(f'RESULT n_input={n_in} steps={a.steps} gen={a.gen} decode_s={el:.2f} masks_left={masks_left}')
if a.ids_out:
    json.dump({'prompt_ids': [int(t) for t in x[0]], 'gen_ids': [int(t) for t in seq[n_in:]],
               'steps': a.steps, 'temperature': a.temperature, 'top_p': a.top_p, 'top_k': a.top_k,
               'decode_s': el}, open(a.ids_out, 'w'))
