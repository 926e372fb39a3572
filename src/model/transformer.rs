//! The decoder stack shared by the three layouts: RMSNorm, GQA attention with rotary positions,
//! SwiGLU MLP. Unlike the causal models in candle-transformers it returns logits for every
//! requested position and takes an explicit attention rule (bidirectional or block-causal), plus
//! an exact key/value cache of finished positions.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::config::{Family, ModelConfig};
use super::weights::Weights;
use crate::error::{Error, Result};

/// Tensor names of one layout.
struct Names {
    embed: &'static str,
    final_norm: &'static str,
    lm_head: &'static str,
    layer: fn(usize, &str) -> String,
}

fn qwen_layer(i: usize, part: &str) -> String {
    let full = match part {
        "attn_norm" => "input_layernorm",
        "q" => "self_attn.q_proj",
        "k" => "self_attn.k_proj",
        "v" => "self_attn.v_proj",
        "o" => "self_attn.o_proj",
        "q_norm" => "self_attn.q_norm",
        "k_norm" => "self_attn.k_norm",
        "mlp_norm" => "post_attention_layernorm",
        "gate" => "mlp.gate_proj",
        "up" => "mlp.up_proj",
        "down" => "mlp.down_proj",
        other => other,
    };
    format!("model.layers.{i}.{full}")
}

fn llada_layer(i: usize, part: &str) -> String {
    let full = match part {
        "attn_norm" => "attn_norm",
        "q" => "q_proj",
        "k" => "k_proj",
        "v" => "v_proj",
        "o" => "attn_out",
        "mlp_norm" => "ff_norm",
        "gate" => "ff_proj",
        "up" => "up_proj",
        "down" => "ff_out",
        other => other,
    };
    format!("model.transformer.blocks.{i}.{full}")
}

fn names(family: Family) -> Names {
    match family {
        Family::Llada => Names {
            embed: "model.transformer.wte.weight",
            final_norm: "model.transformer.ln_f.weight",
            lm_head: "model.transformer.ff_out.weight",
            layer: llada_layer,
        },
        Family::Dream | Family::Sdar => Names {
            embed: "model.embed_tokens.weight",
            final_norm: "model.norm.weight",
            lm_head: "lm_head.weight",
            layer: qwen_layer,
        },
    }
}

/// A linear layer holding its weight transposed (`[in, out]`, contiguous): the CPU matmul then
/// reads the weight in order instead of re-packing a strided view on every call, which made
/// one-token forwards several times slower.
struct Linear {
    wt: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn new(w: Tensor, b: Option<Tensor>) -> candle_core::Result<Self> {
        Ok(Linear {
            wt: w.t()?.contiguous()?,
            b,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.wt)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A loaded diffusion language model.
pub struct Transformer {
    pub cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    final_norm: Tensor,
    /// Transposed: `[hidden, embedding rows]`.
    lm_head_t: Tensor,
    inv_freq: Vec<f32>,
    device: Device,
    dtype: DType,
}

/// Keys and values of positions 0..len, per layer, as `[kv_heads, len, head_dim]`.
#[derive(Clone, Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn clear(&mut self) {
        self.layers.clear();
        self.len = 0;
    }
}

/// What a forward may attend to.
#[derive(Clone, Copy)]
pub enum Mask<'a> {
    /// Every position sees every other.
    Full,
    /// Position i sees j iff `block_of[j] <= block_of[i]`; indices are absolute positions.
    BlockCausal(&'a [usize]),
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    // candle's fused kernel: one launch instead of eight, which matters on the GPU where a forward
    // is ~1,700 small ops. It accumulates in f32 for half types; in f32 it is the references' math.
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

impl Transformer {
    /// Builds the model from checked weights; any missing or mis-shaped tensor is reported by name.
    pub fn new(cfg: ModelConfig, w: &Weights, dtype: DType, device: &Device) -> Result<Self> {
        let n = names(cfg.family);
        let h = cfg.hidden_size;
        let qd = cfg.num_heads * cfg.head_dim;
        let kvd = cfg.num_kv_heads * cfg.head_dim;
        let i_sz = cfg.intermediate_size;
        let get = |name: &str, shape: &[usize]| w.get(name, shape, dtype, device);
        let linear = |name: String, out: usize, inp: usize, bias: bool| -> Result<Linear> {
            let weight = get(&format!("{name}.weight"), &[out, inp])?;
            let b = if bias {
                Some(get(&format!("{name}.bias"), &[out])?)
            } else {
                None
            };
            Ok(Linear::new(weight, b)?)
        };
        let embed = get(n.embed, &[cfg.embedding_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let l = n.layer;
            let norm = |part: &str, size: usize| get(&format!("{}.weight", l(i, part)), &[size]);
            layers.push(Layer {
                attn_norm: norm("attn_norm", h)?,
                q: linear(l(i, "q"), qd, h, cfg.qkv_bias)?,
                k: linear(l(i, "k"), kvd, h, cfg.qkv_bias)?,
                v: linear(l(i, "v"), kvd, h, cfg.qkv_bias)?,
                o: linear(l(i, "o"), h, qd, false)?,
                q_norm: if cfg.qk_norm {
                    Some(norm("q_norm", cfg.head_dim)?)
                } else {
                    None
                },
                k_norm: if cfg.qk_norm {
                    Some(norm("k_norm", cfg.head_dim)?)
                } else {
                    None
                },
                mlp_norm: norm("mlp_norm", h)?,
                gate: linear(l(i, "gate"), i_sz, h, false)?,
                up: linear(l(i, "up"), i_sz, h, false)?,
                down: linear(l(i, "down"), h, i_sz, false)?,
            });
        }
        let final_norm = get(n.final_norm, &[h])?;
        let lm_head = if cfg.tie_word_embeddings && !w.contains(n.lm_head) {
            embed.clone()
        } else {
            get(n.lm_head, &[cfg.embedding_size, h])?
        };
        let lm_head_t = lm_head.t()?.contiguous()?;
        let half = cfg.head_dim / 2;
        let inv_freq = (0..half)
            .map(|j| (1.0 / cfg.rope_theta.powf(2.0 * j as f64 / cfg.head_dim as f64)) as f32)
            .collect();
        Ok(Transformer {
            cfg,
            embed,
            layers,
            final_norm,
            lm_head_t,
            inv_freq,
            device: device.clone(),
            dtype,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Runs `ids`, placed at absolute positions `start..start+ids.len()`, on top of `cache` (which
    /// must hold exactly positions `0..start`). Appends the keys and values of the first `append`
    /// of these positions to the cache. Returns raw (unshifted) f32 logits `[rows.len(), vocab]` for
    /// the chunk-relative `rows`.
    pub fn forward(
        &self,
        ids: &[u32],
        start: usize,
        cache: &mut KvCache,
        append: usize,
        mask: Mask<'_>,
        rows: Range<usize>,
    ) -> Result<Tensor> {
        let n = ids.len();
        if cache.len != start {
            return Err(Error::Invalid(format!(
                "cache holds {} positions but the chunk starts at {start}",
                cache.len
            )));
        }
        if n == 0 || rows.end > n || rows.start >= rows.end || append > n {
            return Err(Error::Invalid(format!(
                "empty or out-of-range forward: {n} ids, rows {rows:?}, append {append}"
            )));
        }
        if start + n > self.cfg.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "{} positions exceed the model's context ({} positions)",
                start + n,
                self.cfg.max_position_embeddings
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= self.cfg.embedding_size) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.embedding_size
            )));
        }
        let cfg = &self.cfg;
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = self.embed.index_select(&ids_t, 0)?; // [n, h]
        let (cos, sin) = self.rope_tables(start, n)?;
        let mask_t = self.mask_tensor(start, n, mask)?;
        let rep = cfg.num_heads / cfg.num_kv_heads;
        let scale = 1.0 / (cfg.head_dim as f64).sqrt();
        let mut new_cache = Vec::with_capacity(self.layers.len());
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, cfg.rms_norm_eps)?;
            let q = layer
                .q
                .forward(&h)?
                .reshape((n, cfg.num_heads, cfg.head_dim))?;
            let k = layer
                .k
                .forward(&h)?
                .reshape((n, cfg.num_kv_heads, cfg.head_dim))?;
            let v = layer
                .v
                .forward(&h)?
                .reshape((n, cfg.num_kv_heads, cfg.head_dim))?;
            let q = match &layer.q_norm {
                Some(w) => rms_norm(&q, w, cfg.rms_norm_eps)?,
                None => q,
            };
            let k = match &layer.k_norm {
                Some(w) => rms_norm(&k, w, cfg.rms_norm_eps)?,
                None => k,
            };
            // [heads, n, d], rotary in f32.
            let q = self.rope(&q.transpose(0, 1)?, &cos, &sin)?;
            let k = self.rope(&k.transpose(0, 1)?, &cos, &sin)?;
            let v = v.transpose(0, 1)?.contiguous()?;
            let (k_all, v_all) = match cache.layers.get(li) {
                Some((ck, cv)) => (Tensor::cat(&[ck, &k], 1)?, Tensor::cat(&[cv, &v], 1)?),
                None => (k.clone(), v.clone()),
            };
            if append > 0 {
                let (ak, av) = match cache.layers.get(li) {
                    Some((ck, cv)) => (
                        Tensor::cat(&[ck, &k.narrow(1, 0, append)?], 1)?,
                        Tensor::cat(&[cv, &v.narrow(1, 0, append)?], 1)?,
                    ),
                    None => (
                        k.narrow(1, 0, append)?.contiguous()?,
                        v.narrow(1, 0, append)?.contiguous()?,
                    ),
                };
                new_cache.push((ak, av));
            }
            let k_all = repeat_kv(&k_all, rep)?;
            let v_all = repeat_kv(&v_all, rep)?;
            let scores = (q.matmul(&k_all.t()?)? * scale)?.to_dtype(DType::F32)?;
            let scores = match &mask_t {
                Some(m) => scores.broadcast_add(m)?,
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(self.dtype)?;
            let attn = probs.matmul(&v_all)?; // [heads, n, d]
            let attn = attn
                .transpose(0, 1)?
                .reshape((n, cfg.num_heads * cfg.head_dim))?;
            x = (x + layer.o.forward(&attn)?)?;
            let h = rms_norm(&x, &layer.mlp_norm, cfg.rms_norm_eps)?;
            let mlp = layer.down.forward(
                &(candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?,
            )?;
            x = (x + mlp)?;
        }
        if append > 0 {
            cache.layers = new_cache;
            cache.len += append;
        }
        let x = x.narrow(0, rows.start, rows.end - rows.start)?;
        let x = rms_norm(&x, &self.final_norm, cfg.rms_norm_eps)?;
        let logits = x.matmul(&self.lm_head_t)?;
        Ok(logits.to_dtype(DType::F32)?)
    }

    fn rope_tables(&self, start: usize, n: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut angles = Vec::with_capacity(n * half);
        for p in start..start + n {
            for &f in &self.inv_freq {
                angles.push(p as f32 * f);
            }
        }
        let a = Tensor::from_vec(angles, (n, half), &self.device)?;
        Ok((a.cos()?, a.sin()?))
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?.unsqueeze(0)?.contiguous()?;
        let y = candle_nn::rotary_emb::rope(&x32, cos, sin)?;
        Ok(y.squeeze(0)?.to_dtype(self.dtype)?)
    }

    fn mask_tensor(&self, start: usize, n: usize, mask: Mask<'_>) -> Result<Option<Tensor>> {
        let Mask::BlockCausal(block_of) = mask else {
            return Ok(None);
        };
        if block_of.len() < start + n {
            return Err(Error::Invalid(format!(
                "block map covers {} positions, chunk ends at {}",
                block_of.len(),
                start + n
            )));
        }
        let total = start + n;
        let mut m = vec![0f32; n * total];
        let mut any = false;
        for a in 0..n {
            let qb = block_of[start + a];
            for j in start..total {
                if block_of[j] > qb {
                    m[a * total + j] = f32::NEG_INFINITY;
                    any = true;
                }
            }
        }
        if !any {
            return Ok(None);
        }
        Ok(Some(Tensor::from_vec(m, (n, total), &self.device)?))
    }
}

fn repeat_kv(x: &Tensor, rep: usize) -> candle_core::Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (h, t, d) = x.dims3()?;
    x.unsqueeze(1)?
        .expand((h, rep, t, d))?
        .reshape((h * rep, t, d))
}

/// Every tensor a checkpoint of `cfg` must hold, with its shape (the lm_head only when untied).
pub fn expected_tensors(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let n = names(cfg.family);
    let (h, qd, kvd, i_sz) = (
        cfg.hidden_size,
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.intermediate_size,
    );
    let mut v = vec![
        (n.embed.to_string(), vec![cfg.embedding_size, h]),
        (n.final_norm.to_string(), vec![h]),
    ];
    if !cfg.tie_word_embeddings {
        v.push((n.lm_head.to_string(), vec![cfg.embedding_size, h]));
    }
    for i in 0..cfg.num_layers {
        let l = |p: &str| format!("{}.weight", (n.layer)(i, p));
        v.push((l("attn_norm"), vec![h]));
        v.push((l("mlp_norm"), vec![h]));
        for (p, out, inp) in [
            ("q", qd, h),
            ("k", kvd, h),
            ("v", kvd, h),
            ("o", h, qd),
            ("gate", i_sz, h),
            ("up", i_sz, h),
            ("down", h, i_sz),
        ] {
            v.push((l(p), vec![out, inp]));
        }
        if cfg.qkv_bias {
            for (p, out) in [("q", qd), ("k", kvd), ("v", kvd)] {
                v.push((format!("{}.bias", (n.layer)(i, p)), vec![out]));
            }
        }
        if cfg.qk_norm {
            v.push((l("q_norm"), vec![cfg.head_dim]));
            v.push((l("k_norm"), vec![cfg.head_dim]));
        }
    }
    v
}
