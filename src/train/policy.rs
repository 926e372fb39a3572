//! Seed Diffusion's later stages on the candle trainer, fed by the model's own decoding:
//!
//! * **constrained-order training** — decode each training prefix several times (different
//!   seeds, temperature > 0), keep the trajectory that parses and has the highest mean log
//!   probability of its commits, and fine-tune on *its* order: at a random step `s` of a block,
//!   the positions the trajectory had not committed yet are masked and predicted;
//! * **on-policy step reduction** — decode each prefix with few steps and with many; a few-step
//!   result that the verifier accepts (parses, agrees with the many-step output) is kept as it is,
//!   otherwise the many-step output becomes the target under the few-step commit order, so the
//!   model learns to get right, from a heavily masked block, what it only got right with many
//!   steps. Both produce [`Trajectory`]s; [`order_batch`] turns them into 2L training batches and
//!   [`fine_tune`] runs the optimizer from an existing checkpoint.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::batch::Batch;
use super::{net, AdamW, NetConfig, StepLog, TrainOptions, TrainState, MASK_ID, PAD_ID};
use crate::model::DiffusionModel;
use crate::sampler::SamplerParams;
use crate::session::{self, TextTask};
use crate::trace::Trace;

/// One decoded run, as training material.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Prompt ids then the generated ids (to the end of the decoded region).
    pub canvas: Vec<u32>,
    pub gen_start: usize,
    pub block: usize,
    /// Per canvas position: the step within its block at which the position was (last)
    /// committed; `None` for given positions.
    pub rank: Vec<Option<usize>>,
    /// Mean natural log of the probability each final token had when it was committed.
    pub mean_logp: f64,
    /// Prompt text + completion text.
    pub text: String,
}

impl Trajectory {
    /// The trajectory of a finished run (`None` if it did not finish or generated nothing).
    pub fn from_trace(t: &Trace) -> Option<Self> {
        let fin = t.finish.as_ref()?;
        let h = &t.header;
        if fin.tokens.is_empty() {
            return None;
        }
        let mut canvas = h.initial[..h.gen_start].to_vec();
        canvas.extend(&fin.tokens);
        let mut rank = vec![None; canvas.len()];
        let mut logp = vec![0f64; canvas.len()];
        for e in &t.events {
            for c in &e.commits {
                if c.pos < canvas.len() {
                    rank[c.pos] = Some(e.step);
                    logp[c.pos] = (c.prob.max(1e-12) as f64).ln();
                }
            }
        }
        let ranked: Vec<f64> = (0..canvas.len())
            .filter(|&i| rank[i].is_some())
            .map(|i| logp[i])
            .collect();
        if ranked.is_empty() {
            return None;
        }
        Some(Trajectory {
            canvas,
            gen_start: h.gen_start,
            block: h.params.block_size,
            rank,
            mean_logp: ranked.iter().sum::<f64>() / ranked.len() as f64,
            text: format!("{}{}", h.prompt, fin.text),
        })
    }
}

/// Decodes `prompt` once per seed with `params` and returns the trajectories.
pub fn rollouts(
    m: &DiffusionModel,
    prompt: &str,
    params: &SamplerParams,
    seeds: &[u64],
) -> crate::error::Result<Vec<Trajectory>> {
    let cancel = AtomicBool::new(false);
    let task = TextTask::Complete {
        prompt: prompt.to_string(),
    };
    let mut out = Vec::new();
    for &seed in seeds {
        let p = SamplerParams {
            seed,
            ..params.clone()
        };
        let t = session::generate(m, &task, false, &p, "cpu", &cancel, &mut |_| {})?;
        out.extend(Trajectory::from_trace(&t));
    }
    Ok(out)
}

/// The trajectory to imitate: among those the verifier accepts (`valid[i]`), the one with the
/// highest mean log probability; ties go to the earlier one.
pub fn select_best(trajs: &[Trajectory], valid: &[bool]) -> Option<usize> {
    (0..trajs.len())
        .filter(|&i| valid.get(i).copied().unwrap_or(false))
        .fold(None, |best: Option<usize>, i| match best {
            Some(b) if trajs[b].mean_logp >= trajs[i].mean_logp => Some(b),
            _ => Some(i),
        })
}

/// Fraction of generated positions where two trajectories of the same prompt agree.
pub fn agreement(a: &Trajectory, b: &Trajectory) -> f64 {
    if a.gen_start != b.gen_start {
        return 0.0;
    }
    let n = a.canvas.len().max(b.canvas.len()) - a.gen_start;
    let same = (a.gen_start..a.canvas.len().min(b.canvas.len()))
        .filter(|&i| a.canvas[i] == b.canvas[i])
        .count();
    same as f64 / n.max(1) as f64
}

/// On-policy step reduction for one prompt: the few-step rollout when the verifier accepts it
/// (it parses and agrees with the many-step output on at least `min_agreement` of positions),
/// else the many-step tokens under the few-step commit order (when the many-step output is
/// accepted); `None` when neither is usable.
pub fn distil_target(
    few: &Trajectory,
    few_valid: bool,
    many: &Trajectory,
    many_valid: bool,
    min_agreement: f64,
) -> Option<Trajectory> {
    if few_valid && agreement(few, many) >= min_agreement {
        return Some(few.clone());
    }
    if !many_valid || few.gen_start != many.gen_start || few.block != many.block {
        return None;
    }
    let len = few.canvas.len().min(many.canvas.len());
    Some(Trajectory {
        canvas: many.canvas[..len].to_vec(),
        gen_start: few.gen_start,
        block: few.block,
        rank: few.rank[..len].to_vec(),
        mean_logp: many.mean_logp,
        text: many.text.clone(),
    })
}

/// A 2L batch of `l` tokens per row from trajectories that share one block size: prompt and
/// padding carry no loss; in every block holding generated positions a step `s` is drawn
/// uniformly from the block's steps and the positions committed at step `s` or later are masked
/// (the state the trajectory's decoder was in before step `s`) and predicted.
pub fn order_batch(trajs: &[&Trajectory], l: usize, rng: &mut impl Rng) -> anyhow::Result<Batch> {
    let first = trajs.first().context("no trajectories")?;
    let b = first.block.max(1);
    anyhow::ensure!(
        trajs.iter().all(|t| t.block == first.block),
        "trajectories of one batch must share a block size"
    );
    anyhow::ensure!(l.is_multiple_of(b), "block {b} must divide the length {l}");
    let mut noisy = Vec::with_capacity(trajs.len() * l);
    let mut clean = Vec::with_capacity(trajs.len() * l);
    let mut kind = vec![0u8; trajs.len() * l];
    for (row, t) in trajs.iter().enumerate() {
        anyhow::ensure!(
            t.canvas.len() <= l,
            "a trajectory of {} tokens does not fit rows of {l}",
            t.canvas.len()
        );
        let mut c = t.canvas.clone();
        c.resize(l, PAD_ID);
        let mut x = c.clone();
        let k = &mut kind[row * l..(row + 1) * l];
        for s in (0..t.canvas.len()).step_by(b) {
            let e = (s + b).min(t.canvas.len());
            let Some(max) = (s..e).filter_map(|i| t.rank[i]).max() else {
                continue;
            };
            let step = rng.random_range(0..=max);
            for i in s..e {
                if t.rank[i].is_some_and(|r| r >= step) {
                    x[i] = MASK_ID;
                    k[i] = 1;
                }
            }
        }
        noisy.extend(x);
        clean.extend(c);
    }
    Ok(Batch {
        b: trajs.len(),
        l,
        noisy,
        clean,
        kind,
    })
}

/// A fine-tuning run from an existing checkpoint folder.
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    /// Model folder to start from (its `config.json`, `model.safetensors`, `tokenizer.json`).
    pub init: PathBuf,
    pub out: PathBuf,
    pub steps: usize,
    /// Trajectories per step.
    pub rows: usize,
    /// Row length (trajectories are padded to it).
    pub seq_len: usize,
    pub lr: f64,
    pub warmup: usize,
    pub clip: f64,
    pub seed: u64,
    pub quiet: bool,
}

/// The network shape of a model folder's `config.json`.
pub fn net_config(folder: &Path) -> anyhow::Result<NetConfig> {
    let f = folder.join("config.json");
    let s = std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?;
    serde_json::from_str(&s).with_context(|| format!("{}: not an SDAR-style config", f.display()))
}

/// Fine-tunes the checkpoint in `o.init` on `trajs` (all of one block size) and writes an
/// ordinary model folder to `o.out`; returns the per-step log.
pub fn fine_tune(o: &FinetuneOptions, trajs: &[Trajectory]) -> anyhow::Result<Vec<StepLog>> {
    anyhow::ensure!(!trajs.is_empty(), "no trajectories to fine-tune on");
    let device = Device::Cpu;
    let cfg = net_config(&o.init)?;
    let vm = VarMap::new();
    let model = net::Net::new(&cfg, &vm, &device)?;
    super::vocab::load_weights(&vm, &o.init)?;
    let mut opt = AdamW::new(&vm, 0.1)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("{}", o.out.display()))?;
    let log_file = o.out.join("train_log.jsonl");
    let mut log =
        std::fs::File::create(&log_file).with_context(|| format!("{}", log_file.display()))?;
    let positions: Vec<usize> = (0..o.seq_len).chain(0..o.seq_len).collect();
    let mut biases: HashMap<usize, Tensor> = HashMap::new();
    let mut by_block: HashMap<usize, Vec<&Trajectory>> = HashMap::new();
    for t in trajs {
        by_block.entry(t.block).or_default().push(t);
    }
    let mut blocks: Vec<usize> = by_block.keys().copied().collect();
    blocks.sort_unstable();
    let mut logs = Vec::new();
    let mut tokens = 0u64;
    let bar = crate::progress::Progress::new(o.steps, "fine-tune");
    for step in 0..o.steps {
        bar.set_position(step);
        let t0 = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(o.seed.wrapping_mul(1_000_003) ^ step as u64);
        let block = blocks[rng.random_range(0..blocks.len())];
        let pool = &by_block[&block];
        let rows: Vec<&Trajectory> = (0..o.rows)
            .map(|_| pool[rng.random_range(0..pool.len())])
            .collect();
        let bt = order_batch(&rows, o.seq_len, &mut rng)?;
        if !bt.kind.iter().any(|&k| k > 0) {
            continue;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = biases.entry(block) {
            e.insert(net::two_l_bias(o.seq_len, block, &device)?);
        }
        let lr = super::lr_at(o.lr, step, o.warmup, o.steps, 0.1);
        let (loss, _, _, gnorm) = super::step_on_batch(
            &model,
            &mut opt,
            &bt,
            &biases[&block],
            &positions,
            lr,
            o.clip,
        )?;
        let loss_v = loss.to_scalar::<f32>()?;
        anyhow::ensure!(loss_v.is_finite(), "non-finite loss at step {}", step + 1);
        tokens += (bt.b * bt.l) as u64;
        let row = StepLog {
            step: step + 1,
            stage: 3,
            loss: loss_v,
            mask_loss: Some(loss_v),
            edit_loss: None,
            lr,
            grad_norm: gnorm as f32,
            block,
            seq_len: bt.l,
            tokens,
            tok_per_s: (bt.b * bt.l) as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        let line = serde_json::to_string(&row)?;
        writeln!(log, "{line}").with_context(|| format!("{}", log_file.display()))?;
        if !o.quiet {
            bar.suspend(|| println!("{line}"));
        }
        bar.message(format!("loss {loss_v:.4}"));
        logs.push(row);
    }
    drop(bar);
    let state = TrainState {
        step: o.steps,
        tokens,
        seed: o.seed,
        net: cfg.clone(),
        adam_t: opt.t,
    };
    let to = TrainOptions {
        net: cfg,
        tokenizer: o.init.join("tokenizer.json"),
        out: o.out.clone(),
        blocks: blocks.clone(),
        block_weights: vec![1.0; blocks.len()],
        ..TrainOptions::default()
    };
    super::save_checkpoint(&o.out, &vm, &opt, &state, &to, None)?;
    Ok(logs)
}
