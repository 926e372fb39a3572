//! `unmask train`: the candle training loop from the command line.

use std::path::PathBuf;

use clap::Args;

use crate::train::{NetConfig, TrainOptions};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model shape: `real` (the embedded model's, hidden 384 × 6 layers) or `tiny` (hidden 32 ×
    /// 2 layers, for smoke runs). Ignored with --resume and --init (the checkpoint's shape is used).
    #[arg(long, value_enum, default_value = "real")]
    pub config: Shape,
    /// Training data: .u16 token files, folders with train.u16, or text files / folders.
    #[arg(long, num_args = 1.., default_value = ".device/tokens")]
    pub data: Vec<PathBuf>,
    /// Tokenizer for text data and the output folder [default: the --init folder's
    /// tokenizer.json, else assets/tokenizer.json].
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output folder: a loadable model folder plus resume.safetensors (weights, Adam moments and
    /// step, written atomically), train_state.json and train_log.jsonl.
    #[arg(long, default_value = "data/runs/candle")]
    pub out: PathBuf,
    /// Continue from a checkpoint folder written by an earlier run.
    #[arg(long, conflicts_with = "init")]
    pub resume: Option<PathBuf>,
    /// Start from a model folder's weights (e.g. `assets`, the embedded model) at step 0 with a
    /// fresh optimizer; its shape replaces --config. With --fim-rate its embedding grows by the
    /// three FIM sentinels' rows (initialised to the mean embedding).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Share of training windows rearranged for fill-in-the-middle, suffix first
    /// (`<|fim_suffix|> S <|fim_prefix|> P <|fim_middle|> M <|endoftext|>`), in both stages; the
    /// tokenizer gains the sentinels. 0 = off. Recommended: 0.5 (docs/training.md).
    #[arg(long, default_value_t = 0.0)]
    pub fim_rate: f64,
    /// Mask-based (stage 1) steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Edit-based (stage 2) steps after stage 1.
    #[arg(long, default_value_t = 0)]
    pub stage2_steps: usize,
    /// Stop after this many steps in all (the LR schedule still spans every step).
    #[arg(long)]
    pub stop_at: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Clean tokens per step.
    #[arg(long, default_value_t = 8192)]
    pub batch_tokens: usize,
    /// Block sizes drawn per step, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    pub blocks: Vec<usize>,
    /// How often each block size is drawn, comma-separated (one weight per block size).
    #[arg(long, value_delimiter = ',', default_value = "1,1,2,2,1,1")]
    pub block_weights: Vec<f64>,
    #[arg(long, default_value_t = 2e-3)]
    pub lr1: f64,
    #[arg(long, default_value_t = 6e-4)]
    pub lr2: f64,
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    #[arg(long, default_value_t = 0.25)]
    pub edit_prob: f64,
    #[arg(long, default_value_t = 200)]
    pub save_every: usize,
    /// Write the log file only.
    #[arg(long)]
    pub quiet: bool,
}

/// The model shapes `unmask train` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    Real,
    Tiny,
}

pub fn run(a: &TrainArgs) -> anyhow::Result<()> {
    let net = match a.config {
        Shape::Real => NetConfig::real(),
        Shape::Tiny => NetConfig::tiny(),
    };
    let d = TrainOptions::default();
    let o = TrainOptions {
        net,
        data: a.data.clone(),
        tokenizer: a.tokenizer.clone().unwrap_or_else(|| match &a.init {
            Some(dir) => dir.join("tokenizer.json"),
            None => PathBuf::from("assets/tokenizer.json"),
        }),
        out: a.out.clone(),
        resume: a.resume.clone(),
        init: a.init.clone(),
        fim_rate: a.fim_rate,
        stage1_steps: a.steps,
        stage2_steps: a.stage2_steps,
        stop_at: a.stop_at,
        seed: a.seed,
        seq_len: a.seq_len,
        batch_tokens: a.batch_tokens,
        blocks: a.blocks.clone(),
        block_weights: a.block_weights.clone(),
        lr1: a.lr1,
        lr2: a.lr2,
        warmup1: a.warmup,
        warmup2: a.warmup.min(d.warmup2),
        clip: a.clip,
        edit_prob: a.edit_prob,
        save_every: a.save_every,
        quiet: a.quiet,
        ..d
    };
    let logs = crate::train::train(&o)?;
    if let Some(last) = logs.last() {
        eprintln!(
            "trained to step {} (loss {:.4}); checkpoint in {}",
            last.step,
            last.loss,
            o.out.display()
        );
    }
    Ok(())
}
