//! The SDAR / Qwen3 block-diffusion network written for training: every op used here has a
//! backward pass in candle 0.11 (matmul, broadcast arithmetic, exp/log/sqrt, narrow/cat,
//! index_select, gather, sums). The fused kernels the inference path uses (`rope`,
//! `softmax_last_dim`, `rms_norm`) are avoided because their custom ops have no `bwd`.
//!
//! Parameter names are exactly those of `assets/model.safetensors`, so a `VarMap` saved from
//! here loads through the ordinary checkpoint loader (tied lm_head: no `lm_head.weight`).

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Init, VarBuilder, VarMap};

/// Shape of the network (the fields of `config.json` that matter for training).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
}

impl NetConfig {
    /// The embedded model's shape (`assets/config.json`).
    pub fn real() -> Self {
        NetConfig {
            vocab_size: 4096,
            hidden_size: 384,
            intermediate_size: 1024,
            num_hidden_layers: 6,
            num_attention_heads: 6,
            num_key_value_heads: 2,
            head_dim: 64,
            max_position_embeddings: 1024,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
        }
    }

    /// A few-second config for tests and smoke runs.
    pub fn tiny() -> Self {
        NetConfig {
            vocab_size: 4096,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 16,
            max_position_embeddings: 1024,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
        }
    }

    /// A `config.json` the inference loader reads as an SDAR checkpoint.
    /// `fim`: the checkpoint was trained for fill-in-the-middle (`crate::fim`) and says so.
    pub fn to_hf_json(&self, block_size: usize, fim: bool) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": ["SDARForCausalLM"], "model_type": "sdar",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
            "hidden_act": "silu", "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "attention_bias": false, "tie_word_embeddings": true, "torch_dtype": "float32",
            "block_size": block_size, "mask_token_id": super::MASK_ID,
            "eos_token_id": super::EOS_ID, "pad_token_id": super::PAD_ID, "bos_token_id": null
        });
        if fim {
            v["fim_layout"] = crate::fim::LAYOUT.into();
        }
        v
    }
}

struct Layer {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// The trainable network; its tensors are the `Var`s of the `VarMap` it was built from.
pub struct Net {
    pub cfg: NetConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
}

/// `y = x Wᵀ` for a `[out, in]` weight, on `[.., in]` inputs.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner;
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(0)?;
    y.reshape(out)
}

/// RMSNorm over the last dim from basic ops (the fused kernel has no backward).
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (ms + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(w)
}

/// NeoX rotate-half RoPE: `x·cos + rotate_half(x)·sin`, with `cos`/`sin` of shape `[n, D]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let h = d / 2;
    let x1 = x.narrow(D::Minus1, 0, h)?;
    let x2 = x.narrow(D::Minus1, h, h)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rot.broadcast_mul(sin)?
}

/// Softmax over the last dim from exp/sum; the row max is detached (it only stabilises).
fn softmax(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

impl Net {
    /// Creates (or, when the names already exist in `vm`, reuses) every parameter.
    pub fn new(cfg: &NetConfig, vm: &VarMap, device: &Device) -> Result<Self> {
        let vb = VarBuilder::from_varmap(vm, DType::F32, device);
        // Same initialisation as scripts/model_sdar.py: N(0, 0.02) matrices, unit norms.
        let normal = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let ones = Init::Const(1.0);
        let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
        let (a, k) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let embed = vb.get_with_hints((cfg.vocab_size, h), "model.embed_tokens.weight", normal)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            layers.push(Layer {
                input_norm: vb.get_with_hints(h, &p("input_layernorm.weight"), ones)?,
                q: vb.get_with_hints((a * d, h), &p("self_attn.q_proj.weight"), normal)?,
                k: vb.get_with_hints((k * d, h), &p("self_attn.k_proj.weight"), normal)?,
                v: vb.get_with_hints((k * d, h), &p("self_attn.v_proj.weight"), normal)?,
                o: vb.get_with_hints((h, a * d), &p("self_attn.o_proj.weight"), normal)?,
                q_norm: vb.get_with_hints(d, &p("self_attn.q_norm.weight"), ones)?,
                k_norm: vb.get_with_hints(d, &p("self_attn.k_norm.weight"), ones)?,
                post_norm: vb.get_with_hints(h, &p("post_attention_layernorm.weight"), ones)?,
                gate: vb.get_with_hints((i, h), &p("mlp.gate_proj.weight"), normal)?,
                up: vb.get_with_hints((i, h), &p("mlp.up_proj.weight"), normal)?,
                down: vb.get_with_hints((h, i), &p("mlp.down_proj.weight"), normal)?,
            });
        }
        let norm = vb.get_with_hints(h, "model.norm.weight", ones)?;
        Ok(Net {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
        })
    }

    /// Final hidden states `[b, n, hidden]` of `ids` (`[b, n]` u32) at `positions` (`n`), with an
    /// additive attention bias `[n, n]` (0 = allowed, large negative = blocked).
    pub fn hidden(&self, ids: &Tensor, positions: &[usize], bias: &Tensor) -> Result<Tensor> {
        let (b, n) = ids.dims2()?;
        let c = &self.cfg;
        let (a, kh, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let dev = ids.device();
        let half = d / 2;
        let inv: Vec<f32> = (0..half)
            .map(|j| 1.0 / (c.rope_theta as f32).powf(2.0 * j as f32 / d as f32))
            .collect();
        let mut ang = Vec::with_capacity(n * d);
        for &p in positions {
            // [f, f]: the rotate-half layout repeats the frequencies over both halves.
            for _ in 0..2 {
                ang.extend(inv.iter().map(|f| p as f32 * f));
            }
        }
        let ang = Tensor::from_vec(ang, (n, d), dev)?;
        let (cos, sin) = (ang.cos()?, ang.sin()?);
        let scale = 1.0 / (d as f64).sqrt();
        let mut x =
            self.embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, n, c.hidden_size))?;
        for l in &self.layers {
            let hn = rms_norm(&x, &l.input_norm, c.rms_norm_eps)?;
            let q = linear(&hn, &l.q)?.reshape((b, n, a, d))?;
            let k = linear(&hn, &l.k)?.reshape((b, n, kh, d))?;
            let v = linear(&hn, &l.v)?.reshape((b, n, kh, d))?;
            let q = rms_norm(&q, &l.q_norm, c.rms_norm_eps)?.transpose(1, 2)?;
            let k = rms_norm(&k, &l.k_norm, c.rms_norm_eps)?.transpose(1, 2)?;
            let v = v.transpose(1, 2)?;
            let q = rope(&q, &cos, &sin)?.contiguous()?;
            let k = rope(&k, &cos, &sin)?;
            // GQA: each key/value head serves `a / kh` query heads.
            let rep = a / kh;
            let k = k
                .unsqueeze(2)?
                .broadcast_as((b, kh, rep, n, d))?
                .reshape((b, a, n, d))?;
            let v = v
                .unsqueeze(2)?
                .broadcast_as((b, kh, rep, n, d))?
                .reshape((b, a, n, d))?;
            let s = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(bias)?;
            let y = softmax(&s)?.matmul(&v.contiguous()?)?;
            let y = y.transpose(1, 2)?.reshape((b, n, a * d))?;
            x = (x + linear(&y, &l.o)?)?;
            let h2 = rms_norm(&x, &l.post_norm, c.rms_norm_eps)?;
            let g = linear(&h2, &l.gate)?.silu()?;
            let u = linear(&h2, &l.up)?;
            x = (&x + linear(&(g * u)?, &l.down)?)?;
        }
        rms_norm(&x, &self.norm, c.rms_norm_eps)
    }

    /// Logits of hidden rows `[m, hidden]` through the tied head.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        h.matmul(&self.embed.t()?)
    }
}

/// Per-row cross-entropy `[m]` of logits `[m, V]` against `targets` (`[m]` u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let z = logits.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let tgt = z.gather(&targets.unsqueeze(1)?, 1)?;
    (lse - tgt)?.squeeze(1)
}

/// The 2L attention rule of BD3-LM (as `two_l_mask` in scripts/train_embedded.py), as an
/// additive bias over `[x_t ; x]`: a noisy block sees itself and the clean blocks before it;
/// a clean block sees the clean blocks up to itself.
pub fn two_l_bias(l: usize, block: usize, device: &Device) -> Result<Tensor> {
    let n = 2 * l;
    let mut v = vec![0f32; n * n];
    for qi in 0..n {
        let (qc, qb) = (qi >= l, (qi % l) / block);
        for ki in 0..n {
            let (kc, kb) = (ki >= l, (ki % l) / block);
            let allow = if qc {
                kc && kb <= qb
            } else if kc {
                kb < qb
            } else {
                kb == qb
            };
            if !allow {
                v[qi * n + ki] = -1e9;
            }
        }
    }
    Tensor::from_vec(v, (n, n), device)
}
