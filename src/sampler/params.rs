//! `SamplerParams`: every knob of the decoder, shared by the GUI, the CLI and the trace header.

use serde::{Deserialize, Serialize};

/// Which masked positions a step commits. Command-line names are the kebab-case of the variants,
/// the same as [`UnmaskRule::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UnmaskRule {
    /// Top-k by p(x̂) (LLaDA `low_confidence`, SDAR static).
    LowConfidence,
    /// Top-k by p₁ − p₂.
    Margin,
    /// Top-k by negative entropy Σ p log p (Dream `entropy`).
    Entropy,
    /// Top-k by a uniform random score.
    Random,
    /// The leftmost masked positions first.
    LeftToRight,
    /// Every position with p(x̂) > τ, at least one per step (Fast-dLLM / SDAR dynamic).
    Threshold,
}

impl UnmaskRule {
    pub const ALL: [UnmaskRule; 6] = [
        UnmaskRule::LowConfidence,
        UnmaskRule::Margin,
        UnmaskRule::Entropy,
        UnmaskRule::Random,
        UnmaskRule::LeftToRight,
        UnmaskRule::Threshold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnmaskRule::LowConfidence => "low-confidence",
            UnmaskRule::Margin => "margin",
            UnmaskRule::Entropy => "entropy",
            UnmaskRule::Random => "random",
            UnmaskRule::LeftToRight => "left-to-right",
            UnmaskRule::Threshold => "threshold",
        }
    }

    /// What the rule ranks on, in words.
    pub fn score_name(self) -> &'static str {
        match self {
            UnmaskRule::LowConfidence | UnmaskRule::Threshold => "probability p(x̂)",
            UnmaskRule::Margin => "margin p₁ − p₂",
            UnmaskRule::Entropy => "negative entropy Σ p log p",
            UnmaskRule::Random => "random draw",
            UnmaskRule::LeftToRight => "position (leftmost first)",
        }
    }
}

/// How many positions a step commits (ignored by the threshold rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The block's masks split evenly over its steps, remainder first (LLaDA, SDAR).
    Uniform,
    /// Dream's schedule: t = linspace(1, 1e-3, steps+1), commit ⌊n·(1 − s/t)⌋, the rest at the end.
    Timestep,
}

impl Schedule {
    pub const ALL: [Schedule; 2] = [Schedule::Uniform, Schedule::Timestep];
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Uniform => "uniform",
            Schedule::Timestep => "timestep",
        }
    }
}

/// How logits become the distribution a step draws from and ranks on, as each reference does it.
/// The orders differ only when top-k and top-p are both on; the scores differ only at
/// temperature ≠ 0 (LLaDA).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Filters {
    /// Temperature, then top-k, then top-p over what top-k kept; scores from that distribution
    /// (SDAR's `sample_with_temperature_topk_topp`).
    #[default]
    TopKThenTopP,
    /// Temperature, then top-p over the whole distribution, then top-k; scores from that
    /// distribution (Dream's `sample_tokens`).
    TopPThenTopK,
    /// Draws as [`Filters::TopKThenTopP`], but scores come from the plain softmax at temperature 1
    /// (LLaDA's `generate`, which has no top-k / top-p of its own).
    PlainScores,
}

/// Every sampler knob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerParams {
    /// Tokens to generate (the masked region).
    pub gen_length: usize,
    /// Tokens per block; `gen_length` = one block = unblocked diffusion; 1 = autoregressive.
    pub block_size: usize,
    /// Denoising steps per block (an upper bound: steps that would commit nothing are skipped).
    pub steps: usize,
    pub rule: UnmaskRule,
    /// τ of the threshold rule.
    pub threshold: f32,
    pub schedule: Schedule,
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    pub seed: u64,
    /// Stop at the end of the block that produced an end-of-text or end-of-turn token.
    pub stop_at_eos: bool,
    /// Probability of re-opening a committed token at a non-final step (see `noise.rs`).
    pub edit_noise: f32,
    /// Reuse the exact keys/values of finished blocks (block-causal models).
    pub kv_cache: bool,
    /// An approximate cache, off by default. Bidirectional models: Fast-dLLM's prefix cache,
    /// refreshed at each block (the exact path recomputes the whole canvas every step).
    /// Block-causal models with `kv_cache`: a finished block's keys and values are kept from its
    /// last denoising forward instead of a clean forward of the finished block (stale for the
    /// tokens committed at that last step; one row-pass per token fewer).
    pub approx_cache: bool,
    /// Prompt-boundary healing of text prompts (see `heal.rs`); the ids given directly are never
    /// changed. Read when text becomes ids; the trace header records what was healed.
    pub heal: bool,
    /// CTRL-style repetition penalty on tokens already on the canvas; 1 = off.
    pub repetition_penalty: f32,
    /// Ban tokens that would repeat an n-gram already left of the position; 0 = off.
    pub no_repeat_ngram: usize,
    /// The reference's filter order and score distribution (set per family by
    /// `presets::reference_params`).
    pub filters: Filters,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            gen_length: 128,
            block_size: 8,
            steps: 4,
            rule: UnmaskRule::LowConfidence,
            threshold: 0.9,
            schedule: Schedule::Uniform,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop_at_eos: true,
            edit_noise: 0.0,
            kv_cache: true,
            approx_cache: false,
            heal: true,
            repetition_penalty: 1.0,
            no_repeat_ngram: 0,
            filters: Filters::TopKThenTopP,
        }
    }
}

/// A parameter problem, named by the field it is about, so a GUI can show it next to the control.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamProblem {
    pub field: &'static str,
    pub message: String,
}

impl std::fmt::Display for ParamProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl SamplerParams {
    /// Checks the combination; `fixed_len` is the number of prompt (and suffix) tokens and
    /// `context` the model's context length, when known.
    pub fn problems(&self, fixed_len: usize, context: Option<usize>) -> Vec<ParamProblem> {
        let mut v = Vec::new();
        let mut p = |field: &'static str, message: String| v.push(ParamProblem { field, message });
        if self.gen_length == 0 {
            p("gen_length", "must be at least 1".into());
        }
        if self.block_size == 0 {
            p("block_size", "must be at least 1".into());
        } else if !self.gen_length.is_multiple_of(self.block_size) {
            p(
                "block_size",
                format!(
                    "{} does not divide the generation length {} (try {} or {})",
                    self.block_size,
                    self.gen_length,
                    largest_divisor_at_most(self.gen_length, self.block_size),
                    self.gen_length
                ),
            );
        }
        if self.steps == 0 {
            p("steps", "must be at least 1".into());
        } else if self.block_size > 0
            && self.steps > self.block_size
            && self.rule != UnmaskRule::Threshold
        {
            p(
                "steps",
                format!(
                    "{} steps for a block of {} tokens: at most {} can commit anything",
                    self.steps, self.block_size, self.block_size
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            p("threshold", "must be within [0, 1]".into());
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            p("temperature", "must be ≥ 0".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            p("top_p", "must be within (0, 1]".into());
        }
        if !(0.0..=1.0).contains(&self.edit_noise) {
            p("edit_noise", "must be within [0, 1]".into());
        }
        if !(self.repetition_penalty >= 1.0 && self.repetition_penalty.is_finite()) {
            p("repetition_penalty", "must be ≥ 1 (1 = off)".into());
        }
        if let Some(ctx) = context {
            if fixed_len
                .checked_add(self.gen_length)
                .is_none_or(|n| n > ctx)
            {
                p("gen_length", format!("prompt ({fixed_len} tokens) + {} generated exceed the model's context of {ctx}", self.gen_length));
            }
        }
        v
    }

    /// Whether a step must adjust logits before proposing (repetition control).
    pub fn controls_repetition(&self) -> bool {
        self.repetition_penalty > 1.0 || self.no_repeat_ngram > 0
    }

    /// Autoregressive decoding with these settings otherwise: one token per block and step
    /// (the rule then has one candidate; low confidence names it), no edit noise. Length,
    /// temperature, filters, seed and stopping are kept, so a comparison differs only in order.
    pub fn autoregressive(&self) -> Self {
        SamplerParams {
            block_size: 1,
            steps: 1,
            rule: UnmaskRule::LowConfidence,
            edit_noise: 0.0,
            ..self.clone()
        }
    }

    /// Steps in flight per block if every step commits its planned share.
    pub fn tokens_per_step(&self) -> f32 {
        self.block_size as f32 / self.steps.max(1) as f32
    }
}

fn largest_divisor_at_most(n: usize, k: usize) -> usize {
    (1..=k.min(n))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}
