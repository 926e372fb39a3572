#!/usr/bin/env python3
"""Train unmask's embedded SDAR-layout block-diffusion code model with Seed Diffusion's two-stage recipe.

Stage 1 (mask-based block diffusion, BD3-LM style 2L formulation):
  input = [x_t ; x] (2L tokens), positions = [0..L-1, 0..L-1], attention:
    noisy block b -> noisy block b (bidirectional) + clean blocks < b
    clean block b -> clean blocks <= b                (block-causal, exactly what inference sees)
  x_t masks every block at its own ratio t ~ U(eps, 1) (at least one mask per block);
  loss = mean cross-entropy over masked positions of the noisy half (NO 1/t weighting: plain token
  mean, lower variance for a small model). Block size B drawn per step from --blocks/--block-weights.
Stage 2 (edit-based, continues from stage 1): each block is, with probability --edit-prob, corrupted by
  random substitutions / insertions / deletions at a per-block Levenshtein rate r ~ U(0, --edit-rate-max)
  (expected #edits ~ r*B, at least one effective change); the block is re-cut to length B (an insertion
  pushes the last token out, a deletion pulls the next original token in), then additionally masked at a
  ratio U(0, --edit-mask-max). Target = original clean block; loss covers EVERY position of such blocks.
  Other blocks stay mask-based as in stage 1.
Fill-in-the-middle (--fim-rate, both stages): that share of training windows is rearranged suffix first,
  <|fim_suffix|> S <|fim_prefix|> P <|fim_middle|> M <|endoftext|>  (scripts/fim.py, same as unmask's src/fim.rs),
  before the noise; the tokenizer gains the three sentinels after its last id, the embedding their rows (the
  mean embedding when starting from a checkpoint without them, --init), config.json says "fim_layout".
Both stages stop at a step budget or a wall-clock deadline (whichever first); cosine LR follows
max(step progress, time progress). Runs on CPU (f32) and CUDA (bf16 autocast). Resumable (--resume).
"""
import argparse, json, lzma, math, os, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_sdar import DEFAULT_CONFIG, EOS_ID, MASK_ID, SDAR, export_hf, num_params  # noqa: E402
import fim  # noqa: E402

FIRST_NORMAL = 3  # ids 0,1,2 are <|endoftext|>, <|mask|>, <|pad|>
EXTRA = 32        # tokens read past the window so deletions can pull in following tokens


def load_tokens(path):
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".xz":
        raw = lzma.decompress(raw)
    return np.frombuffer(raw, dtype=np.uint16).copy()


def two_l_mask(L, B, device):
    n = 2 * L
    i = torch.arange(n, device=device)
    clean = i >= L
    blk = (i % L) // B
    qb, kb = blk[:, None], blk[None, :]
    noisy_q, clean_k = ~clean[:, None], clean[None, :]
    allow = torch.where(noisy_q, torch.where(clean_k, kb < qb, kb == qb), clean_k & (kb <= qb))
    return allow


class Noiser:
    def __init__(self, vocab, eps=1e-3):
        self.V, self.eps = vocab, eps

    def mask_based(self, x0, B, g):
        b, L = x0.shape
        nb = L // B
        t = torch.rand(b, nb, 1, device=x0.device, generator=g) * (1 - self.eps) + self.eps
        m = torch.rand(b, nb, B, device=x0.device, generator=g) < t
        none = ~m.any(-1)
        r = torch.randint(0, B, (b, nb), device=x0.device, generator=g)
        m = m | (none[..., None] & (torch.arange(B, device=x0.device) == r[..., None]))
        return m.view(b, L)

    def random_tokens(self, x0, shape, g):
        dev = x0.device
        uni = torch.randint(FIRST_NORMAL, self.V, shape, device=dev, generator=g)
        b, L = x0.shape
        pos = torch.randint(0, L, shape, device=dev, generator=g)
        rows = torch.arange(b, device=dev).view(b, *([1] * (len(shape) - 1))).expand(shape)
        ctx = x0[rows, pos]
        ctx = torch.where(ctx < FIRST_NORMAL, uni, ctx)
        pick = torch.rand(shape, device=dev, generator=g) < 0.5
        return torch.where(pick, uni, ctx)

    def edit_based(self, x, L, B, rate_max, mask_max, g):
        """x: [b, L+EXTRA] clean. Returns edited (and partly masked) noisy tokens [b, L]."""
        dev = x.device
        b = x.shape[0]
        nb = L // B
        W = 2 * B
        starts = torch.arange(nb, device=dev) * B
        idx = starts[:, None] + torch.arange(W, device=dev)[None, :]          # [nb, W]
        src = x[:, idx]                                                        # [b, nb, W]
        r = torch.rand(b, nb, 1, device=dev, generator=g) * rate_max
        p = r / 3
        inblk = (torch.arange(W, device=dev) < B)[None, None, :]
        dele = (torch.rand(b, nb, W, device=dev, generator=g) < p) & inblk
        ins = (torch.rand(b, nb, W, device=dev, generator=g) < p) & inblk
        cnt = ins.long() + (~dele).long()
        off = torch.cumsum(cnt, -1) - cnt
        trash = torch.full_like(off, B)
        out = torch.zeros(b, nb, B + 1, dtype=x.dtype, device=dev)
        rt = self.random_tokens(x[:, :L], (b, nb, W), g)
        out.scatter_(-1, torch.where(ins, off, trash).clamp(max=B), rt)
        out.scatter_(-1, torch.where(~dele, off + ins.long(), trash).clamp(max=B), src)
        out = out[..., :B]
        sub = torch.rand(b, nb, B, device=dev, generator=g) < p
        out = torch.where(sub, self.random_tokens(x[:, :L], (b, nb, B), g), out)
        orig = src[..., :B]
        unchanged = (out == orig).all(-1)                                      # force >= 1 change
        rp = torch.randint(0, B, (b, nb), device=dev, generator=g)
        at = torch.arange(B, device=dev) == rp[..., None]
        shift = torch.randint(1, self.V - FIRST_NORMAL, (b, nb, B), device=dev, generator=g)
        alt = FIRST_NORMAL + (orig.clamp(min=FIRST_NORMAL) - FIRST_NORMAL + shift) % (self.V - FIRST_NORMAL)
        out = torch.where(unchanged[..., None] & at, alt, out)
        t2 = torch.rand(b, nb, 1, device=dev, generator=g) * mask_max
        mk = torch.rand(b, nb, B, device=dev, generator=g) < t2
        out = torch.where(mk, torch.full_like(out, MASK_ID), out)
        return out.view(b, L)


def make_batch(x, L, B, stage, noiser, args, g):
    """x: [b, L+EXTRA]. Returns noisy [b,L], loss mask [b,L], kind [b,L] (0 none, 1 masked, 2 edited)."""
    x0 = x[:, :L]
    m = noiser.mask_based(x0, B, g)
    xt = torch.where(m, torch.full_like(x0, MASK_ID), x0)
    kind = m.long()
    if stage == 2 and args.edit_prob > 0:
        b = x.shape[0]
        e = (torch.rand(b, L // B, 1, device=x.device, generator=g) < args.edit_prob).expand(b, L // B, B).reshape(b, L)
        xe = noiser.edit_based(x, L, B, args.edit_rate_max, args.edit_mask_max, g)
        xt = torch.where(e, xe, xt)
        kind = torch.where(e, torch.full_like(kind, 2), kind)
    return xt, kind > 0, kind


def forward_loss(model, x, L, B, stage, noiser, args, g, masks, device, autocast):
    x0 = x[:, :L]
    xt, lm, kind = make_batch(x, L, B, stage, noiser, args, g)
    key = (L, B)
    if key not in masks:
        masks[key] = two_l_mask(L, B, device)
    pos = torch.cat([torch.arange(L, device=device)] * 2)
    inp = torch.cat([xt, x0], 1)
    with autocast():
        h = model.hidden(inp, pos, masks[key])[:, :L]
        logits = model.logits(h[lm]).float()
    tgt = x0[lm]
    ce = F.cross_entropy(logits, tgt, reduction="none")
    return ce, kind[lm], xt[lm], tgt, logits


def lr_at(peak, step, warmup, prog, min_frac):
    w = min(1.0, (step + 1) / max(1, warmup))
    prog = min(1.0, max(0.0, prog))
    return peak * w * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * prog)))


@torch.no_grad()
def evaluate(model, held, args, device, autocast, masks, noiser, stage_for_edit=True):
    """Deterministic held-out metrics: masked-token CE at several block sizes, edit-block metrics at B=8."""
    model.eval()
    L = args.eval_len
    g = torch.Generator(device=device).manual_seed(1234)
    n = held.numel()
    offs = torch.linspace(0, n - (L + EXTRA) - 1, args.eval_seqs).long().to(device)
    xs = held[offs[:, None] + torch.arange(L + EXTRA, device=device)[None]].long()
    res = {}
    bs = args.eval_batch
    for B in (4, 8, 32):
        tot, cnt = 0.0, 0
        for i in range(0, xs.shape[0], bs):
            ce, *_ = forward_loss(model, xs[i:i + bs], L, B, 1, noiser, args, g, masks, device, autocast)
            tot += ce.sum().item(); cnt += ce.numel()
        res[f"heldout_mask_loss_B{B}"] = tot / cnt
    if stage_for_edit:
        class A:  # edit-only corruption for the edit metrics
            edit_prob = 1.0
            edit_rate_max = args.edit_rate_max
            edit_mask_max = 0.0
        tot = cnt = fix_n = fix_ok = keep_n = keep_ok = 0
        for i in range(0, xs.shape[0], bs):
            ce, kind, inp, tgt, logits = forward_loss(model, xs[i:i + bs], L, 8, 2, noiser, A, g, masks, device, autocast)
            pred = logits.argmax(-1)
            wrong = (inp != tgt) & (inp != MASK_ID)
            right = inp == tgt
            tot += ce.sum().item(); cnt += ce.numel()
            fix_n += wrong.sum().item(); fix_ok += (pred[wrong] == tgt[wrong]).sum().item()
            keep_n += right.sum().item(); keep_ok += (pred[right] == tgt[right]).sum().item()
        res["heldout_edit_loss_B8"] = tot / max(1, cnt)
        res["heldout_edit_fix_acc_B8"] = fix_ok / max(1, fix_n)    # corrupted token -> original
        res["heldout_edit_keep_acc_B8"] = keep_ok / max(1, keep_n)  # correct token kept
    model.train()
    return res


def split_file(path, outdir, prefix, mb):
    data = Path(path).read_bytes()
    step = int(mb * 1024 * 1024)
    names = []
    for k in range(0, len(data), step):
        p = Path(outdir) / f"{prefix}.part{k // step:02d}"
        p.write_bytes(data[k:k + step])
        names.append(p.name)
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".device/tokens", help="folder with train.u16[.xz] and heldout.u16[.xz]")
    ap.add_argument("--out", default="data/runs/embedded")
    ap.add_argument("--ship", default=None, help="also write split f16 weights + logs here (device $OUT)")
    ap.add_argument("--ship-mb", type=float, default=15)
    ap.add_argument("--tokenizer", default="assets/tokenizer.json")
    ap.add_argument("--resume", default=None, help="checkpoint .pt to resume from")
    ap.add_argument("--init", default=None,
                    help="model folder (config.json + model.safetensors, e.g. assets) whose weights start the run; "
                         "its shape replaces the model flags")
    ap.add_argument("--fim-rate", type=float, default=0.0,
                    help="share of windows rearranged for fill-in-the-middle (0 = off; recommended 0.5)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    # model
    ap.add_argument("--hidden", type=int, default=DEFAULT_CONFIG["hidden_size"])
    ap.add_argument("--layers", type=int, default=DEFAULT_CONFIG["num_hidden_layers"])
    ap.add_argument("--heads", type=int, default=DEFAULT_CONFIG["num_attention_heads"])
    ap.add_argument("--kv-heads", type=int, default=DEFAULT_CONFIG["num_key_value_heads"])
    ap.add_argument("--head-dim", type=int, default=DEFAULT_CONFIG["head_dim"])
    ap.add_argument("--intermediate", type=int, default=DEFAULT_CONFIG["intermediate_size"])
    # data / batches
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--long-seq-len", type=int, default=1024)
    ap.add_argument("--long-prob", type=float, default=0.25, help="share of steps at --long-seq-len")
    ap.add_argument("--batch-tokens", type=int, default=65536, help="clean tokens per step (x L, not 2L)")
    ap.add_argument("--blocks", default="1,2,4,8,16,32")
    ap.add_argument("--block-weights", default="1,1,2,2,1,1")
    # optimisation
    ap.add_argument("--lr1", type=float, default=2e-3)
    ap.add_argument("--lr2", type=float, default=6e-4)
    ap.add_argument("--warmup1", type=int, default=200)
    ap.add_argument("--warmup2", type=int, default=50)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--stage1-steps", type=int, default=10**9)
    ap.add_argument("--stage1-seconds", type=float, default=360)
    ap.add_argument("--stage2-steps", type=int, default=10**9)
    ap.add_argument("--stage2-seconds", type=float, default=150)
    ap.add_argument("--deadline-seconds", type=float, default=10**9,
                    help="hard wall-clock budget for the whole script (stage 2 is shortened to fit)")
    ap.add_argument("--reserve-seconds", type=float, default=25, help="kept free for final eval/export")
    # stage 2
    ap.add_argument("--edit-prob", type=float, default=0.25)
    ap.add_argument("--edit-rate-max", type=float, default=0.3)
    ap.add_argument("--edit-mask-max", type=float, default=0.5)
    # logging / eval
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--eval-seqs", type=int, default=64)
    ap.add_argument("--eval-len", type=int, default=512)
    ap.add_argument("--eval-batch", type=int, default=32)
    ap.add_argument("--ckpt-every-seconds", type=float, default=180)
    args = ap.parse_args()

    t_start = time.time()
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else (lambda: torch.autocast("cpu", enabled=False))

    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    ship = Path(args.ship) if args.ship else None
    if ship:
        ship.mkdir(parents=True, exist_ok=True)
    logf = open(out / "train_log.jsonl", "a")

    def log(row):
        row = {"t": round(time.time() - t_start, 2), **row}
        logf.write(json.dumps(row) + "\n"); logf.flush()
        print(json.dumps(row), flush=True)

    data = Path(args.data)
    def find(stem):
        for s in (".u16", ".u16.xz"):
            if (data / (stem + s)).exists():
                return data / (stem + s)
        raise FileNotFoundError(data / stem)
    t0 = time.time()
    train = torch.from_numpy(load_tokens(find("train")).astype(np.int32)).to(dev)
    held = torch.from_numpy(load_tokens(find("heldout")).astype(np.int32)).to(dev)
    log({"event": "data", "train_tokens": train.numel(), "heldout_tokens": held.numel(),
         "load_s": round(time.time() - t0, 2), "device": str(dev),
         "gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__})

    if not 0.0 <= args.fim_rate <= 1.0:
        raise SystemExit(f"--fim-rate {args.fim_rate} must be between 0 and 1")
    if args.init and args.resume:
        raise SystemExit("--init starts a new run from a model's weights and --resume continues one: give one")
    cfg = dict(DEFAULT_CONFIG)
    cfg.update(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
               num_key_value_heads=args.kv_heads, head_dim=args.head_dim, intermediate_size=args.intermediate)
    init_sd = None
    if args.init:
        from safetensors.torch import load_file
        cfg.update(json.loads((Path(args.init) / "config.json").read_text()))
        init_sd = {k: v.float() for k, v in load_file(str(Path(args.init) / "model.safetensors")).items()}
        if any(k.startswith("lm_head") for k in init_sd):
            raise SystemExit(f"{args.init}: an untied lm_head.weight; this trainer trains the tied layout only")
    fim_ids, tok_path = None, args.tokenizer
    if args.fim_rate > 0:
        text, fim_ids = fim.grown_tokenizer(args.tokenizer)
        tok_path = out / "tokenizer.json"
        tok_path.write_text(text, encoding="utf-8")
        if args.seq_len < 2 * fim.OVERHEAD:
            raise SystemExit(f"--fim-rate needs --seq-len of at least {2 * fim.OVERHEAD}")
        cfg["vocab_size"] = max(cfg["vocab_size"], max(fim_ids.values()) + 1)
        cfg["fim_layout"] = fim.LAYOUT
    model = SDAR(cfg).to(dev)
    if init_sd is not None:
        emb = "model.embed_tokens.weight"
        w = init_sd[emb]
        if w.shape[0] < cfg["vocab_size"]:  # grown by the FIM sentinels: new rows = mean embedding
            init_sd[emb] = torch.cat([w, w.mean(0, keepdim=True).expand(cfg["vocab_size"] - w.shape[0], -1)], 0)
        model.load_state_dict(init_sd, strict=True)
    nparam = num_params(model)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr1, betas=(0.9, 0.95), eps=1e-8, fused=cuda)
    state = {"stage": 1, "step": 0, "global_step": 0, "tokens": 0, "stage_elapsed": 0.0}
    if args.resume:
        ck = torch.load(args.resume, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); state = ck["state"]
        log({"event": "resume", "from": args.resume, **state})
    log({"event": "model", "params": nparam, "config": cfg, "args": vars(args)})

    g = torch.Generator(device=dev).manual_seed(args.seed * 1000 + state["global_step"])
    gcpu = np.random.default_rng(args.seed * 1000 + state["global_step"])
    blocks = [int(b) for b in args.blocks.split(",")]
    bw = np.array([float(w) for w in args.block_weights.split(",")]); bw /= bw.sum()
    # Random replacement tokens are ordinary ones: the sentinels (the last ids) are left out.
    noiser = Noiser(min(fim_ids.values()) if fim_ids else cfg["vocab_size"])
    masks = {}

    def save_ckpt():
        tmp = out / "ckpt.pt.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state, "config": cfg}, tmp)
        os.replace(tmp, out / "ckpt.pt")

    def export(stage):
        d = export_hf(model, out / f"stage{stage}", tokenizer_path=tok_path if Path(tok_path).exists() else None,
                      extra_config={"fim_layout": fim.LAYOUT} if fim_ids else None)
        names = []
        if ship:
            names = split_file(d / "model.safetensors", ship, f"stage{stage}.safetensors", args.ship_mb)
            # The folder's small files too: a FIM run's config and tokenizer differ from assets/.
            (ship / f"stage{stage}.config.json").write_bytes((d / "config.json").read_bytes())
            if (d / "tokenizer.json").exists():
                (ship / "tokenizer.json").write_bytes((d / "tokenizer.json").read_bytes())
            (ship / "train_log.jsonl").write_bytes((out / "train_log.jsonl").read_bytes())
        log({"event": "export", "stage": stage, "dir": str(d), "bytes": (d / "model.safetensors").stat().st_size, "parts": names})

    model.train()
    summary = {"params": nparam, "config": cfg, "args": vars(args), "stages": {}}
    while state["stage"] <= 2:
        stage = state["stage"]
        peak = args.lr1 if stage == 1 else args.lr2
        warm = args.warmup1 if stage == 1 else args.warmup2
        max_steps = args.stage1_steps if stage == 1 else args.stage2_steps
        budget = args.stage1_seconds if stage == 1 else args.stage2_seconds
        # never run past the global deadline: keep reserve for the remaining evals/exports
        left = args.deadline_seconds - (time.time() - t_start) - args.reserve_seconds * (2 if stage == 1 else 1)
        budget = max(0.0, min(budget, state["stage_elapsed"] + left))
        t_stage = time.time() - state["stage_elapsed"]
        last_ck = time.time()
        win_tok, win_t, win_loss, win_n = 0, time.time(), 0.0, 0
        win_mask, win_mask_n, win_edit, win_edit_n = 0.0, 0, 0.0, 0
        log({"event": "stage_start", "stage": stage, "budget_s": round(budget, 1), "peak_lr": peak})
        while state["step"] < max_steps and (time.time() - t_stage) < budget:
            L = args.long_seq_len if (args.long_prob > 0 and gcpu.random() < args.long_prob) else args.seq_len
            B = int(gcpu.choice(blocks, p=bw))
            bsz = max(1, args.batch_tokens // L)
            offs = torch.randint(0, train.numel() - (L + EXTRA), (bsz,), device=dev, generator=g)
            x = train[offs[:, None] + torch.arange(L + EXTRA, device=dev)[None]].long()
            if args.fim_rate > 0:  # no draw at rate 0: batches stay exactly as without FIM
                rows = [r for r in range(bsz) if gcpu.random() < args.fim_rate]
                if rows:
                    draw = lambda a, b: int(gcpu.integers(a, b + 1))  # noqa: E731
                    fx = [fim.transform(w, L, EOS_ID, fim_ids, draw) for w in x[rows].tolist()]  # one transfer
                    x[rows] = torch.tensor(fx, dtype=x.dtype, device=dev)
            prog = max(state["step"] / max_steps, (time.time() - t_stage) / max(1e-9, budget))
            lr = lr_at(peak, state["step"], warm, prog, args.min_lr_frac)
            for pg in opt.param_groups:
                pg["lr"] = lr
            ce, kind, *_ = forward_loss(model, x, L, B, stage, noiser, args, g, masks, dev, autocast)
            loss = ce.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            state["step"] += 1; state["global_step"] += 1; state["tokens"] += bsz * L
            win_tok += bsz * L
            if state["step"] % args.log_every == 0 or state["step"] == 1:
                km = kind == 1; ke = kind == 2
                win_loss += loss.item(); win_n += 1
                win_mask += ce[km].sum().item(); win_mask_n += km.sum().item()
                win_edit += ce[ke].sum().item(); win_edit_n += ke.sum().item()
                now = time.time()
                row = {"event": "train", "stage": stage, "step": state["step"], "global_step": state["global_step"],
                       "tokens": state["tokens"], "lr": lr, "B": B, "L": L, "loss": win_loss / win_n,
                       "mask_loss": win_mask / max(1, win_mask_n), "grad_norm": float(gn),
                       "tok_per_s": round(win_tok / max(1e-9, now - win_t)), "stage_s": round(now - t_stage, 1)}
                if stage == 2:
                    row["edit_loss"] = win_edit / max(1, win_edit_n)
                log(row)
                win_tok, win_t, win_loss, win_n = 0, time.time(), 0.0, 0
                win_mask, win_mask_n, win_edit, win_edit_n = 0.0, 0, 0.0, 0
                if not math.isfinite(loss.item()):
                    raise RuntimeError("non-finite loss")
            if state["step"] % args.eval_every == 0:
                log({"event": "eval", "stage": stage, "step": state["step"], "tokens": state["tokens"],
                     **evaluate(model, held, args, dev, autocast, masks, noiser, stage_for_edit=False)})
            if time.time() - last_ck > args.ckpt_every_seconds:
                state["stage_elapsed"] = time.time() - t_stage
                save_ckpt(); last_ck = time.time()
        state["stage_elapsed"] = time.time() - t_stage
        ev = evaluate(model, held, args, dev, autocast, masks, noiser, stage_for_edit=True)
        log({"event": "eval", "stage": stage, "step": state["step"], "tokens": state["tokens"], "final": True, **ev})
        summary["stages"][stage] = {"steps": state["step"], "tokens": state["tokens"],
                                    "seconds": round(state["stage_elapsed"], 1), "eval": ev}
        export(stage)
        state = {"stage": stage + 1, "step": 0, "global_step": state["global_step"], "tokens": state["tokens"],
                 "stage_elapsed": 0.0}
        save_ckpt()
    summary["wall_s"] = round(time.time() - t_start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if ship:
        (ship / "summary.json").write_text(json.dumps(summary, indent=1))
        (ship / "train_log.jsonl").write_bytes((out / "train_log.jsonl").read_bytes())
    log({"event": "done", "wall_s": summary["wall_s"]})


if __name__ == "__main__":
    main()
