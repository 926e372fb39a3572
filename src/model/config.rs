//! `config.json` parsing: dispatch on `architectures` / `model_type` and normalise the three
//! published layouts (LLaDA, Dream/Qwen2, SDAR/Qwen3) into one [`ModelConfig`].

use std::path::Path;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
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
    /// `fim_layout`: the fill-in-the-middle layout the checkpoint was trained with (only
    /// `crate::fim::LAYOUT` is known); see `ModelInfo::fim`.
    pub fim_layout: Option<String>,
}

/// The fields every family shares: what `config.json` is, and its special ids. Each struct below
/// names its fields exactly as `config.json` does; serde checks the types (with the path of a
/// wrong-typed value, e.g. `eos_token_id[1]`), the code after it checks the values.
#[derive(Deserialize)]
struct Common {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    mask_token_id: Option<TokenId>,
    #[serde(default)]
    eos_token_id: TokenIds,
    #[serde(default)]
    bos_token_id: TokenIds,
    #[serde(default)]
    pad_token_id: TokenIds,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    block_size: Option<usize>,
    bd_size: Option<usize>,
    fim_layout: Option<String>,
}

/// `LLaDAModelLM` (an OLMo-style config).
#[derive(Deserialize)]
struct LladaConfig {
    d_model: usize,
    n_heads: usize,
    n_kv_heads: Option<usize>,
    n_layers: usize,
    vocab_size: usize,
    embedding_size: Option<usize>,
    mlp_hidden_size: usize,
    max_sequence_length: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    weight_tying: Option<bool>,
    block_type: Option<String>,
    include_bias: Option<bool>,
    include_qkv_bias: Option<bool>,
}

/// Qwen2 (`DreamModel`, Open-dCoder) and Qwen3 (`SDARForCausalLM`) configs, which name the same
/// geometry the same way.
#[derive(Deserialize)]
struct QwenConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    num_hidden_layers: usize,
    head_dim: Option<usize>,
    vocab_size: usize,
    intermediate_size: usize,
    max_position_embeddings: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    attention_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    hidden_act: Option<String>,
}

/// One token id; an id beyond u32 is refused, never truncated (2^32 + 5 must not become 5).
#[derive(Clone, Copy)]
struct TokenId(u32);

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TokenId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token id below 2^32")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<TokenId, E> {
                u32::try_from(n)
                    .map(TokenId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A token id field that may be null, a number or a list of numbers.
#[derive(Default)]
struct TokenIds(Vec<u32>);

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TokenIds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token id below 2^32 or a list of token ids")
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<TokenIds, E> {
                Ok(TokenIds::default())
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<TokenIds, E> {
                u32::try_from(n)
                    .map(|n| TokenIds(vec![n]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<TokenIds, A::Error> {
                let mut ids = Vec::new();
                while let Some(TokenId(t)) = a.next_element()? {
                    ids.push(t);
                }
                Ok(TokenIds(ids))
            }
        }
        d.deserialize_any(V)
    }
}

/// Deserializes `T` from `v`; a wrong type is an error naming the file and the path of the field
/// (`eos_token_id[1]`), a missing required field one naming the field and saying "missing".
fn typed<T: serde::de::DeserializeOwned>(v: &Value, file: &Path) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let problem = e.into_inner().to_string();
        match problem
            .strip_prefix("missing field `")
            .and_then(|f| f.strip_suffix('`'))
        {
            Some(field) => Error::ConfigField {
                file: file.to_path_buf(),
                field: if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                },
                problem: "missing".into(),
            },
            None => Error::ConfigField {
                file: file.to_path_buf(),
                field: path,
                problem,
            },
        }
    })
}

/// A value that has the right type but not an acceptable value.
fn bad(v: &Value, file: &Path, key: &str, expected: &str) -> Error {
    Error::ConfigField {
        file: file.to_path_buf(),
        field: key.into(),
        problem: format!(
            "expected {expected}, found {}",
            v.get(key).map(|x| x.to_string()).unwrap_or_default()
        ),
    }
}

/// Reads a token id field that may be absent, null, a number or a list of numbers.
pub fn ids_of(v: Option<&Value>) -> Option<Vec<u32>> {
    match v {
        None => Some(Vec::new()),
        Some(v) => TokenIds::deserialize(v).ok().map(|t| t.0),
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
        if !v.is_object() {
            return Err(Error::Parse {
                file: file.to_path_buf(),
                problem: format!("expected a JSON object, found {v}"),
            });
        }
        let c: Common = typed(v, file)?;
        let arch = c
            .architectures
            .as_ref()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        let model_type = c.model_type.as_deref().unwrap_or("").to_lowercase();
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
                        c.model_type.as_deref().unwrap_or("")
                    ),
                    supported: SUPPORTED_ARCHITECTURES.join(", "),
                })
            }
        };
        let mask_token_id = c.mask_token_id.map(|t| t.0);
        let eos_token_ids = c.eos_token_id.0;
        let bos_token_id = c.bos_token_id.0.first().copied();
        let pad_token_id = c.pad_token_id.0.first().copied();
        let torch_dtype = c.torch_dtype.or(c.dtype);
        let block_size = c.block_size.or(c.bd_size);
        let fim_layout = c.fim_layout;
        if fim_layout
            .as_deref()
            .is_some_and(|f| f != crate::fim::LAYOUT)
        {
            return Err(bad(
                v,
                file,
                "fim_layout",
                &format!("{:?} (the only layout unmask knows)", crate::fim::LAYOUT),
            ));
        }

        let cfg = match family {
            Family::Llada => {
                let l: LladaConfig = typed(v, file)?;
                let (hidden, heads) = (l.d_model, l.n_heads);
                if heads > 0 && !hidden.is_multiple_of(heads) {
                    return Err(bad(
                        v,
                        file,
                        "n_heads",
                        &format!("a divisor of d_model {hidden}"),
                    ));
                }
                if l.block_type.as_deref().is_some_and(|bt| bt != "llama") {
                    return Err(bad(
                        v,
                        file,
                        "block_type",
                        "\"llama\" (the only LLaDA block type published)",
                    ));
                }
                if l.include_bias.unwrap_or(false) || l.include_qkv_bias.unwrap_or(false) {
                    return Err(bad(
                        v,
                        file,
                        "include_bias",
                        "false (LLaDA checkpoints carry no biases)",
                    ));
                }
                ModelConfig {
                    family,
                    architecture: arch,
                    vocab_size: l.vocab_size,
                    embedding_size: l.embedding_size.unwrap_or(l.vocab_size),
                    hidden_size: hidden,
                    // LLaDA's SwiGLU gate and up projections are each `mlp_hidden_size` wide.
                    intermediate_size: l.mlp_hidden_size,
                    num_layers: l.n_layers,
                    num_heads: heads,
                    num_kv_heads: l.n_kv_heads.unwrap_or(heads),
                    head_dim: hidden / heads.max(1),
                    rope_theta: l.rope_theta.unwrap_or(10000.0),
                    rms_norm_eps: l.rms_norm_eps.unwrap_or(1e-5),
                    max_position_embeddings: l.max_sequence_length.unwrap_or(4096),
                    qkv_bias: false,
                    qk_norm: false,
                    tie_word_embeddings: l.weight_tying.unwrap_or(false),
                    block_size,
                    mask_token_id,
                    eos_token_ids,
                    bos_token_id,
                    pad_token_id,
                    torch_dtype,
                    fim_layout: fim_layout.clone(),
                }
            }
            Family::Dream | Family::Sdar => {
                let q: QwenConfig = typed(v, file)?;
                let (hidden, heads) = (q.hidden_size, q.num_attention_heads);
                if q.head_dim.is_none() && heads > 0 && !hidden.is_multiple_of(heads) {
                    return Err(bad(
                        v,
                        file,
                        "num_attention_heads",
                        &format!("a divisor of hidden_size {hidden} (or give head_dim)"),
                    ));
                }
                if q.hidden_act.as_deref().is_some_and(|a| a != "silu") {
                    return Err(bad(v, file, "hidden_act", "\"silu\""));
                }
                ModelConfig {
                    family,
                    architecture: arch,
                    vocab_size: q.vocab_size,
                    embedding_size: q.vocab_size,
                    hidden_size: hidden,
                    intermediate_size: q.intermediate_size,
                    num_layers: q.num_hidden_layers,
                    num_heads: heads,
                    num_kv_heads: q.num_key_value_heads.unwrap_or(heads),
                    head_dim: q.head_dim.unwrap_or(hidden / heads.max(1)),
                    rope_theta: q.rope_theta.unwrap_or(10000.0),
                    rms_norm_eps: q.rms_norm_eps.unwrap_or(1e-6),
                    max_position_embeddings: q.max_position_embeddings.unwrap_or(32768),
                    qkv_bias: family == Family::Dream || q.attention_bias.unwrap_or(false),
                    qk_norm: family == Family::Sdar,
                    tie_word_embeddings: q.tie_word_embeddings.unwrap_or(false),
                    block_size,
                    mask_token_id,
                    eos_token_ids,
                    bos_token_id,
                    pad_token_id,
                    torch_dtype,
                    fim_layout: fim_layout.clone(),
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
