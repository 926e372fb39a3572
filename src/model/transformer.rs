//! The decoder stack shared by the three layouts: RMSNorm, GQA attention with rotary positions,
//! SwiGLU MLP. Unlike the causal models in candle-transformers it returns logits for every
//! requested position and takes an explicit attention rule (bidirectional or block-causal), plus
//! an exact key/value cache of finished positions.

use std::ops::Range;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::config::{Family, ModelConfig};
use super::cpu_linear::{SplitMatmul, MAX_ROWS};
use super::host::{Dims, HostKv, HostLayer, HostNet};
use super::rows_kernel::Mat;
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::profile::{self, Phase};

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
        let y = matmul(x, &self.wt)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `x [m, k] · wt [k, n]`; few f32 rows on the CPU go through the column-split kernel.
fn matmul(x: &Tensor, wt: &Tensor) -> candle_core::Result<Tensor> {
    let rows = x.dim(0)?;
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() == 2 && rows <= MAX_ROWS {
        return x
            .contiguous()?
            .apply_op2_no_bwd(wt, &SplitMatmul { transposed: false });
    }
    x.matmul(wt)
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
    kernels: Kernels,
    device: Device,
    dtype: DType,
}

/// Which implementation runs the forward: candle's tensors (any device and dtype), or, for f32 on
/// the CPU, the slice kernels of [`super::host`].
enum Kernels {
    Candle(CandleParts),
    Host(Box<HostNet>),
}

/// Which forward CPU models use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernels {
    /// The slice kernels of `model::host` (the default).
    Host,
    /// candle's tensor operations, as on the GPU: kept to check the two against each other and
    /// for `UNMASK_CPU_KERNELS=candle` comparisons.
    Candle,
}

impl CpuKernels {
    /// `UNMASK_CPU_KERNELS=candle` selects candle; anything else (or unset) the host kernels.
    pub fn from_env() -> Self {
        match std::env::var("UNMASK_CPU_KERNELS").as_deref() {
            Ok("candle") => CpuKernels::Candle,
            _ => CpuKernels::Host,
        }
    }
}

/// The candle implementation's weights and caches.
struct CandleParts {
    /// `[embedding rows, hidden]`.
    embed: Tensor,
    layers: Vec<Layer>,
    final_norm: Tensor,
    /// `[embedding rows, hidden]`, the checkpoint's layout: each token's weights contiguous, so
    /// the CPU kernel needs no re-packing of a vocabulary-sized matrix per call. With tied
    /// embeddings it is the embedding tensor itself (held once).
    lm_head: Tensor,
    inv_freq: Vec<f32>,
    /// cos/sin of positions `0..len` in the model's dtype, built once and grown on demand.
    rope_cache: Mutex<Option<(Tensor, Tensor)>>,
    /// The last attention mask, reused while the block layout and chunk stay the same (every
    /// step of a block asks for the same one).
    mask_cache: Mutex<Option<(MaskKey, Option<Tensor>)>>,
}

#[derive(PartialEq)]
struct MaskKey {
    start: usize,
    n: usize,
    blocks: Vec<usize>,
}

/// Keys and values of positions 0..len, per layer, in buffers `[kv_heads, capacity, head_dim]`
/// that a forward writes in place (no concatenation per forward). Positions `len..` of a buffer
/// are scratch: a forward writes its whole chunk there and keeps only what it appends.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    /// The host kernels' keys and values (position-major, grown on demand).
    host: Vec<HostKv>,
    len: usize,
    /// Candle buffers: the end of the positions the last forward wrote.
    scratch_end: usize,
    capacity: usize,
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
    /// Forgets every position; the buffers stay for the next run of the same shape.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the next `n` positions that the last forward wrote past the cached ones (its
    /// scratch) as if they had been appended; false, and nothing changes, when no forward wrote
    /// that many.
    pub fn adopt_scratch(&mut self, n: usize) -> bool {
        let want = self.len + n;
        let written = if !self.host.is_empty() {
            self.host.iter().all(|kv| kv.positions() >= want)
        } else {
            !self.layers.is_empty() && self.capacity >= want && self.scratch_end >= want
        };
        if written {
            self.len = want;
        }
        written
    }
}

impl Clone for KvCache {
    /// A deep copy: buffers are written in place, so a clone must not share them.
    fn clone(&self) -> Self {
        let copy = |t: &Tensor| t.copy().expect("copying a key/value buffer");
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (copy(k), copy(v)))
                .collect(),
            host: self.host.clone(),
            len: self.len,
            scratch_end: self.scratch_end,
            capacity: self.capacity,
        }
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
    /// Builds the model; f32 on the CPU uses the kernels `UNMASK_CPU_KERNELS` names (host by
    /// default).
    pub fn new(cfg: ModelConfig, w: &Weights, dtype: DType, device: &Device) -> Result<Self> {
        Self::new_with(cfg, w, dtype, device, CpuKernels::from_env())
    }

    /// Like [`new`](Self::new) with the CPU kernels chosen by the caller.
    pub fn new_with(
        cfg: ModelConfig,
        w: &Weights,
        dtype: DType,
        device: &Device,
        cpu: CpuKernels,
    ) -> Result<Self> {
        let kernels = if device.is_cpu() && cpu == CpuKernels::Host {
            // f32: weights as stored (half checkpoints stay half, exactly); f16 / bf16: weights
            // held in that precision. The arithmetic is f32 either way.
            let weights = match dtype {
                DType::F16 | DType::BF16 => Some(dtype),
                _ => None,
            };
            Kernels::Host(Box::new(host_net(&cfg, w, weights)?))
        } else {
            Kernels::Candle(candle_parts(&cfg, w, dtype, device)?)
        };
        Ok(Transformer {
            cfg,
            kernels,
            device: device.clone(),
            dtype,
        })
    }

    /// Which kernels run this model's forward (on the CPU the host kernels serve every dtype:
    /// f16 / bf16 name the weights' precision, the arithmetic stays f32).
    pub fn kernels(&self) -> CpuKernels {
        match self.kernels {
            Kernels::Host(_) => CpuKernels::Host,
            Kernels::Candle(_) => CpuKernels::Candle,
        }
    }

    /// For reports: `host kernels, f16 weights` or `candle kernels`.
    pub fn kernel_summary(&self) -> String {
        match &self.kernels {
            Kernels::Host(h) => format!("host kernels, {} weights", h.weight_precision()),
            Kernels::Candle(_) => "candle kernels".into(),
        }
    }

    fn candle(&self) -> Result<&CandleParts> {
        match &self.kernels {
            Kernels::Candle(c) => Ok(c),
            Kernels::Host(_) => Err(Error::Invalid(
                "internal: candle forward asked of a host-kernel model".into(),
            )),
        }
    }
}

/// Rotary inverse frequencies of `cfg`.
fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let half = cfg.head_dim / 2;
    (0..half)
        .map(|j| (1.0 / cfg.rope_theta.powf(2.0 * j as f64 / cfg.head_dim as f64)) as f32)
        .collect()
}

/// The host kernels' weights: every tensor checked and converted to f32, q/k/v and gate/up
/// stacked so that each layer runs four products.
fn host_net(cfg: &ModelConfig, w: &Weights, weights: Option<DType>) -> Result<HostNet> {
    let n = names(cfg.family);
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let qd = cfg.num_heads * hd;
    let kvd = cfg.num_kv_heads * hd;
    let i_sz = cfg.intermediate_size;
    let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
        Ok(w.get(name, shape, DType::F32, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let stack = |parts: &[Vec<f32>]| parts.concat();
    // Matrices stay in the half precision they are stored in (widening is exact); parts stored
    // in different precisions are stacked in f32.
    let mat = |parts: &[(String, usize, usize)]| -> Result<Mat> {
        use safetensors::Dtype as S;
        let all = |d: S| {
            parts
                .iter()
                .all(|(name, _, _)| w.stored_dtype(name) == Some(d))
        };
        let load = |dtype: DType| -> Result<Tensor> {
            let ts = parts
                .iter()
                .map(|(name, out, inp)| {
                    Ok(w.get(name, &[*out, *inp], dtype, &Device::Cpu)?
                        .flatten_all()?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&ts, 0)?)
        };
        // Stacked parts: their outputs add up, their inputs are the same width.
        let n: usize = parts.iter().map(|(_, out, _)| out).sum();
        let k = parts.first().map_or(0, |(_, _, inp)| *inp);
        Ok(
            if weights == Some(DType::F16) || (weights.is_none() && all(S::F16)) {
                Mat::f16(&load(DType::F16)?.to_vec1()?, n, k)
            } else if weights == Some(DType::BF16) || (weights.is_none() && all(S::BF16)) {
                Mat::bf16(&load(DType::BF16)?.to_vec1()?, n, k)
            } else {
                Mat::f32(&load(DType::F32)?.to_vec1()?, n, k)
            },
        )
    };
    let embed = mat(&[(n.embed.to_string(), cfg.embedding_size, h)])?;
    let tied = cfg.tie_word_embeddings && !w.contains(n.lm_head);
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let l = |part: &str| (n.layer)(i, part);
        let weight = |part: &str, out: usize, inp: usize| (format!("{}.weight", l(part)), out, inp);
        let norm = |part: &str, size: usize| get(&format!("{}.weight", l(part)), &[size]);
        let qkv_bias = if cfg.qkv_bias {
            Some(stack(&[
                get(&format!("{}.bias", l("q")), &[qd])?,
                get(&format!("{}.bias", l("k")), &[kvd])?,
                get(&format!("{}.bias", l("v")), &[kvd])?,
            ]))
        } else {
            None
        };
        layers.push(HostLayer {
            attn_norm: norm("attn_norm", h)?,
            qkv: mat(&[weight("q", qd, h), weight("k", kvd, h), weight("v", kvd, h)])?,
            qkv_bias,
            o: mat(&[weight("o", h, qd)])?,
            q_norm: if cfg.qk_norm {
                Some(norm("q_norm", hd)?)
            } else {
                None
            },
            k_norm: if cfg.qk_norm {
                Some(norm("k_norm", hd)?)
            } else {
                None
            },
            mlp_norm: norm("mlp_norm", h)?,
            gate_up: mat(&[weight("gate", i_sz, h), weight("up", i_sz, h)])?,
            down: mat(&[weight("down", h, i_sz)])?,
        });
    }
    let final_norm = get(n.final_norm, &[h])?;
    let lm_head = if tied {
        None
    } else {
        Some(mat(&[(n.lm_head.to_string(), cfg.embedding_size, h)])?)
    };
    let dims = Dims {
        hidden: h,
        heads: cfg.num_heads,
        kv_heads: cfg.num_kv_heads,
        head_dim: hd,
        inter: i_sz,
        vocab: cfg.embedding_size,
        eps: cfg.rms_norm_eps as f32,
    };
    HostNet::new(dims, embed, lm_head, final_norm, inv_freq(cfg), layers)
        .map_err(|e| Error::Invalid(format!("starting the forward thread pool: {e}")))
}

/// The candle implementation's weights, on `device` in `dtype`.
fn candle_parts(
    cfg: &ModelConfig,
    w: &Weights,
    dtype: DType,
    device: &Device,
) -> Result<CandleParts> {
    {
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
        let tied = cfg.tie_word_embeddings && !w.contains(n.lm_head);
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
        let lm_head = if tied {
            embed.clone()
        } else {
            get(n.lm_head, &[cfg.embedding_size, h])?
        };
        Ok(CandleParts {
            embed,
            layers,
            final_norm,
            lm_head,
            inv_freq: inv_freq(cfg),
            rope_cache: Mutex::new(None),
            mask_cache: Mutex::new(None),
        })
    }
}

/// Logits `[rows, vocab]` of [`Transformer::forward_rows_into`]: in host memory (the host
/// kernels), or an f32 tensor on the model's device (candle, CPU or CUDA).
pub enum RowLogits {
    Host(Vec<f32>),
    Device(Tensor),
}

impl Transformer {
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
        if rows.start >= rows.end || rows.end > ids.len() {
            return Err(Error::Invalid(format!(
                "empty or out-of-range forward: {} ids, rows {rows:?}, append {append}",
                ids.len()
            )));
        }
        let rows: Vec<usize> = rows.collect();
        self.forward_rows(ids, start, cache, append, mask, &rows)
    }

    /// Like [`forward`](Self::forward), with logits only for the chunk-relative `rows` in the
    /// given order: the LM head (a quarter of a small model's arithmetic, most of a large
    /// vocabulary's) runs on the rows a step reads and on no others.
    pub fn forward_rows(
        &self,
        ids: &[u32],
        start: usize,
        cache: &mut KvCache,
        append: usize,
        mask: Mask<'_>,
        rows: &[usize],
    ) -> Result<Tensor> {
        match self.forward_rows_into(ids, start, cache, append, mask, rows, Vec::new())? {
            RowLogits::Host(logits) => Ok(Tensor::from_vec(
                logits,
                (rows.len(), self.cfg.embedding_size),
                &Device::Cpu,
            )?),
            RowLogits::Device(t) => Ok(t),
        }
    }

    /// Like [`forward_rows`](Self::forward_rows), where the host kernels write the logits
    /// straight into `buf` (a buffer the previous step is done with: no allocation, no page
    /// faults, no copy out of a tensor); other kernels ignore `buf` and return a tensor.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows_into(
        &self,
        ids: &[u32],
        start: usize,
        cache: &mut KvCache,
        append: usize,
        mask: Mask<'_>,
        rows: &[usize],
        buf: Vec<f32>,
    ) -> Result<RowLogits> {
        if rows.is_empty() || rows.iter().any(|&r| r >= ids.len()) {
            return Err(Error::Invalid(format!(
                "empty or out-of-range forward: {} ids, rows {rows:?}",
                ids.len()
            )));
        }
        self.check(ids, start, cache, append, mask)?;
        if let Kernels::Host(net) = &self.kernels {
            let logits = net.forward(ids, start, &mut cache.host, mask, rows, buf);
            cache.len += append;
            return Ok(RowLogits::Host(logits));
        }
        let x = self.forward_hidden(ids, start, cache, append, mask)?;
        let t = Instant::now();
        let contiguous_run = rows.windows(2).all(|w| w[1] == w[0] + 1);
        let x = if contiguous_run {
            x.narrow(0, rows[0], rows.len())?
        } else {
            let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
            x.index_select(&Tensor::new(idx.as_slice(), &self.device)?, 0)?
        };
        let logits = self.head(&x)?;
        self.mark(Phase::Head, t)?;
        Ok(RowLogits::Device(logits))
    }

    /// Final norm and LM head: f32 logits `[rows, vocab]`.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.candle()?;
        let x = rms_norm(x, &c.final_norm, self.cfg.rms_norm_eps)?;
        let rows = x.dim(0)?;
        let logits = if x.device().is_cpu() && x.dtype() == DType::F32 && rows <= MAX_ROWS {
            x.apply_op2_no_bwd(&c.lm_head, &SplitMatmul { transposed: true })?
        } else {
            x.matmul(&c.lm_head.t()?)?
        };
        Ok(logits.to_dtype(DType::F32)?)
    }

    /// Adds the time since `t` to `phase` (after waiting for the device when profiling asks).
    fn mark(&self, phase: Phase, t: Instant) -> Result<()> {
        if profile::sync_enabled() {
            self.device.synchronize()?;
        }
        profile::add(phase, t);
        Ok(())
    }

    /// What every forward requires of its arguments, whichever kernels run it.
    fn check(
        &self,
        ids: &[u32],
        start: usize,
        cache: &KvCache,
        append: usize,
        mask: Mask<'_>,
    ) -> Result<()> {
        let n = ids.len();
        if cache.len != start {
            return Err(Error::Invalid(format!(
                "cache holds {} positions but the chunk starts at {start}",
                cache.len
            )));
        }
        if n == 0 || append > n {
            return Err(Error::Invalid(format!(
                "empty or out-of-range forward: {n} ids, append {append}"
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
        if let Mask::BlockCausal(block_of) = mask {
            if block_of.len() < start + n {
                return Err(Error::Invalid(format!(
                    "block map covers {} positions, chunk ends at {}",
                    block_of.len(),
                    start + n
                )));
            }
        }
        Ok(())
    }

    /// Embedding and decoder layers: hidden states `[ids.len(), hidden]` before the final norm.
    fn forward_hidden(
        &self,
        ids: &[u32],
        start: usize,
        cache: &mut KvCache,
        append: usize,
        mask: Mask<'_>,
    ) -> Result<Tensor> {
        let t_start = Instant::now();
        let n = ids.len();
        let c = self.candle()?;
        let cfg = &self.cfg;
        let ids_t = Tensor::new(ids, &self.device)?;
        let mut x = c.embed.index_select(&ids_t, 0)?; // [n, h]
        let (cos, sin) = self.rope_tables(start, n)?;
        let mask_t = self.mask_tensor(start, n, mask)?;
        let (heads, kv_heads, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let rep = heads / kv_heads;
        let scale = 1.0 / (hd as f64).sqrt();
        let total = start + n;
        // Cached positions and this chunk's keys/values are read from one buffer: the chunk is
        // written at `start..total` (only the first `append` rows stay cached). Without a cache
        // and nothing to keep, the chunk's own tensors serve directly.
        let use_buffers = start > 0 || append > 0;
        if use_buffers {
            cache.reserve(self, total)?;
        }
        for (li, layer) in c.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, cfg.rms_norm_eps)?;
            let q = layer.q.forward(&h)?.reshape((1, n, heads, hd))?;
            let k = layer.k.forward(&h)?.reshape((1, n, kv_heads, hd))?;
            let v = layer.v.forward(&h)?.reshape((n, kv_heads, hd))?;
            let q = match &layer.q_norm {
                Some(w) => rms_norm(&q, w, cfg.rms_norm_eps)?,
                None => q,
            };
            let k = match &layer.k_norm {
                Some(w) => rms_norm(&k, w, cfg.rms_norm_eps)?,
                None => k,
            };
            // Rotary on [1, n, heads, d] directly, then heads first: [heads, n, d].
            let q = candle_nn::rotary_emb::rope_thd(&q.contiguous()?, &cos, &sin)?
                .squeeze(0)?
                .transpose(0, 1)?
                .contiguous()?;
            let k = candle_nn::rotary_emb::rope_thd(&k.contiguous()?, &cos, &sin)?
                .squeeze(0)?
                .transpose(0, 1)?
                .contiguous()?;
            let v = v.transpose(0, 1)?.contiguous()?;
            let (k_all, v_all) = if use_buffers {
                let (kb, vb) = &cache.layers[li];
                kb.slice_set(&k, 1, start)?;
                vb.slice_set(&v, 1, start)?;
                (kb.narrow(1, 0, total)?, vb.narrow(1, 0, total)?)
            } else {
                (k, v)
            };
            // Grouped-query attention without repeating K/V: the `rep` query heads that share a
            // key/value head are stacked as rows of one matrix, [kv_heads, rep·n, d].
            let q = q.reshape((kv_heads, rep * n, hd))?;
            let scores = (q.matmul(&k_all.t()?)? * scale)?.to_dtype(DType::F32)?;
            let scores = match &mask_t {
                Some(m) => scores
                    .reshape((heads, n, total))?
                    .broadcast_add(m)?
                    .reshape((kv_heads, rep * n, total))?,
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(self.dtype)?;
            let attn = probs.matmul(&v_all)?; // [kv_heads, rep·n, d] = [heads, n, d]
            let attn = attn
                .reshape((heads, n, hd))?
                .transpose(0, 1)?
                .reshape((n, heads * hd))?;
            x = (x + layer.o.forward(&attn)?)?;
            let h = rms_norm(&x, &layer.mlp_norm, cfg.rms_norm_eps)?;
            let mlp = layer.down.forward(
                &(candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?,
            )?;
            x = (x + mlp)?;
        }
        cache.scratch_end = if use_buffers { total } else { 0 };
        cache.len += append;
        self.mark(Phase::Model, t_start)?;
        Ok(x)
    }

    /// cos/sin `[n, head_dim / 2]` of positions `start..start+n`, views into a table built once.
    fn rope_tables(&self, start: usize, n: usize) -> Result<(Tensor, Tensor)> {
        let need = start + n;
        let c = self.candle()?;
        let mut guard = c
            .rope_cache
            .lock()
            .map_err(|_| Error::Invalid("rope table lock poisoned".into()))?;
        let have = guard
            .as_ref()
            .map(|(c, _)| c.dim(0))
            .transpose()?
            .unwrap_or(0);
        if have < need {
            // Grow to a power of two (at most the context): a handful of rebuilds per process.
            let len = need
                .next_power_of_two()
                .max(256)
                .min(self.cfg.max_position_embeddings.max(need));
            let half = c.inv_freq.len();
            let mut angles = Vec::with_capacity(len * half);
            for p in 0..len {
                for &f in &c.inv_freq {
                    angles.push(p as f32 * f);
                }
            }
            let a = Tensor::from_vec(angles, (len, half), &self.device)?;
            *guard = Some((
                a.cos()?.to_dtype(self.dtype)?,
                a.sin()?.to_dtype(self.dtype)?,
            ));
        }
        let (c, s) = guard.as_ref().expect("built above");
        Ok((c.narrow(0, start, n)?, s.narrow(0, start, n)?))
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
        let key = MaskKey {
            start,
            n,
            blocks: block_of[..total].to_vec(),
        };
        let mut guard = self
            .candle()?
            .mask_cache
            .lock()
            .map_err(|_| Error::Invalid("mask cache lock poisoned".into()))?;
        if let Some((k, m)) = guard.as_ref() {
            if *k == key {
                return Ok(m.clone());
            }
        }
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
        let t = if any {
            Some(Tensor::from_vec(m, (n, total), &self.device)?)
        } else {
            None
        };
        *guard = Some((key, t.clone()));
        Ok(t)
    }
}

impl KvCache {
    /// Makes every layer's buffers hold at least `needed` positions, keeping the cached ones.
    fn reserve(&mut self, net: &Transformer, needed: usize) -> Result<()> {
        if self.capacity >= needed && self.layers.len() == net.cfg.num_layers {
            return Ok(());
        }
        let cap = needed
            .next_power_of_two()
            .max(64)
            .min(net.cfg.max_position_embeddings.max(needed));
        let shape = (net.cfg.num_kv_heads, cap, net.cfg.head_dim);
        let mut layers = Vec::with_capacity(net.cfg.num_layers);
        for li in 0..net.cfg.num_layers {
            let kb = Tensor::zeros(shape, net.dtype, &net.device)?;
            let vb = Tensor::zeros(shape, net.dtype, &net.device)?;
            if self.len > 0 {
                if let Some((ok, ov)) = self.layers.get(li) {
                    kb.slice_set(&ok.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                    vb.slice_set(&ov.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
            }
            layers.push((kb, vb));
        }
        self.layers = layers;
        self.capacity = cap;
        Ok(())
    }
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
