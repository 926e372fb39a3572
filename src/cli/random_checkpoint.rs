//! `unmask make-random-checkpoint`: random weights with a published model's shapes (from
//! `presets.rs`), so speed can be measured on a machine that cannot download the real weights.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde_json::json;

use crate::model;

#[derive(Args, Debug)]
pub struct MakeRandomArgs {
    /// Preset whose shapes to copy (see `unmask models`), e.g. sdar-1.7b-chat.
    #[arg(long)]
    pub like: String,
    #[arg(long)]
    pub out: PathBuf,
    /// bf16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Fewer layers than published (smoke tests).
    #[arg(long)]
    pub layers: Option<usize>,
    /// A smaller vocabulary (smoke tests); the special ids move to its top.
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Largest shard in MiB.
    #[arg(long, default_value_t = 4096)]
    pub shard_mib: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Writes config.json, generation_config.json, a byte-level tokenizer.json and sharded
/// safetensors of random weights (N(0, 0.02²) as training initialises, norms 1, biases 0).
pub fn run(args: &MakeRandomArgs) -> anyhow::Result<()> {
    let preset = crate::presets::find(&args.like)
        .ok_or_else(|| anyhow::anyhow!("unknown preset `{}`; one of: {}", args.like, keys()))?;
    let bf16 = match args.dtype.as_str() {
        "bf16" | "bfloat16" => true,
        "f32" | "float32" => false,
        other => anyhow::bail!("--dtype {other}: use bf16 or f32"),
    };
    let mut cfg_json = preset.config_json();
    if let Some(n) = args.layers {
        let key = if preset.family == model::Family::Llada {
            "n_layers"
        } else {
            "num_hidden_layers"
        };
        cfg_json[key] = json!(n);
    }
    if let Some(v) = args.vocab {
        anyhow::ensure!(
            v >= 300,
            "--vocab {v}: at least 300 (256 byte tokens + specials)"
        );
        cfg_json["vocab_size"] = json!(v);
        if cfg_json.get("embedding_size").is_some() {
            cfg_json["embedding_size"] = json!(v);
        }
        cfg_json["mask_token_id"] = json!(v - 1);
        cfg_json["eos_token_id"] = json!(v - 2);
        cfg_json["bos_token_id"] = json!(v - 3);
        cfg_json["pad_token_id"] = json!(v - 2);
    }
    cfg_json["torch_dtype"] = json!(if bf16 { "bfloat16" } else { "float32" });
    let cfg = model::ModelConfig::from_value(&cfg_json, &args.out.join("config.json"))?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    let write = |name: &str, v: &serde_json::Value| -> anyhow::Result<()> {
        Ok(crate::atomic::write_json(&args.out.join(name), v)?)
    };
    write("config.json", &cfg_json)?;
    write(
        "generation_config.json",
        &json!({ "eos_token_id": cfg.eos_token_ids, "bos_token_id": cfg.bos_token_id, "pad_token_id": cfg.pad_token_id }),
    )?;
    let mut specials = vec![(cfg.mask_token_id.unwrap_or(0), "<|mask|>")];
    specials.extend(cfg.eos_token_ids.iter().map(|&id| (id, "<|endoftext|>")));
    write("tokenizer.json", &byte_tokenizer(&specials))?;

    let tensors = model::transformer::expected_tensors(&cfg);
    let elem = if bf16 { 2u64 } else { 4 };
    let shard_bytes = args.shard_mib.max(1) << 20;
    // Group tensors into shards in order.
    let mut shards: Vec<Vec<(String, Vec<usize>)>> = vec![Vec::new()];
    let mut used = 0u64;
    for t in tensors {
        let bytes = t.1.iter().product::<usize>() as u64 * elem;
        if used > 0 && used + bytes > shard_bytes {
            shards.push(Vec::new());
            used = 0;
        }
        used += bytes;
        if let Some(last) = shards.last_mut() {
            last.push(t);
        }
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (k, shard) in shards.iter().enumerate() {
        let name = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", k + 1)
        };
        let path = args.out.join(&name);
        total += write_shard(&path, shard, bf16, args.seed.wrapping_add(k as u64))?;
        for (t, _) in shard {
            weight_map.insert(t.clone(), json!(name));
        }
        eprintln!("wrote {}", path.display());
    }
    if n > 1 {
        write(
            "model.safetensors.index.json",
            &json!({ "metadata": { "total_size": total }, "weight_map": weight_map }),
        )?;
    }
    println!("{}", args.out.display());
    Ok(())
}

fn keys() -> String {
    crate::presets::all()
        .iter()
        .map(|p| p.key)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One safetensors file, tensors generated and written one at a time; returns the data bytes.
fn write_shard(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    bf16: bool,
    seed: u64,
) -> anyhow::Result<u64> {
    let elem = if bf16 { 2usize } else { 4 };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * elem;
        header.insert(name.clone(), json!({ "dtype": if bf16 { "BF16" } else { "F32" }, "shape": shape, "data_offsets": [offset, offset + bytes] }));
        offset += bytes;
    }
    let mut head = serde_json::to_vec(&header)?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    crate::atomic::write(path, |f| {
        let mut w = std::io::BufWriter::with_capacity(8 << 20, f.as_file_mut());
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        write_tensors(&mut w, tensors, bf16, seed)?;
        w.flush()
    })?;
    Ok(offset as u64)
}

/// Every tensor's values in order: norms 1, biases 0, the rest random.
fn write_tensors(
    w: &mut impl Write,
    tensors: &[(String, Vec<usize>)],
    bf16: bool,
    seed: u64,
) -> std::io::Result<()> {
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let count: usize = shape.iter().product();
        let value = if name.ends_with("norm.weight")
            || name.contains("_norm.")
            || name.ends_with("ln_f.weight")
        {
            Fill::Const(1.0)
        } else if name.ends_with(".bias") {
            Fill::Const(0.0)
        } else {
            Fill::Random(0.02)
        };
        let data = fill(
            count,
            value,
            bf16,
            seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
        );
        w.write_all(&data)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Fill {
    Const(f32),
    /// Normal with mean 0 and this standard deviation (the training initialisation's).
    Random(f32),
}

/// Values per chunk of [`fill`]: each chunk draws from its own ChaCha stream (the chunk's index)
/// of the seed, so the bytes depend on the seed alone, not on the machine's core count.
const FILL_CHUNK: usize = 1 << 20;

/// Little-endian bytes of `count` values, generated on all cores for large tensors.
fn fill(count: usize, value: Fill, bf16: bool, seed: u64) -> Vec<u8> {
    use rayon::prelude::*;
    let elem = if bf16 { 2 } else { 4 };
    let mut out = vec![0u8; count * elem];
    out.par_chunks_mut(FILL_CHUNK * elem)
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(k as u64);
            // A standard deviation that is not finite or negative falls back to zeros.
            let normal = match value {
                Fill::Random(std) => Normal::new(0.0f32, std).ok(),
                Fill::Const(_) => None,
            };
            for cell in chunk.chunks_mut(elem) {
                let x = match (value, &normal) {
                    (Fill::Random(_), Some(n)) => n.sample(&mut rng),
                    (Fill::Const(c), _) => c,
                    (Fill::Random(_), None) => 0.0,
                };
                if bf16 {
                    cell.copy_from_slice(&half::bf16::from_f32(x).to_le_bytes());
                } else {
                    cell.copy_from_slice(&x.to_le_bytes());
                }
            }
        });
    out
}

/// A byte-level BPE tokenizer with no merges (one token per byte) plus the given special tokens
/// at their ids: enough to load and benchmark a random checkpoint.
fn byte_tokenizer(specials: &[(u32, &str)]) -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (id, ch) in byte_alphabet().into_iter().enumerate() {
        vocab.insert(ch.to_string(), json!(id));
    }
    let mut seen = Vec::new();
    let added: Vec<serde_json::Value> = specials
        .iter()
        .filter(|(id, _)| {
            let new = !seen.contains(id);
            seen.push(*id);
            new
        })
        .map(|(id, content)| {
            json!({ "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true })
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true },
        "post_processor": null,
        "decoder": { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true },
        "model": { "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": [] }
    })
}

/// The 256 printable characters byte-level BPE uses for the bytes 0..=255: printable Latin-1
/// bytes stand for themselves, the rest are shifted to U+0100 onwards in byte order.
fn byte_alphabet() -> Vec<char> {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let mut shifted = 0u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                shifted += 1;
                char::from_u32(255 + shifted).unwrap_or('?')
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn fill_draws_the_initialisation() {
        let n = 3 * FILL_CHUNK + 7;
        let a = fill(n, Fill::Random(0.02), false, 5);
        assert_eq!(a, fill(n, Fill::Random(0.02), false, 5), "seeded");
        assert_ne!(a, fill(n, Fill::Random(0.02), false, 6));
        let v = values(&a);
        assert_eq!(v.len(), n);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!(mean.abs() < 1e-4, "mean {mean}");
        assert!((std - 0.02).abs() < 2e-4, "std {std}");
        // Chunks are independent streams, not copies of one another.
        assert_ne!(v[..16], v[FILL_CHUNK..FILL_CHUNK + 16]);
        assert!(values(&fill(10, Fill::Const(1.0), false, 0))
            .iter()
            .all(|&x| x == 1.0));
        let half = fill(4, Fill::Const(1.0), true, 0);
        assert_eq!(half, [0x80, 0x3f, 0x80, 0x3f, 0x80, 0x3f, 0x80, 0x3f]);
    }
}
