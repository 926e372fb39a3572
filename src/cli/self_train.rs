//! `unmask self-train`: constrained-order training and on-policy step reduction (see
//! `train::policy`) on prefixes cut from Python files, starting from a checkpoint folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device};
use clap::Args;

use crate::model::DiffusionModel;
use crate::sampler::SamplerParams;
use crate::train::policy::{self, FinetuneOptions, Trajectory};

#[derive(Args, Debug)]
pub struct SelfTrainArgs {
    /// `orders` (constrained-order training) or `distil` (on-policy step reduction).
    #[arg(long)]
    pub mode: String,
    /// Checkpoint to start from: a folder, `embedded`, a preset key or a hub id.
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// Python files or folders to cut prefixes from (training code; never the held-out prompts).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Prefixes to decode.
    #[arg(long, default_value_t = 32)]
    pub prompts: usize,
    /// Tokens generated per rollout.
    #[arg(long, default_value_t = 32)]
    pub gen_length: usize,
    #[arg(long, default_value_t = 8)]
    pub block_size: usize,
    /// orders: trajectories sampled per prefix.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// orders: sampling temperature of the rollouts.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// distil: steps per block of the few-step rollout (the many-step one uses one per token).
    #[arg(long, default_value_t = 2)]
    pub few_steps: usize,
    /// distil: agreement with the many-step output that accepts a few-step rollout as is.
    #[arg(long, default_value_t = 0.8)]
    pub min_agreement: f64,
    /// Fine-tuning steps (0: only collect and report the trajectories).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 4)]
    pub rows: usize,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub quiet: bool,
}

/// Prefixes as people type them: a `def` line and the lines up to its first body line, ending
/// with a newline; at most `n`, in file order (files sorted by path).
pub fn prefixes(paths: &[PathBuf], n: usize) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if out.len() >= n {
                return Ok(out);
            }
            let t = l.trim_start();
            if (t.starts_with("def ") || t.starts_with("async def ")) && t.ends_with(':') {
                // The signature, plus the docstring's first line when there is one.
                let mut p = format!("{l}\n");
                if let Some(next) = lines.get(i + 1) {
                    if next.trim_start().starts_with("\"\"\"") {
                        p += &format!("{next}\n");
                    }
                }
                out.push(p);
            }
        }
    }
    anyhow::ensure!(!out.is_empty(), "no `def` lines found in the data");
    Ok(out)
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if p.is_dir() {
        for e in std::fs::read_dir(p).with_context(|| format!("{}", p.display()))? {
            collect(&e?.path(), out)?;
        }
    } else if p.extension().is_some_and(|e| e == "py") {
        out.push(p.to_path_buf());
    } else if !p.exists() {
        anyhow::bail!("--data: {} does not exist", p.display());
    }
    Ok(())
}

fn verdicts(trajs: &[&Trajectory]) -> anyhow::Result<Vec<bool>> {
    // The whole text (prompt + completion) is judged with the eval's rule; the prompt part is
    // empty so the judge sees exactly the text.
    let cases: Vec<serde_json::Value> = trajs
        .iter()
        .map(|t| serde_json::json!({"prompt": "", "completion": t.text, "stopped": false}))
        .collect();
    super::eval::judge(&cases)
}

pub fn run(a: &SelfTrainArgs) -> anyhow::Result<()> {
    let folder = super::download::resolve(&a.model, crate::hub::Need::Weights)?;
    let m = DiffusionModel::load(&folder, DType::F32, &Device::Cpu)?;
    let prompts = prefixes(&a.data, a.prompts)?;
    let base = SamplerParams {
        gen_length: a.gen_length,
        block_size: a.block_size,
        steps: a.block_size,
        stop_at_eos: false,
        ..Default::default()
    };
    if let Some(p) = base.problems(0, None).first() {
        anyhow::bail!("--{}: {}", p.field.replace('_', "-"), p.message);
    }
    let mut keep: Vec<Trajectory> = Vec::new();
    match a.mode.as_str() {
        "orders" => {
            let p = SamplerParams {
                temperature: a.temperature,
                ..base
            };
            let seeds: Vec<u64> = (0..a.samples as u64).collect();
            let bar = crate::progress::Progress::new(prompts.len(), "rollouts");
            for (i, pr) in prompts.iter().enumerate() {
                let trajs = policy::rollouts(&m, pr, &p, &seeds)?;
                let ok = verdicts(&trajs.iter().collect::<Vec<_>>())?;
                if let Some(b) = policy::select_best(&trajs, &ok) {
                    keep.push(trajs[b].clone());
                }
                bar.inc();
                bar.line(&format!(
                    "prefix {}/{}: {} of {} trajectories parse",
                    i + 1,
                    prompts.len(),
                    ok.iter().filter(|&&x| x).count(),
                    trajs.len()
                ));
            }
        }
        "distil" => {
            let few = SamplerParams {
                steps: a.few_steps,
                ..base.clone()
            };
            let (mut kept_few, mut distilled) = (0, 0);
            let bar = crate::progress::Progress::new(prompts.len(), "rollouts");
            for pr in &prompts {
                bar.inc();
                let f = policy::rollouts(&m, pr, &few, &[0])?;
                let g = policy::rollouts(&m, pr, &base, &[0])?;
                let (Some(f), Some(g)) = (f.first(), g.first()) else {
                    continue;
                };
                let ok = verdicts(&[f, g])?;
                if let Some(t) = policy::distil_target(f, ok[0], g, ok[1], a.min_agreement) {
                    if t == *f {
                        kept_few += 1;
                    } else {
                        distilled += 1;
                    }
                    keep.push(t);
                }
            }
            drop(bar);
            eprintln!(
                "{} prefixes: {kept_few} few-step rollouts accepted, {distilled} replaced by the many-step output",
                prompts.len()
            );
        }
        other => anyhow::bail!("--mode: unknown `{other}`; use `orders` or `distil`"),
    }
    anyhow::ensure!(!keep.is_empty(), "no rollout passed the verifier");
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}", a.out.display()))?;
    let f = a.out.join("trajectories.jsonl");
    let mut s = String::new();
    for t in &keep {
        s += &serde_json::to_string(t)?;
        s.push('\n');
    }
    crate::atomic::write_bytes(&f, s.as_bytes())?;
    eprintln!("{} trajectories in {}", keep.len(), f.display());
    if a.steps > 0 {
        let o = FinetuneOptions {
            init: folder,
            out: a.out.clone(),
            steps: a.steps,
            rows: a.rows,
            seq_len: a.seq_len,
            lr: a.lr,
            warmup: (a.steps / 10).max(1),
            clip: 1.0,
            seed: a.seed,
            quiet: a.quiet,
        };
        let logs = policy::fine_tune(&o, &keep)?;
        if let (Some(first), Some(last)) = (logs.first(), logs.last()) {
            eprintln!(
                "fine-tuned {} steps: loss {:.3} → {:.3}; model folder {}",
                logs.len(),
                first.loss,
                last.loss,
                a.out.display()
            );
        }
    }
    Ok(())
}
