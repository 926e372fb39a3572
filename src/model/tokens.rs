//! Tokenizer loading and the resolution of special ids (mask, end-of-text, end-of-turn), each
//! with the source it came from so `unmask inspect` can say where an id was found.

use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::config::{ids_of, Family, ModelConfig};
use crate::error::{Error, Result};

/// Token strings that mark the mask token in published tokenizers, most specific first.
pub const MASK_TOKENS: &[&str] = &["<|mdm_mask|>", "<|mask|>", "<MASK>", "<|MASK|>"];
/// Token strings that end a turn or a text.
pub const STOP_TOKENS: &[&str] = &["<|endoftext|>", "<|eot_id|>", "<|im_end|>"];

/// An id and where it was found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Resolved<T> {
    pub value: T,
    pub source: String,
}

/// Loads `tokenizer.json`, or builds a byte-level BPE from `vocab.json` + `merges.txt` (plus
/// `added_tokens.json`) when only those are published.
pub fn load_tokenizer(folder: &Path) -> Result<Tokenizer> {
    let json = folder.join("tokenizer.json");
    if json.exists() {
        return Tokenizer::from_file(&json).map_err(|e| Error::Tokenizer {
            file: json,
            problem: e.to_string(),
        });
    }
    let vocab = folder.join("vocab.json");
    let merges = folder.join("merges.txt");
    if vocab.exists() && merges.exists() {
        return bpe_from_parts(folder, &vocab, &merges);
    }
    Err(Error::Tokenizer {
        file: json,
        problem: "missing (and no vocab.json + merges.txt to build one from); a checkpoint folder must publish its tokenizer".into(),
    })
}

fn bpe_from_parts(folder: &Path, vocab: &Path, merges: &Path) -> Result<Tokenizer> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::AddedToken;
    let v = vocab.to_string_lossy().to_string();
    let m = merges.to_string_lossy().to_string();
    let bpe = BPE::from_file(&v, &m)
        .build()
        .map_err(|e| Error::Tokenizer {
            file: vocab.to_path_buf(),
            problem: format!("with merges.txt: {e}"),
        })?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, false)));
    tok.with_decoder(Some(ByteLevel::default()));
    let added = folder.join("added_tokens.json");
    if added.exists() {
        let text = std::fs::read_to_string(&added).map_err(|e| Error::io(&added, e))?;
        let map: std::collections::BTreeMap<String, u32> =
            serde_json::from_str(&text).map_err(|e| Error::Parse {
                file: added.clone(),
                problem: e.to_string(),
            })?;
        let mut by_id: Vec<(u32, String)> = map.into_iter().map(|(k, v)| (v, k)).collect();
        by_id.sort();
        let tokens: Vec<AddedToken> = by_id
            .into_iter()
            .map(|(_, s)| AddedToken::from(s, true))
            .collect();
        tok.add_special_tokens(&tokens);
    }
    Ok(tok)
}

fn read_json(file: &Path) -> Result<Option<Value>> {
    if !file.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Parse {
            file: file.to_path_buf(),
            problem: e.to_string(),
        })
}

/// The optional JSON side files of a checkpoint.
pub struct SideFiles {
    pub generation_config: Option<Value>,
    pub tokenizer_config: Option<Value>,
}

impl SideFiles {
    pub fn read(folder: &Path) -> Result<Self> {
        Ok(SideFiles {
            generation_config: read_json(&folder.join("generation_config.json"))?,
            tokenizer_config: read_json(&folder.join("tokenizer_config.json"))?,
        })
    }

    /// The chat template, from `tokenizer_config.json` or a `chat_template.jinja` beside it.
    pub fn chat_template(&self, folder: &Path) -> Option<String> {
        if let Some(t) = self
            .tokenizer_config
            .as_ref()
            .and_then(|c| c.get("chat_template"))
        {
            if let Some(s) = t.as_str() {
                return Some(s.to_string());
            }
            // A list of named templates: take "default".
            if let Some(arr) = t.as_array() {
                for item in arr {
                    if item.get("name").and_then(Value::as_str) == Some("default") {
                        return item
                            .get("template")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                    }
                }
            }
        }
        std::fs::read_to_string(folder.join("chat_template.jinja")).ok()
    }

    fn token_field(&self, key: &str) -> Option<String> {
        let v = self.tokenizer_config.as_ref()?.get(key)?;
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    }
}

/// The BOS id: `bos_token_id` in config.json, then in generation_config.json (where LLaDA keeps
/// it), then the tokenizer_config's `bos_token` looked up in the tokenizer.
pub fn resolve_bos(cfg: &ModelConfig, tok: Option<&Tokenizer>, side: &SideFiles) -> Option<u32> {
    cfg.bos_token_id
        .or_else(|| {
            side.generation_config
                .as_ref()
                .and_then(|g| g.get("bos_token_id"))
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
        })
        .or_else(|| tok?.token_to_id(&side.token_field("bos_token")?))
}

fn family_default_mask(family: Family) -> u32 {
    match family {
        Family::Llada => 126336,
        Family::Dream => 151666,
        Family::Sdar => 151669,
    }
}

/// The mask id: `mask_token_id` in config.json, then the tokenizer's mask token, then the
/// family's published default.
pub fn resolve_mask(cfg: &ModelConfig, tok: Option<&Tokenizer>, side: &SideFiles) -> Resolved<u32> {
    if let Some(id) = cfg.mask_token_id {
        return Resolved {
            value: id,
            source: "config.json mask_token_id".into(),
        };
    }
    if let Some(id) = side
        .generation_config
        .as_ref()
        .and_then(|g| g.get("mask_token_id"))
        .and_then(Value::as_u64)
    {
        return Resolved {
            // Beyond u32: kept out of range (the embedding check rejects it), never truncated.
            value: u32::try_from(id).unwrap_or(u32::MAX),
            source: "generation_config.json mask_token_id".into(),
        };
    }
    if let Some(tok) = tok {
        if let Some(name) = side.token_field("mask_token") {
            if let Some(id) = tok.token_to_id(&name) {
                return Resolved {
                    value: id,
                    source: format!("tokenizer_config.json mask_token {name}"),
                };
            }
        }
        for name in MASK_TOKENS {
            if let Some(id) = tok.token_to_id(name) {
                return Resolved {
                    value: id,
                    source: format!("tokenizer token {name}"),
                };
            }
        }
    }
    Resolved {
        value: family_default_mask(cfg.family),
        source: format!("{} default", cfg.family.name()),
    }
}

/// Stop ids: EOS from config.json and generation_config.json, plus end-of-turn tokens the
/// tokenizer defines. The mask id is never a stop id.
pub fn resolve_stops(
    cfg: &ModelConfig,
    tok: Option<&Tokenizer>,
    side: &SideFiles,
    mask: u32,
) -> Resolved<Vec<u32>> {
    let mut ids: Vec<u32> = Vec::new();
    let mut sources = Vec::new();
    if !cfg.eos_token_ids.is_empty() {
        ids.extend(&cfg.eos_token_ids);
        sources.push("config.json eos_token_id".to_string());
    }
    if let Some(g) = ids_of(
        side.generation_config
            .as_ref()
            .and_then(|g| g.get("eos_token_id")),
    ) {
        if !g.is_empty() {
            ids.extend(g);
            sources.push("generation_config.json eos_token_id".into());
        }
    }
    if let Some(tok) = tok {
        if let Some(name) = side.token_field("eos_token") {
            if let Some(id) = tok.token_to_id(&name) {
                ids.push(id);
                sources.push(format!("tokenizer_config.json eos_token {name}"));
            }
        }
        for name in STOP_TOKENS {
            if let Some(id) = tok.token_to_id(name) {
                if !ids.contains(&id) {
                    ids.push(id);
                    sources.push(format!("tokenizer token {name}"));
                }
            }
        }
    }
    if ids.is_empty() {
        let d = match cfg.family {
            Family::Llada => vec![126081, 126348],
            Family::Dream | Family::Sdar => vec![151643, 151645],
        };
        // The published default only where this vocabulary has those ids (small test models).
        ids.extend(
            d.into_iter()
                .filter(|&id| (id as usize) < cfg.embedding_size),
        );
        sources.push(format!("{} default", cfg.family.name()));
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| *id != mask && seen.insert(*id));
    Resolved {
        value: ids,
        source: sources.join(" + "),
    }
}
