//! `config.json` parsing: dispatch on `architectures` / `model_type` and normalise the three
//! published layouts (LLaDA, Dream/Qwen2, SDAR/Qwen3) into one [`ModelConfig`].

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// The model families unmask can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Family {
    /// `LLaDAModelLM`: bidirectional, same-position logits, `model.transformer.*` tensors.
    Llada,
    /// `DreamModel` and Qwen2-based MDMs: bidirectional, logits shifted by one, q/k/v bias.
    Dream,
    /// `SDARForCausalLM` (and the embedded model): Qwen3 with q/k norm, block-causal attention.
    Sdar,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Llada => "LLaDA",
            Family::Dream => "Dream (Qwen2)",
            Family::Sdar => "SDAR (Qwen3, block-causal)",
        }
    }

    /// How attention is restricted between positions.
    pub fn attention(self) -> Attention {
        match self {
            Family::Sdar => Attention::BlockCausal,
            Family::Llada | Family::Dream => Attention::Bidirectional,
        }
    }

    /// Whether logits at position i predict token i+1 (models adapted from AR checkpoints).
    pub fn shifts_logits(self) -> bool {
        matches!(self, Family::Dream)
    }
}

/// The attention rule of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Attention {
    Bidirectional,
    BlockCausal,
}

/// Bounds on config numbers, far above any published model (the largest have ~130 layers,
/// 256k-token vocabularies, 30k-wide layers and contexts of 1M tokens).
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HEADS: usize = 1024;
pub const MAX_HEAD_DIM: usize = 4096;
pub const MAX_WIDTH: usize = 1 << 18;
pub const MAX_VOCAB: usize = 1 << 24;
pub const MAX_CONTEXT: usize = 1 << 24;

/// The architectures accepted in `config.json`, for error messages.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "LLaDAModelLM (model_type llada)",
    "DreamModel (model_type Dream)",
    "Qwen2ForCausalLM with a mask token (Open-dCoder style, treated as Dream)",
    "SDARForCausalLM (model_type sdar)",
];

/// Geometry and special ids of a checkpoint, normalised across families.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelConfig {
    pub family: Family,
    pub architecture: String,
    pub vocab_size: usize,
    /// Rows of the embedding matrix (LLaDA pads it beyond `vocab_size`).
    pub embedding_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub tie_word_embeddings: bool,
    /// Block size the checkpoint was trained with, if the config says.
    pub block_size: Option<usize>,
    pub mask_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    /// The dtype the weights were published in (`torch_dtype`), informational.
    pub torch_dtype: Option<String>,
}

struct Fields<'a> {
    v: &'a Value,
    file: &'a Path,
}

impl Fields<'_> {
    fn usize(&self, key: &str) -> Result<usize> {
        match self.v.get(key) {
            Some(x) => x
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.bad(key, "a non-negative integer")),
            None => Err(Error::ConfigField {
                file: self.file.to_path_buf(),
                field: key.into(),
                problem: "missing".into(),
            }),
        }
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.v.get(key).is_none_or(Value::is_null) {
            Ok(default)
        } else {
            self.usize(key)
        }
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.v.get(key).is_none_or(Value::is_null) {
            Ok(None)
        } else {
            self.usize(key).map(Some)
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| self.bad(key, "a number")),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_bool().ok_or_else(|| self.bad(key, "true or false")),
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        self.v.get(key).and_then(Value::as_str)
    }
    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        ids_of(self.v.get(key)).ok_or_else(|| self.bad(key, "a token id or a list of token ids"))
    }
    fn bad(&self, key: &str, expected: &str) -> Error {
        Error::ConfigField {
            file: self.file.to_path_buf(),
            field: key.into(),
            problem: format!(
                "expected {expected}, found {}",
                self.v.get(key).map(|x| x.to_string()).unwrap_or_default()
            ),
        }
    }
}

/// Reads a token id field that may be absent, null, a number or a list of numbers.
pub fn ids_of(v: Option<&Value>) -> Option<Vec<u32>> {
    match v {
        None | Some(Value::Null) => Some(Vec::new()),
        // An id beyond u32 is refused, never truncated (2^32 + 5 must not become 5).
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(|n| vec![n]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads and validates `config.json` from a checkpoint folder.
    pub fn from_file(file: &Path) -> Result<Self> {
        // Configs are a few KiB; the cap stops a device or a huge file from filling memory.
        let text = crate::input::read_text(file, 16 << 20)?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Parse {
            file: file.to_path_buf(),
            problem: e.to_string(),
        })?;
        Self::from_value(&v, file)
    }

    pub fn from_value(v: &Value, file: &Path) -> Result<Self> {
        let f = Fields { v, file };
        let arch = v
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let model_type = f.str("model_type").unwrap_or("").to_lowercase();
        let family = match (arch.as_str(), model_type.as_str()) {
            ("LLaDAModelLM", _) | (_, "llada") => Family::Llada,
            ("DreamModel", _) | (_, "dream") => Family::Dream,
            ("SDARForCausalLM", _) | (_, "sdar") => Family::Sdar,
            // Open-dCoder publishes plain Qwen2 weights with a mask token; it decodes like Dream.
            ("Qwen2ForCausalLM", _) if v.get("mask_token_id").is_some() => Family::Dream,
            _ => {
                return Err(Error::UnknownArchitecture {
                    file: file.to_path_buf(),
                    found: format!(
                        "architectures {:?}, model_type {:?}",
                        arch,
                        f.str("model_type").unwrap_or("")
                    ),
                    supported: SUPPORTED_ARCHITECTURES.join(", "),
                })
            }
        };
        let mask_token_id = match f.opt_usize("mask_token_id")? {
            Some(n) => Some(
                u32::try_from(n).map_err(|_| f.bad("mask_token_id", "a token id below 2^32"))?,
            ),
            None => None,
        };
        let eos_token_ids = f.ids("eos_token_id")?;
        let bos_token_id = f.ids("bos_token_id")?.first().copied();
        let pad_token_id = f.ids("pad_token_id")?.first().copied();
        let torch_dtype = f.str("torch_dtype").or(f.str("dtype")).map(str::to_string);
        let block_size = f.opt_usize("block_size")?.or(f.opt_usize("bd_size")?);

        let cfg = match family {
            Family::Llada => {
                let hidden = f.usize("d_model")?;
                let heads = f.usize("n_heads")?;
                if heads > 0 && !hidden.is_multiple_of(heads) {
                    return Err(f.bad("n_heads", &format!("a divisor of d_model {hidden}")));
                }
                let vocab = f.usize("vocab_size")?;
                let mlp = f.usize("mlp_hidden_size")?;
                if let Some(bt) = f.str("block_type") {
                    if bt != "llama" {
                        return Err(f.bad(
                            "block_type",
                            "\"llama\" (the only LLaDA block type published)",
                        ));
                    }
                }
                if f.bool_or("include_bias", false)? || f.bool_or("include_qkv_bias", false)? {
                    return Err(f.bad("include_bias", "false (LLaDA checkpoints carry no biases)"));
                }
                ModelConfig {
                    family,
                    architecture: arch,
                    vocab_size: vocab,
                    embedding_size: f.usize_or("embedding_size", vocab)?,
                    hidden_size: hidden,
                    // LLaDA's SwiGLU gate and up projections are each `mlp_hidden_size` wide.
                    intermediate_size: mlp,
                    num_layers: f.usize("n_layers")?,
                    num_heads: heads,
                    num_kv_heads: f.usize_or("n_kv_heads", heads)?,
                    head_dim: hidden / heads.max(1),
                    rope_theta: f.f64_or("rope_theta", 10000.0)?,
                    rms_norm_eps: f.f64_or("rms_norm_eps", 1e-5)?,
                    max_position_embeddings: f.usize_or("max_sequence_length", 4096)?,
                    qkv_bias: false,
                    qk_norm: false,
                    tie_word_embeddings: f.bool_or("weight_tying", false)?,
                    block_size,
                    mask_token_id,
                    eos_token_ids,
                    bos_token_id,
                    pad_token_id,
                    torch_dtype,
                }
            }
            Family::Dream | Family::Sdar => {
                let hidden = f.usize("hidden_size")?;
                let heads = f.usize("num_attention_heads")?;
                let vocab = f.usize("vocab_size")?;
                if v.get("head_dim").is_none_or(Value::is_null)
                    && heads > 0
                    && !hidden.is_multiple_of(heads)
                {
                    return Err(f.bad(
                        "num_attention_heads",
                        &format!("a divisor of hidden_size {hidden} (or give head_dim)"),
                    ));
                }
                let head_dim = f.usize_or("head_dim", hidden / heads.max(1))?;
                if let Some(act) = f.str("hidden_act") {
                    if act != "silu" {
                        return Err(f.bad("hidden_act", "\"silu\""));
                    }
                }
                ModelConfig {
                    family,
                    architecture: arch,
                    vocab_size: vocab,
                    embedding_size: vocab,
                    hidden_size: hidden,
                    intermediate_size: f.usize("intermediate_size")?,
                    num_layers: f.usize("num_hidden_layers")?,
                    num_heads: heads,
                    num_kv_heads: f.usize_or("num_key_value_heads", heads)?,
                    head_dim,
                    rope_theta: f.f64_or("rope_theta", 10000.0)?,
                    rms_norm_eps: f.f64_or("rms_norm_eps", 1e-6)?,
                    max_position_embeddings: f.usize_or("max_position_embeddings", 32768)?,
                    qkv_bias: family == Family::Dream || f.bool_or("attention_bias", false)?,
                    qk_norm: family == Family::Sdar,
                    tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
                    block_size,
                    mask_token_id,
                    eos_token_ids,
                    bos_token_id,
                    pad_token_id,
                    torch_dtype,
                }
            }
        };
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let bad = |field: &str, problem: String| Error::ConfigField {
            file: file.to_path_buf(),
            field: field.into(),
            problem,
        };
        // Upper bounds far above any published model, checked before anything is sized from
        // them: absurd numbers (10^12 layers) must be an error, not an allocation failure.
        for (name, n, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("embedding_size", self.embedding_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_CONTEXT,
            ),
        ] {
            if n == 0 {
                return Err(bad(name, "must be positive".into()));
            }
            if n > max {
                return Err(bad(
                    name,
                    format!("{n} is beyond any supported model (at most {max})"),
                ));
            }
        }
        if let Some(b) = self.block_size {
            if b == 0 || b > self.max_position_embeddings {
                return Err(bad(
                    "block_size",
                    format!(
                        "{b} must be within 1..={} (the context)",
                        self.max_position_embeddings
                    ),
                ));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} query heads are not a multiple of {} key/value heads",
                    self.num_heads, self.num_kv_heads
                ),
            ));
        }
        if self
            .head_dim
            .checked_mul(self.num_heads)
            .is_none_or(|w| w > MAX_WIDTH)
        {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "{} heads of {} make an attention width beyond {MAX_WIDTH}",
                    self.num_heads, self.head_dim
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(bad(
                "head_dim",
                format!(
                    "{} is odd; rotary embeddings need an even head size",
                    self.head_dim
                ),
            ));
        }
        if self.embedding_size < self.vocab_size {
            return Err(bad(
                "embedding_size",
                format!(
                    "{} is smaller than vocab_size {}",
                    self.embedding_size, self.vocab_size
                ),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(bad(
                "rope_theta",
                format!(
                    "{} must be a finite number above 0 (rotary frequencies divide by it)",
                    self.rope_theta
                ),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(bad(
                "rms_norm_eps",
                format!("{} must be a finite number ≥ 0", self.rms_norm_eps),
            ));
        }
        Ok(())
    }

    /// Number of parameters implied by the geometry (saturating: validation bounds the
    /// fields, but a count must never wrap).
    pub fn parameter_count(&self) -> u64 {
        let n = |x: usize| x as u64;
        let mul = |a: u64, b: u64| a.saturating_mul(b);
        let h = n(self.hidden_size);
        let q = mul(n(self.num_heads), n(self.head_dim));
        let kv = mul(n(self.num_kv_heads), n(self.head_dim));
        let i = n(self.intermediate_size);
        let mut layer = [
            mul(h, q),
            mul(2, mul(h, kv)),
            mul(q, h),
            mul(3, mul(h, i)),
            mul(2, h),
        ]
        .into_iter()
        .fold(0u64, u64::saturating_add);
        if self.qkv_bias {
            layer = layer.saturating_add(q.saturating_add(mul(2, kv)));
        }
        if self.qk_norm {
            layer = layer.saturating_add(mul(2, n(self.head_dim)));
        }
        let emb = mul(n(self.embedding_size), h);
        let head = if self.tie_word_embeddings { 0 } else { emb };
        emb.saturating_add(head)
            .saturating_add(h)
            .saturating_add(mul(layer, n(self.num_layers)))
    }
}
