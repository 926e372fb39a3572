//! Checkpoint loading and the forward pass of the supported diffusion LMs.

pub mod config;
pub mod cpu_linear;
pub mod denoiser;
pub mod device;
pub mod host;
pub mod rows_kernel;
pub mod team;
pub mod tokens;
pub mod transformer;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

pub use config::{Attention, Family, ModelConfig};
pub use denoiser::ModelDenoiser;
pub use transformer::{CpuKernels, KvCache, Mask, Transformer};

use crate::error::{Error, Result};
use tokens::{Resolved, SideFiles};

/// Where the embedded default model lives: `$UNMASK_EMBEDDED_DIR`; else the crate's `assets/`
/// (a checkout); else `assets/` beside the executable or two folders up (`target/release/`);
/// else `./assets`.
pub fn embedded_dir() -> PathBuf {
    if let Ok(d) = std::env::var("UNMASK_EMBEDDED_DIR") {
        return PathBuf::from(d);
    }
    let crate_assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let mut candidates = vec![crate_assets.clone()];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(exe_dir.join("assets"));
        candidates.push(exe_dir.join("../../assets"));
    }
    candidates.push(PathBuf::from("assets"));
    candidates
        .into_iter()
        .find(|p| p.join("config.json").exists())
        .unwrap_or(crate_assets)
}

/// What `unmask inspect` reports; also the header of every trace.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    pub folder: PathBuf,
    pub config: ModelConfig,
    pub parameters: u64,
    pub mask: Resolved<u32>,
    pub stops: Resolved<Vec<u32>>,
    pub bos: Option<u32>,
    pub tokenizer_size: Option<usize>,
    /// Fill-in-the-middle sentinels, when the checkpoint was trained for `crate::fim`'s layout
    /// (its config says `fim_layout` and its tokenizer has the three sentinels): the one place
    /// the sampler learns whether block-causal infill is possible.
    pub fim: Option<crate::fim::FimTokens>,
    pub chat_template: Option<String>,
    /// Weight files and their total size, as found on disk (absent for metadata-only folders).
    pub weight_files: Vec<PathBuf>,
    pub weight_bytes_on_disk: u64,
    /// Stored dtype of the weights, from the first tensor or `torch_dtype`.
    pub stored_dtype: String,
    /// Short identity hash of config, tokenizer and weight files.
    pub hash: String,
}

impl ModelInfo {
    /// Reads everything but the weights: works on metadata-only folders too.
    pub fn inspect(folder: &Path) -> Result<(Self, Option<Tokenizer>)> {
        let cfg_file = folder.join("config.json");
        if !cfg_file.exists() {
            return Err(Error::io(
                &cfg_file,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "missing: not a checkpoint folder",
                ),
            ));
        }
        let config = ModelConfig::from_file(&cfg_file)?;
        let side = SideFiles::read(folder)?;
        let tok = match tokens::load_tokenizer(folder) {
            Ok(t) => Some(t),
            Err(e @ Error::Tokenizer { .. })
                if !folder.join("tokenizer.json").exists()
                    && !folder.join("vocab.json").exists() =>
            {
                return Err(e)
            }
            Err(e) => return Err(e),
        };
        let tokenizer_size = tok.as_ref().map(|t| t.get_vocab_size(true));
        if let Some(n) = tokenizer_size {
            if n > config.embedding_size {
                return Err(Error::Tokenizer {
                    file: folder.join("tokenizer.json"),
                    problem: format!(
                        "the tokenizer has {n} tokens but the embedding has {} rows ({})",
                        config.embedding_size,
                        cfg_file.display()
                    ),
                });
            }
        }
        let mask = tokens::resolve_mask(&config, tok.as_ref(), &side);
        if mask.value as usize >= config.embedding_size {
            return Err(Error::ConfigField {
                file: cfg_file.clone(),
                field: "mask_token_id".into(),
                problem: format!(
                    "mask id {} (from {}) is outside the embedding ({} rows)",
                    mask.value, mask.source, config.embedding_size
                ),
            });
        }
        let stops = tokens::resolve_stops(&config, tok.as_ref(), &side, mask.value);
        if let Some(id) = stops
            .value
            .iter()
            .find(|&&id| id as usize >= config.embedding_size)
        {
            return Err(Error::ConfigField {
                file: cfg_file.clone(),
                field: "eos_token_id".into(),
                problem: format!(
                    "stop id {id} (from {}) is outside the embedding ({} rows)",
                    stops.source, config.embedding_size
                ),
            });
        }
        let bos = tokens::resolve_bos(&config, tok.as_ref(), &side);
        let fim = match &config.fim_layout {
            None => None,
            Some(layout) => {
                let f = tok
                    .as_ref()
                    .and_then(|t| crate::fim::FimTokens::lookup(|s| t.token_to_id(s)));
                match f {
                    Some(f)
                        if f.ids()
                            .iter()
                            .all(|&i| (i as usize) < config.embedding_size) =>
                    {
                        Some(f)
                    }
                    _ => {
                        return Err(Error::ConfigField {
                            file: cfg_file.clone(),
                            field: "fim_layout".into(),
                            problem: format!(
                                "declares {layout:?}, but the tokenizer lacks the sentinels {} \
                                 inside the embedding ({} rows)",
                                crate::fim::SENTINELS.join(", "),
                                config.embedding_size
                            ),
                        })
                    }
                }
            }
        };
        let chat_template = side.chat_template(folder);
        let (weight_files, stored_dtype) = match weights::weight_files(folder) {
            Ok(files) => {
                let present: Vec<PathBuf> = files.into_iter().filter(|f| f.exists()).collect();
                (
                    present,
                    config
                        .torch_dtype
                        .clone()
                        .unwrap_or_else(|| "unknown".into()),
                )
            }
            Err(_) => (
                Vec::new(),
                config
                    .torch_dtype
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
            ),
        };
        check_index(folder, &config)?;
        let weight_bytes_on_disk = weight_files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let hash = identity_hash(folder, &weight_files)?;
        let parameters = config.parameter_count();
        Ok((
            ModelInfo {
                folder: folder.to_path_buf(),
                config,
                parameters,
                mask,
                stops,
                bos,
                tokenizer_size,
                fim,
                chat_template,
                weight_files,
                weight_bytes_on_disk,
                stored_dtype,
                hash,
            },
            tok,
        ))
    }

    /// A short multi-line description for the CLI and the GUI.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let gib = |b: f64| b / (1u64 << 30) as f64;
        let p = self.parameters as f64;
        format!(
            "folder:        {}\n\
             family:        {} ({})\n\
             attention:     {:?}{}\n\
             parameters:    {} ({:.1} M)\n\
             layers:        {} × hidden {} · heads {}/{} kv · head_dim {} · mlp {}\n\
             vocab:         {} (embedding rows {}, tokenizer {})\n\
             context:       {} positions\n\
             stored dtype:  {}\n\
             weights:       {} file(s), {:.3} GiB on disk\n\
             memory:        f32 {:.3} GiB · f16/bf16 {:.3} GiB\n\
             mask id:       {} (from {})\n\
             stop ids:      {:?} (from {})\n\
             chat template: {}\n\
             fill-in-mid.:  {}\n\
             hash:          {}",
            self.folder.display(),
            c.family.name(),
            c.architecture,
            c.family.attention(),
            if c.family.shifts_logits() {
                ", logits shifted by one"
            } else {
                ", same-position logits"
            },
            self.parameters,
            p / 1e6,
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
            c.intermediate_size,
            c.vocab_size,
            c.embedding_size,
            self.tokenizer_size
                .map(|n| n.to_string())
                .unwrap_or_else(|| "absent".into()),
            c.max_position_embeddings,
            self.stored_dtype,
            self.weight_files.len(),
            gib(self.weight_bytes_on_disk as f64),
            gib(p * 4.0),
            gib(p * 2.0),
            self.mask.value,
            self.mask.source,
            self.stops.value,
            self.stops.source,
            if self.chat_template.is_some() {
                "yes"
            } else {
                "no"
            },
            match &self.fim {
                Some(f) => format!(
                    "{} (sentinels {:?}): block-causal infill allowed",
                    crate::fim::LAYOUT,
                    f.ids()
                ),
                None => "no".into(),
            },
            self.hash,
        )
    }
}

/// Checks that a shard index names every tensor the architecture needs (works without weights).
fn check_index(folder: &Path, cfg: &ModelConfig) -> Result<()> {
    let index = folder.join("model.safetensors.index.json");
    if !index.exists() {
        return Ok(());
    }
    let map = weights::read_index(&index)?;
    for (name, _) in transformer::expected_tensors(cfg) {
        if !map.contains_key(&name) {
            return Err(Error::MissingTensor {
                name,
                files: index.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Hash of config.json, the tokenizer and the weights. Files up to 256 MiB are hashed whole;
/// larger shards contribute their size and first and last MiB (the safetensors header lists every
/// tensor's offsets), which identifies a published checkpoint without reading gigabytes.
fn identity_hash(folder: &Path, weight_files: &[PathBuf]) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut h = Sha256::new();
    for name in ["config.json", "tokenizer.json"] {
        if let Ok(bytes) = std::fs::read(folder.join(name)) {
            h.update(&bytes);
        }
    }
    for f in weight_files {
        let mut file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
        let len = file.metadata().map_err(|e| Error::io(f, e))?.len();
        h.update(len.to_le_bytes());
        if len <= 256 << 20 {
            let mut buf = Vec::new();
            file.read_to_end(&mut buf).map_err(|e| Error::io(f, e))?;
            h.update(&buf);
        } else {
            let mut buf = vec![0u8; 1 << 20];
            file.read_exact(&mut buf).map_err(|e| Error::io(f, e))?;
            h.update(&buf);
            file.seek(SeekFrom::End(-(1 << 20)))
                .map_err(|e| Error::io(f, e))?;
            file.read_exact(&mut buf).map_err(|e| Error::io(f, e))?;
            h.update(&buf);
        }
    }
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A model ready to denoise: network, tokenizer and resolved special ids.
pub struct DiffusionModel {
    pub info: ModelInfo,
    pub net: Transformer,
    pub tokenizer: Tokenizer,
    /// Decoded text of every vocabulary entry (special tokens empty), built on first use.
    vocab_texts: std::sync::OnceLock<Vec<String>>,
}

impl DiffusionModel {
    /// Loads a checkpoint folder as published on the Hugging Face hub.
    pub fn load(folder: &Path, dtype: DType, device: &Device) -> Result<Self> {
        Self::load_with(folder, dtype, device, CpuKernels::from_env())
    }

    /// Like [`load`](Self::load), with the forward kernels for f32 on the CPU chosen by the caller.
    pub fn load_with(
        folder: &Path,
        dtype: DType,
        device: &Device,
        cpu: CpuKernels,
    ) -> Result<Self> {
        let (info, tok) = ModelInfo::inspect(folder)?;
        Self::from_inspected_with(info, tok, dtype, device, cpu)
    }

    /// Loads a checkpoint with `dtype` given by name (`auto` picks from the device and the
    /// checkpoint's `torch_dtype`), inspecting the folder once; returns the dtype used.
    pub fn open(folder: &Path, dtype: &str, device: &Device) -> Result<(Self, DType)> {
        let (info, tok) = ModelInfo::inspect(folder)?;
        let dtype = parse_dtype(dtype, device, info.config.torch_dtype.as_deref())?;
        Ok((Self::from_inspected(info, tok, dtype, device)?, dtype))
    }

    /// Loads the weights of a folder already inspected (the inspection hashes the weight files,
    /// so callers that needed the facts first do not pay for it twice).
    pub fn from_inspected(
        info: ModelInfo,
        tok: Option<Tokenizer>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::from_inspected_with(info, tok, dtype, device, CpuKernels::from_env())
    }

    fn from_inspected_with(
        info: ModelInfo,
        tok: Option<Tokenizer>,
        dtype: DType,
        device: &Device,
        cpu: CpuKernels,
    ) -> Result<Self> {
        let folder = info.folder.clone();
        let folder = folder.as_path();
        let tokenizer = tok.ok_or_else(|| Error::Tokenizer {
            file: folder.join("tokenizer.json"),
            problem: "missing".into(),
        })?;
        let w = weights::Weights::open(folder)?;
        let net = Transformer::new_with(info.config.clone(), &w, dtype, device, cpu)?;
        Ok(DiffusionModel {
            info,
            net,
            tokenizer,
            vocab_texts: std::sync::OnceLock::new(),
        })
    }

    pub fn family(&self) -> Family {
        self.info.config.family
    }

    pub fn mask_id(&self) -> u32 {
        self.info.mask.value
    }

    /// Encodes plain text without adding special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                file: self.info.folder.join("tokenizer.json"),
                problem: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids, keeping special tokens out.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, true).unwrap_or_default()
    }

    /// The decoded text of every id the sampler may propose (special tokens: empty), computed
    /// once; prompt healing matches prefixes against it.
    pub fn vocab_texts(&self) -> &[String] {
        self.vocab_texts.get_or_init(|| {
            let n = self
                .info
                .config
                .vocab_size
                .min(self.info.tokenizer_size.unwrap_or(usize::MAX));
            (0..n as u32)
                .map(|id| self.tokenizer.decode(&[id], true).unwrap_or_default())
                .collect()
        })
    }

    /// The text of one token as it reads inside code (byte-level pieces decoded).
    pub fn token_text(&self, id: u32) -> String {
        if id == self.mask_id() {
            return "[MASK]".into();
        }
        match self.tokenizer.decode(&[id], false) {
            Ok(s) if !s.is_empty() => s,
            _ => self
                .tokenizer
                .id_to_token(id)
                .unwrap_or_else(|| format!("<{id}>")),
        }
    }

    /// Logits for every position of `ids` in one uncached forward, with the family's attention
    /// rule and logit shift. Block-causal models use `block_size` to build their mask.
    pub fn forward_all(&self, ids: &[u32], block_size: usize) -> Result<candle_core::Tensor> {
        let n = ids.len();
        let blocks: Vec<usize> = (0..n).map(|i| i / block_size.max(1)).collect();
        let mask = match self.family().attention() {
            Attention::Bidirectional => Mask::Full,
            Attention::BlockCausal => Mask::BlockCausal(&blocks),
        };
        let raw = self
            .net
            .forward(ids, 0, &mut KvCache::new(), 0, mask, 0..n)?;
        if self.family().shifts_logits() {
            Ok(shift_logits(&raw)?)
        } else {
            Ok(raw)
        }
    }
}

/// `out[0] = raw[0]`, `out[i] = raw[i-1]`: the token at i is predicted from position i−1.
pub fn shift_logits(raw: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    let n = raw.dim(0)?;
    if n < 2 {
        return Ok(raw.clone());
    }
    candle_core::Tensor::cat(&[&raw.narrow(0, 0, 1)?, &raw.narrow(0, 0, n - 1)?], 0)
}

/// Parses a dtype name; `auto` is f32 on CPU and the checkpoint's half type on CUDA.
pub fn parse_dtype(name: &str, device: &Device, torch_dtype: Option<&str>) -> Result<DType> {
    Ok(match name {
        "f32" | "float32" => DType::F32,
        "f16" | "float16" => DType::F16,
        "bf16" | "bfloat16" => DType::BF16,
        "auto" => {
            if device.is_cpu() {
                DType::F32
            } else if torch_dtype == Some("float16") {
                DType::F16
            } else {
                DType::BF16
            }
        }
        other => {
            return Err(Error::Invalid(format!(
                "unknown dtype `{other}`: use f32, f16, bf16 or auto"
            )))
        }
    })
}
