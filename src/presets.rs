//! Published checkpoints unmask knows by name: hub id, geometry, memory, and the sampler settings
//! their authors recommend. Facts come from /work/shared/reference/dllm-inference.md (cited per
//! entry as "ref §N"); where the notes mark a value secondary or unverified, so does the comment.
//!
//! Geometry is kept as the `config.json` the checkpoint publishes (the fields our loader reads), so
//! the parameter count goes through the same [`ModelConfig`] code as a real download, and
//! `unmask make-random-checkpoint --like KEY` can write a folder with the published shapes.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::Result;
use crate::model::{Family, ModelConfig};
use crate::sampler::{Filters, SamplerParams, Schedule, UnmaskRule};

/// One published model.
#[derive(Clone, Debug)]
pub struct Preset {
    /// Short name for `--like` and the table, e.g. `sdar-1.7b-chat`.
    pub key: &'static str,
    /// Hugging Face hub id, `org/name`.
    pub hub_id: &'static str,
    pub family: Family,
    /// Instruct/chat model: prompts go through the chat template.
    pub chat: bool,
    geometry: Geometry,
    sampler: fn() -> SamplerParams,
    /// Where the recommended sampler settings come from.
    pub settings_source: &'static str,
    /// Caveats a user should know (unverified facts, loader requirements).
    pub note: &'static str,
}

/// The shape of a checkpoint, as its `config.json` states it.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
    tied: bool,
    max_positions: usize,
    rope_theta: f64,
    mask_id: u32,
    eos: &'static [u32],
    bos: Option<u32>,
    pad: Option<u32>,
}

// Qwen2.5-7B shape shared by the Dream family (ref §3.1, "[secondary, two mirrors agree]").
const DREAM_7B: Geometry = Geometry {
    hidden: 3584,
    layers: 28,
    heads: 28,
    kv_heads: 4,
    head_dim: 128,
    intermediate: 18944,
    vocab: 152064,
    tied: false,
    // Not in the notes: Qwen2.5-7B's value [unverified]; ref §3.1 calls 2048 tokens practical.
    max_positions: 131072,
    rope_theta: 1e6,
    // ref §3.3: `<|mask|>` 151666, `<|endoftext|>` 151643 is EOS and PAD.
    mask_id: 151666,
    eos: &[151643],
    bos: Some(151643),
    pad: Some(151643),
};

// SDAR-4B-Chat as published (/work/shared/reference/published/SDAR-4B-Chat/config.json).
const SDAR_4B: Geometry = Geometry {
    hidden: 2560,
    layers: 36,
    heads: 32,
    kv_heads: 8,
    head_dim: 128,
    intermediate: 9728,
    vocab: 151936,
    tied: false,
    max_positions: 32768,
    rope_theta: 1e6,
    mask_id: 151669,
    // generation_config.json: [151645 <|im_end|>, 151643 <|endoftext|>].
    eos: &[151645, 151643],
    bos: Some(151643),
    pad: Some(151643),
};

/// Every preset, smallest first.
pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            key: "open-dcoder-0.5b",
            hub_id: "fredzzp/open-dcoder-0.5B",
            family: Family::Dream,
            chat: false,
            // ref §9: Qwen2.5-0.5B geometry [secondary], tied embeddings, head_dim 896/14 = 64.
            geometry: Geometry {
                hidden: 896,
                layers: 24,
                heads: 14,
                kv_heads: 2,
                head_dim: 64,
                intermediate: 4864,
                vocab: 151936,
                tied: true,
                // Not in the notes: Qwen2.5-0.5B's value [unverified].
                max_positions: 32768,
                rope_theta: 1e6,
                // ref §9: "id via tokenizer; likely 151665 [unverified]".
                mask_id: 151665,
                eos: &[151643],
                bos: None,
                pad: Some(151643),
            },
            // ref §9: Dream-like MDM, default alg entropy, steps 512 for 512 tokens (one token per
            // step), eps 1e-3 (= the timestep schedule). The notes give no temperature: greedy here.
            sampler: || SamplerParams {
                gen_length: 256,
                block_size: 256,
                steps: 256,
                rule: UnmaskRule::Entropy,
                schedule: Schedule::Timestep,
                ..SamplerParams::default()
            },
            settings_source: "ref §9 (Open-dLLM sampler defaults)",
            note: "base model (no chat template); mask id 151665 is unverified; our loader needs \
                   `mask_token_id` in config.json or a mask token in the tokenizer",
        },
        Preset {
            key: "sdar-1.7b-chat",
            hub_id: "JetLM/SDAR-1.7B-Chat",
            family: Family::Sdar,
            chat: true,
            // ref §4.1: hidden 2048, 28 layers, 16 heads, 8 KV heads, intermediate 6144
            // [secondary]; head_dim 128 and vocab 151936 as for the whole family. Tied embeddings
            // are NOT stated in the notes: assumed from Qwen3-1.7B, whose published size (1.7 B
            // total, 1.4 B without embeddings) only adds up with one shared embedding matrix.
            geometry: Geometry {
                hidden: 2048,
                layers: 28,
                heads: 16,
                kv_heads: 8,
                head_dim: 128,
                intermediate: 6144,
                tied: true,
                ..SDAR_4B
            },
            sampler: sdar_settings,
            settings_source:
                "ref §4.4 (block 4, 4 steps, dynamic threshold 0.85, greedy as in the README eval)",
            note: "tied embeddings assumed (Qwen3-1.7B); geometry secondary",
        },
        Preset {
            key: "sdar-4b-chat",
            hub_id: "JetLM/SDAR-4B-Chat",
            family: Family::Sdar,
            chat: true,
            geometry: SDAR_4B,
            sampler: sdar_settings,
            settings_source:
                "ref §4.4 (block 4, 4 steps, dynamic threshold 0.85, greedy as in the README eval)",
            note: "config as published (reference/published/SDAR-4B-Chat)",
        },
        Preset {
            key: "trado-4b-instruct",
            hub_id: "Gen-Verse/TraDo-4B-Instruct",
            family: Family::Sdar,
            chat: true,
            // ref §4.1: "TraDo-4B/8B-Instruct use the same architecture and sampler" as SDAR; the
            // 4B shape is taken to be SDAR-4B's [unverified for TraDo's own config.json].
            geometry: SDAR_4B,
            // ref §4.1: block 4, 4 denoising steps, dynamic threshold 0.9 (dLLM-RL configs).
            sampler: || SamplerParams {
                threshold: 0.9,
                ..sdar_settings()
            },
            settings_source: "ref §4.1 (dLLM-RL configs: block 4, 4 steps, dynamic threshold 0.9)",
            note: "shape assumed equal to SDAR-4B",
        },
        Preset {
            key: "dream-v0-instruct-7b",
            hub_id: "Dream-org/Dream-v0-Instruct-7B",
            family: Family::Dream,
            chat: true,
            geometry: DREAM_7B,
            // ref §3.5 README: steps = max_new_tokens, temperature 0.2, top_p 0.95, alg entropy,
            // alg_temp 0; one block over the whole answer with Dream's timestep schedule.
            sampler: || dream_settings(0.2),
            settings_source: "ref §3.5 (README: steps = tokens, T 0.2, top-p 0.95, entropy)",
            note: "practical context 2048 tokens (ref §3.1)",
        },
        Preset {
            key: "dream-coder-v0-instruct-7b",
            hub_id: "Dream-org/Dream-Coder-v0-Instruct-7B",
            family: Family::Dream,
            chat: true,
            // ref §3.1: Qwen2.5-Coder-7B geometry (the same shape as Qwen2.5-7B).
            geometry: DREAM_7B,
            // ref §3.5 Dream-Coder demos: temperature 0.1, steps = max_new_tokens, entropy,
            // top_p 0.95. Their extra `eos_penalty` 3.0 is not implemented (semantics unverified).
            sampler: || dream_settings(0.1),
            settings_source: "ref §3.5 (Dream-Coder demo: T 0.1, top-p 0.95, entropy)",
            note: "`eos_penalty` of the demos not applied (semantics unverified)",
        },
        Preset {
            key: "diffucoder-7b-cpgrpo",
            hub_id: "apple/DiffuCoder-7B-cpGRPO",
            family: Family::Dream,
            chat: true,
            // ref §3.1: Qwen2.5-Coder based, same class as Dream.
            geometry: DREAM_7B,
            // ref §3.5: temperature 0.2-0.3, top_p 0.95, alg entropy, steps = max_new_tokens /
            // TOKEN_PER_STEP. The notes do not give TOKEN_PER_STEP: one token per step here.
            sampler: || dream_settings(0.3),
            settings_source: "ref §3.5 (DiffuCoder: T 0.2-0.3, top-p 0.95, entropy)",
            note: "tokenizer pad is `<|dlm_pad|>` 151667 (ref §3.3)",
        },
        Preset {
            key: "llada-8b-instruct",
            hub_id: "GSAI-ML/LLaDA-8B-Instruct",
            family: Family::Llada,
            chat: true,
            // ref §2.1 (verified values): d_model 4096, 32 heads (MHA), 32 layers, mlp 12288,
            // vocab = embedding 126464, max 4096, rope_theta 5e5, mask 126336, eos 126081,
            // untied. BOS 126080 (ref §2.4).
            geometry: Geometry {
                hidden: 4096,
                layers: 32,
                heads: 32,
                kv_heads: 32,
                head_dim: 128,
                intermediate: 12288,
                vocab: 126464,
                tied: false,
                max_positions: 4096,
                rope_theta: 500000.0,
                mask_id: 126336,
                eos: &[126081],
                bos: Some(126080),
                pad: Some(126081),
            },
            // ref §5.3 (Fast-dLLM chat defaults): gen 256, block 32, steps = gen_length, i.e. one
            // token per step; ref §2.7: steps = gen_length gives the best quality; greedy.
            sampler: || SamplerParams {
                gen_length: 256,
                block_size: 32,
                steps: 32,
                rule: UnmaskRule::LowConfidence,
                filters: Filters::PlainScores,
                ..SamplerParams::default()
            },
            settings_source: "ref §2.7 + §5.3 (gen 256, block 32, one token per step, greedy)",
            note: "faster: rule threshold 0.9 (Fast-dLLM, ref §5.3)",
        },
    ]
}

fn sdar_settings() -> SamplerParams {
    SamplerParams {
        gen_length: 256,
        block_size: 4,
        steps: 4,
        rule: UnmaskRule::Threshold,
        threshold: 0.85,
        temperature: 0.0,
        ..SamplerParams::default()
    }
}

fn dream_settings(temperature: f32) -> SamplerParams {
    SamplerParams {
        gen_length: 256,
        block_size: 256,
        steps: 256,
        rule: UnmaskRule::Entropy,
        schedule: Schedule::Timestep,
        temperature,
        top_p: 0.95,
        // Dream's generation config leaves top_k unset, and transformers fills it with its global
        // default 50: the reference filters to the 50 most likely tokens (after top-p).
        top_k: 50,
        filters: Filters::TopPThenTopK,
        ..SamplerParams::default()
    }
}

/// The family's reference defaults (dllm-inference.md §2.7, §3.5, §4.4), greedy, for
/// `gen_length` tokens; `trained_block` is the checkpoint's `block_size` when it has one. The
/// sampler knows no family: what a family needs is in these plain fields (`filters`, `rule`,
/// `schedule` …) and in `ModelFacts::aligned_blocks`.
pub fn reference_params(
    family: Family,
    trained_block: Option<usize>,
    gen_length: usize,
) -> SamplerParams {
    let base = SamplerParams {
        gen_length,
        ..Default::default()
    };
    match family {
        // LLaDA: semi-autoregressive blocks of 32, one token per step (best quality).
        Family::Llada => {
            let b = if gen_length.is_multiple_of(32) {
                32
            } else {
                gen_length
            };
            SamplerParams {
                block_size: b,
                steps: b,
                filters: Filters::PlainScores,
                ..base
            }
        }
        // Dream: one block over the whole length, entropy ordering, Dream's schedule,
        // steps = tokens (the README's recommendation), top-p 0.95.
        Family::Dream => SamplerParams {
            block_size: gen_length,
            steps: gen_length,
            rule: UnmaskRule::Entropy,
            schedule: Schedule::Timestep,
            top_p: 0.95,
            // transformers fills Dream's unset top_k with its default 50 (presets.rs).
            top_k: 50,
            filters: Filters::TopPThenTopK,
            ..base
        },
        // SDAR: the trained block size (4 for the published chats), as many steps.
        Family::Sdar => {
            let b = trained_block.unwrap_or(4);
            SamplerParams {
                block_size: b,
                steps: b,
                ..base
            }
        }
    }
}

/// Finds a preset by key, hub id or display name (case-insensitive).
pub fn find(name: &str) -> Option<Preset> {
    let n = name.to_lowercase();
    all()
        .into_iter()
        .find(|p| p.key == n || p.hub_id.to_lowercase() == n || p.name().to_lowercase() == n)
}

impl Preset {
    /// The repository part of the hub id, e.g. `SDAR-1.7B-Chat`.
    pub fn name(&self) -> &'static str {
        self.hub_id.rsplit('/').next().unwrap_or(self.hub_id)
    }

    /// The sampler settings recommended for this model.
    pub fn sampler(&self) -> SamplerParams {
        (self.sampler)()
    }

    /// A `config.json` with the published geometry, in the family's own field names.
    pub fn config_json(&self) -> Value {
        let g = &self.geometry;
        let eos: Value = if g.eos.len() == 1 {
            json!(g.eos[0])
        } else {
            json!(g.eos)
        };
        match self.family {
            Family::Llada => json!({
                "architectures": ["LLaDAModelLM"],
                "model_type": "llada",
                "d_model": g.hidden,
                "n_heads": g.heads,
                "n_kv_heads": g.kv_heads,
                "n_layers": g.layers,
                "mlp_hidden_size": g.intermediate,
                "vocab_size": g.vocab,
                "embedding_size": g.vocab,
                "max_sequence_length": g.max_positions,
                "rope_theta": g.rope_theta,
                "rms_norm_eps": 1e-5,
                "block_type": "llama",
                "activation_type": "silu",
                "weight_tying": g.tied,
                "include_bias": false,
                "mask_token_id": g.mask_id,
                "eos_token_id": eos,
                "bos_token_id": g.bos,
                "pad_token_id": g.pad,
                "torch_dtype": "bfloat16",
            }),
            Family::Dream | Family::Sdar => {
                let (arch, model_type) = match (self.family, self.key) {
                    (Family::Sdar, _) => ("SDARForCausalLM", "sdar"),
                    (_, "open-dcoder-0.5b") => ("Qwen2ForCausalLM", "qwen2"),
                    _ => ("DreamModel", "Dream"),
                };
                let mut v = json!({
                    "architectures": [arch],
                    "model_type": model_type,
                    "hidden_size": g.hidden,
                    "num_hidden_layers": g.layers,
                    "num_attention_heads": g.heads,
                    "num_key_value_heads": g.kv_heads,
                    "head_dim": g.head_dim,
                    "intermediate_size": g.intermediate,
                    "vocab_size": g.vocab,
                    "max_position_embeddings": g.max_positions,
                    "rope_theta": g.rope_theta,
                    "rms_norm_eps": 1e-6,
                    "hidden_act": "silu",
                    "tie_word_embeddings": g.tied,
                    "mask_token_id": g.mask_id,
                    "eos_token_id": eos,
                    "bos_token_id": g.bos,
                    "pad_token_id": g.pad,
                    "torch_dtype": "bfloat16",
                });
                if self.family == Family::Sdar {
                    v["attention_bias"] = json!(false);
                    v["block_size"] = json!(4);
                }
                v
            }
        }
    }

    /// The normalised config our loader derives from [`Preset::config_json`].
    pub fn model_config(&self) -> Result<ModelConfig> {
        ModelConfig::from_value(
            &self.config_json(),
            Path::new(&format!("preset {}", self.key)),
        )
    }

    /// Parameters implied by the geometry.
    pub fn parameters(&self) -> u64 {
        self.model_config()
            .map(|c| c.parameter_count())
            .unwrap_or(0)
    }

    /// Bytes the weights take in memory at `bytes_per_param` (4 for f32, 2 for bf16/f16).
    /// Activations and the key/value cache come on top (a few hundred MB at 2k tokens).
    pub fn weight_bytes(&self, bytes_per_param: u64) -> u64 {
        self.parameters() * bytes_per_param
    }
}

/// GiB with one decimal, for tables.
pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_builds_a_valid_config() {
        for p in all() {
            let c = p.model_config().expect(p.key);
            assert_eq!(c.family, p.family, "{}", p.key);
            assert!(
                p.sampler().problems(0, None).is_empty(),
                "{}: {:?}",
                p.key,
                p.sampler().problems(0, None)
            );
        }
    }

    #[test]
    fn parameter_counts_match_the_published_sizes() {
        let billions = |k: &str| find(k).map(|p| p.parameters() as f64 / 1e9).unwrap_or(0.0);
        assert!((billions("llada-8b-instruct") - 8.0).abs() < 0.1);
        assert!((billions("dream-v0-instruct-7b") - 7.6).abs() < 0.1);
        assert!((billions("sdar-1.7b-chat") - 1.7).abs() < 0.05);
        assert!((billions("sdar-4b-chat") - 4.4).abs() < 0.1);
        assert!((billions("open-dcoder-0.5b") - 0.49).abs() < 0.02);
    }

    #[test]
    fn find_accepts_key_hub_id_and_name() {
        assert_eq!(
            find("JetLM/SDAR-1.7B-Chat").map(|p| p.key),
            Some("sdar-1.7b-chat")
        );
        assert_eq!(
            find("sdar-1.7b-chat").map(|p| p.key),
            Some("sdar-1.7b-chat")
        );
        assert_eq!(
            find("SDAR-1.7B-Chat").map(|p| p.key),
            Some("sdar-1.7b-chat")
        );
        assert!(find("nope").is_none());
    }
}
