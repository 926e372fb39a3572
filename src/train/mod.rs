//! Training the block-causal SDAR layout in candle, with the two-stage objective of
//! scripts/train_embedded.py:
//!
//! * stage 1, mask-based block diffusion in the 2L formulation: the input is `[x_t ; x]` at
//!   positions `[0..L, 0..L]`; a noisy block attends to itself and to the clean blocks before
//!   it, a clean block to the clean blocks up to itself. Each block is masked at its own ratio
//!   `t ~ U(eps, 1)`; the loss is the plain mean cross-entropy over masked positions.
//! * stage 2, edit-based: each block is, with probability `edit_prob`, corrupted by
//!   `sampler::noise::corrupt` at a Levenshtein budget `~ U(0, edit_rate_max)·B`, re-cut to `B`
//!   and partly masked; the loss covers every position of such blocks. Other blocks stay
//!   mask-based.
//!
//! Checkpoints are ordinary model folders (`model.safetensors`, `config.json`, tokenizer) plus
//! [`RESUME_FILE`] (weights, optimizer moments and step in one atomically written file), so a run
//! resumes exactly where it stopped, and a readable `train_state.json`.

pub mod batch;
pub mod net;
pub mod policy;
pub mod vocab;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

pub use net::NetConfig;

pub const EOS_ID: u32 = 0;
pub const MASK_ID: u32 = 1;
pub const PAD_ID: u32 = 2;
/// Ids below this are special (`<|endoftext|>`, `<|mask|>`, `<|pad|>`).
pub const FIRST_NORMAL: u32 = 3;

/// Everything a run needs. Defaults follow scripts/train_embedded.py.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    pub net: NetConfig,
    /// `.u16` files, folders with `train.u16`, or text files / folders of text.
    pub data: Vec<PathBuf>,
    pub tokenizer: PathBuf,
    pub out: PathBuf,
    /// A checkpoint folder written by an earlier run.
    pub resume: Option<PathBuf>,
    /// A model folder whose weights start the run (step 0, fresh optimizer), e.g. `assets`; its
    /// shape replaces `net`. With `fim_rate > 0` its embedding grows by the FIM sentinels' rows.
    pub init: Option<PathBuf>,
    /// Share of training windows rearranged for fill-in-the-middle (`crate::fim::transform`),
    /// in both stages. 0 leaves every batch exactly as without FIM.
    pub fim_rate: f64,
    /// Mask-based steps, then edit-based steps.
    pub stage1_steps: usize,
    pub stage2_steps: usize,
    pub seed: u64,
    pub seq_len: usize,
    /// Clean tokens per step (the batch is `batch_tokens / seq_len` rows).
    pub batch_tokens: usize,
    pub blocks: Vec<usize>,
    pub block_weights: Vec<f64>,
    pub lr1: f64,
    pub lr2: f64,
    pub warmup1: usize,
    pub warmup2: usize,
    pub min_lr_frac: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip: f64,
    pub edit_prob: f64,
    pub edit_rate_max: f64,
    pub edit_mask_max: f64,
    /// Checkpoint every this many steps (and always at the end).
    pub save_every: usize,
    /// Stop (and checkpoint) after this many steps in all, keeping the full schedule: a long
    /// run can be done in pieces with `resume`.
    pub stop_at: Option<usize>,
    /// No per-step line on stdout (the JSONL log is still written).
    pub quiet: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            net: NetConfig::real(),
            data: vec![PathBuf::from(".device/tokens")],
            tokenizer: PathBuf::from("assets/tokenizer.json"),
            out: PathBuf::from("data/runs/candle"),
            resume: None,
            init: None,
            fim_rate: 0.0,
            stage1_steps: 1000,
            stage2_steps: 0,
            seed: 0,
            seq_len: 512,
            batch_tokens: 8192,
            blocks: vec![1, 2, 4, 8, 16, 32],
            block_weights: vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0],
            lr1: 2e-3,
            lr2: 6e-4,
            warmup1: 200,
            warmup2: 50,
            min_lr_frac: 0.1,
            weight_decay: 0.1,
            clip: 1.0,
            edit_prob: 0.25,
            edit_rate_max: 0.3,
            edit_mask_max: 0.5,
            save_every: 200,
            stop_at: None,
            quiet: false,
        }
    }
}

/// One logged step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub stage: u8,
    pub loss: f32,
    pub mask_loss: Option<f32>,
    pub edit_loss: Option<f32>,
    pub lr: f64,
    pub grad_norm: f32,
    pub block: usize,
    pub seq_len: usize,
    pub tokens: u64,
    pub tok_per_s: f64,
}

/// What `train_state.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps done (the next step has this index).
    pub step: usize,
    pub tokens: u64,
    pub seed: u64,
    pub net: NetConfig,
    /// Optimizer steps taken (Adam's bias correction).
    pub adam_t: usize,
}

/// AdamW with the PyTorch script's settings: betas (0.9, 0.95), decay only on matrices. Written
/// here rather than `candle_nn::AdamW` because that one keeps its moments private, so they could
/// be neither checkpointed (exact resume) nor given per-parameter decay.
struct AdamW {
    vars: Vec<(String, Var)>,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    t: usize,
    wd: f64,
}

impl AdamW {
    const B1: f64 = 0.9;
    const B2: f64 = 0.95;
    const EPS: f64 = 1e-8;

    fn new(vm: &VarMap, wd: f64) -> anyhow::Result<Self> {
        let data = vm
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("parameter map lock poisoned"))?;
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        // A fixed order keeps the gradient-norm sum (and so a resumed run) reproducible.
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut m = HashMap::new();
        let mut v = HashMap::new();
        for (name, var) in &vars {
            m.insert(name.clone(), var.zeros_like()?);
            v.insert(name.clone(), var.zeros_like()?);
        }
        Ok(AdamW {
            vars,
            m,
            v,
            t: 0,
            wd,
        })
    }

    /// One update with learning rate `lr`, gradients scaled by `gscale` (clipping).
    fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        gscale: f64,
    ) -> candle_core::Result<()> {
        self.t += 1;
        let bc1 = 1.0 - Self::B1.powi(self.t as i32);
        let bc2 = 1.0 - Self::B2.powi(self.t as i32);
        for (name, var) in &self.vars {
            let Some(g) = grads.get(var) else { continue };
            let g = (g * gscale)?;
            let m = ((&self.m[name] * Self::B1)? + (&g * (1.0 - Self::B1))?)?;
            let v = ((&self.v[name] * Self::B2)? + (g.sqr()? * (1.0 - Self::B2))?)?;
            let upd = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + Self::EPS)?)?;
            let decay = if var.rank() >= 2 { self.wd } else { 0.0 };
            let theta = ((var.as_tensor() * (1.0 - lr * decay))? - (upd * lr)?)?;
            var.set(&theta)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }

    /// The moments as `m.<name>` and `v.<name>`, for the resume file.
    fn moments(&self) -> impl Iterator<Item = (String, &Tensor)> {
        let m = self.m.iter().map(|(k, t)| (format!("m.{k}"), t));
        m.chain(self.v.iter().map(|(k, t)| (format!("v.{k}"), t)))
    }

    /// Takes the moments back from the resume file's tensors.
    fn restore(&mut self, all: &HashMap<String, Tensor>, file: &Path) -> anyhow::Result<()> {
        for (name, var) in &self.vars {
            for (prefix, map) in [("m", &mut self.m), ("v", &mut self.v)] {
                let key = format!("{prefix}.{name}");
                map.insert(name.clone(), resume_tensor(all, &key, var, file)?.clone());
            }
        }
        Ok(())
    }
}

/// A tensor of a weights or resume file, checked against the parameter it belongs to.
pub(crate) fn resume_tensor<'a>(
    all: &'a HashMap<String, Tensor>,
    key: &str,
    var: &Var,
    file: &Path,
) -> anyhow::Result<&'a Tensor> {
    let t = all
        .get(key)
        .with_context(|| format!("{}: missing tensor `{key}`", file.display()))?;
    anyhow::ensure!(
        t.dims() == var.dims(),
        "{}: tensor `{key}` has shape {:?}, the model needs {:?}",
        file.display(),
        t.dims(),
        var.dims()
    );
    Ok(t)
}

/// Linear warmup, then cosine from `peak` to `peak·min_frac` over `total` steps.
fn lr_at(peak: f64, step: usize, warmup: usize, total: usize, min_frac: f64) -> f64 {
    let w = ((step + 1) as f64 / warmup.max(1) as f64).min(1.0);
    let prog = (step as f64 / total.max(1) as f64).clamp(0.0, 1.0);
    peak * w * (min_frac + (1.0 - min_frac) * 0.5 * (1.0 + (std::f64::consts::PI * prog).cos()))
}

fn check(o: &TrainOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        !o.blocks.is_empty() && o.blocks.len() == o.block_weights.len(),
        "blocks and block weights must be non-empty lists of the same length"
    );
    for &b in &o.blocks {
        anyhow::ensure!(
            b > 0 && o.seq_len.is_multiple_of(b),
            "block size {b} must divide the sequence length {}",
            o.seq_len
        );
    }
    anyhow::ensure!(o.seq_len > 0, "the sequence length must be positive");
    anyhow::ensure!(
        (0.0..=1.0).contains(&o.fim_rate),
        "--fim-rate {} must be between 0 and 1",
        o.fim_rate
    );
    anyhow::ensure!(
        o.fim_rate == 0.0 || o.seq_len >= 2 * crate::fim::OVERHEAD,
        "--fim-rate needs a sequence length of at least {} (three sentinels and an end-of-text \
         per window), not {}",
        2 * crate::fim::OVERHEAD,
        o.seq_len
    );
    anyhow::ensure!(
        o.init.is_none() || o.resume.is_none(),
        "--init starts a new run from a model's weights and --resume continues one: give one"
    );
    let c = &o.net;
    anyhow::ensure!(
        c.num_key_value_heads > 0 && c.num_attention_heads.is_multiple_of(c.num_key_value_heads),
        "attention heads ({}) must be a multiple of key/value heads ({})",
        c.num_attention_heads,
        c.num_key_value_heads
    );
    anyhow::ensure!(
        c.head_dim.is_multiple_of(2),
        "head_dim must be even (rotary halves)"
    );
    anyhow::ensure!(
        o.seq_len <= c.max_position_embeddings,
        "seq_len {} exceeds max_position_embeddings {}",
        o.seq_len,
        c.max_position_embeddings
    );
    Ok(())
}

/// What a resume reads: weights (`param.*`), Adam's moments (`m.*`, `v.*`) and the training
/// state (metadata `train_state`) in one file, written atomically, so that a crash can never pair
/// new weights with an old step or old moments.
pub const RESUME_FILE: &str = "resume.safetensors";

/// Writes `dir` as a loadable model folder plus the resume file and a readable `train_state.json`.
fn save_checkpoint(
    dir: &Path,
    vm: &VarMap,
    opt: &AdamW,
    state: &TrainState,
    o: &TrainOptions,
    tokenizer_json: Option<&str>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: creating", dir.display()))?;
    let data = vm
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("parameter map lock poisoned"))?;
    let params = data
        .iter()
        .map(|(k, v)| (format!("param.{k}"), v.as_tensor()));
    let resume: Vec<(String, &Tensor)> = params.chain(opt.moments()).collect();
    let meta = HashMap::from([("train_state".to_string(), serde_json::to_string(state)?)]);
    crate::atomic::write(&dir.join(RESUME_FILE), |f| {
        safetensors::serialize_to_file(resume, Some(meta), f.path()).map_err(std::io::Error::other)
    })?;
    let weights = data.iter().map(|(k, v)| (k.as_str(), v.as_tensor()));
    crate::atomic::write(&dir.join("model.safetensors"), |f| {
        safetensors::serialize_to_file(weights, None, f.path()).map_err(std::io::Error::other)
    })?;
    drop(data);
    let block = o
        .blocks
        .iter()
        .copied()
        .find(|&b| b == 8)
        .unwrap_or(o.blocks[0]);
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v);
    // The folder declares FIM when its tokenizer carries the sentinels inside the vocabulary
    // (only a FIM run, or a fine-tune of one, adds them).
    let sentinels = match tokenizer_json {
        Some(j) => {
            let t = tokenizers::Tokenizer::from_bytes(j.as_bytes())
                .map_err(|e| anyhow::anyhow!("the grown tokenizer: {e}"))?;
            crate::fim::FimTokens::lookup(|s| t.token_to_id(s))
        }
        None => vocab::sentinels_of(&o.tokenizer)?,
    };
    let fim =
        sentinels.is_some_and(|f| f.ids().iter().all(|&i| (i as usize) < state.net.vocab_size));
    crate::atomic::write_bytes(
        &dir.join("config.json"),
        &json(&state.net.to_hf_json(block, fim))?,
    )?;
    // The folder must carry its tokenizer to load like a downloaded checkpoint.
    if let Some(src_dir) = o.tokenizer.parent() {
        for name in ["tokenizer_config.json", "generation_config.json"] {
            let f = src_dir.join(name);
            if f.is_file() && f != dir.join(name) {
                copy_atomic(&f, &dir.join(name))?;
            }
        }
    }
    if let Some(j) = tokenizer_json {
        crate::atomic::write_bytes(&dir.join("tokenizer.json"), j.as_bytes())?;
    } else if o.tokenizer != dir.join("tokenizer.json") {
        copy_atomic(&o.tokenizer, &dir.join("tokenizer.json"))?;
    }
    crate::atomic::write_bytes(
        &dir.join("train_state.json"),
        &serde_json::to_vec_pretty(state)?,
    )?;
    Ok(())
}

fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("{}: reading", from.display()))?;
    Ok(crate::atomic::write_bytes(to, &bytes)?)
}

/// Reads a checkpoint's resume file: the state, and every tensor by name.
fn load_resume(dir: &Path) -> anyhow::Result<(TrainState, HashMap<String, Tensor>, PathBuf)> {
    let file = dir.join(RESUME_FILE);
    let bytes = std::fs::read(&file).with_context(|| {
        format!(
            "{}: cannot resume (the folder must be a checkpoint written by `unmask train`)",
            file.display()
        )
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", file.display()))?;
    let state = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("train_state"))
        .with_context(|| format!("{}: no `train_state` in the metadata", file.display()))?;
    let state: TrainState = serde_json::from_str(state)
        .with_context(|| format!("{}: `train_state` is not a training state", file.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("{}: reading tensors", file.display()))?;
    Ok((state, tensors, file))
}

/// Redraws every matrix from N(0, 0.02) with a seeded RNG (candle's CPU RNG cannot be seeded),
/// so that a run repeats exactly; norm weights keep their initial ones.
fn init_weights(vm: &VarMap, seed: u64) -> anyhow::Result<()> {
    let data = vm
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("parameter map lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1217);
    let normal = Normal::new(0.0f32, 0.02).map_err(|e| anyhow::anyhow!("{e}"))?;
    for name in names {
        let var = &data[name];
        if var.rank() < 2 {
            continue;
        }
        let vals: Vec<f32> = (0..var.elem_count())
            .map(|_| normal.sample(&mut rng))
            .collect();
        var.set(&Tensor::from_vec(vals, var.dims(), var.device())?)?;
    }
    Ok(())
}

fn pick_block(o: &TrainOptions, rng: &mut impl Rng) -> usize {
    let total: f64 = o.block_weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (b, w) in o.blocks.iter().zip(&o.block_weights) {
        if u < *w {
            return *b;
        }
        u -= w;
    }
    o.blocks[o.blocks.len() - 1]
}

/// One optimizer step on `bt` (2L formulation, loss = mean cross-entropy over the positions
/// with `kind > 0`); returns the loss, the per-position losses with their kinds, and the
/// gradient norm before clipping.
fn step_on_batch(
    model: &net::Net,
    opt: &mut AdamW,
    bt: &batch::Batch,
    bias: &Tensor,
    positions: &[usize],
    lr: f64,
    clip: f64,
) -> anyhow::Result<(Tensor, Tensor, Vec<u8>, f64)> {
    let device = bias.device().clone();
    let l = bt.l;
    let mut ids = Vec::with_capacity(bt.b * 2 * l);
    for r in 0..bt.b {
        ids.extend_from_slice(&bt.noisy[r * l..(r + 1) * l]);
        ids.extend_from_slice(&bt.clean[r * l..(r + 1) * l]);
    }
    let ids = Tensor::from_vec(ids, (bt.b, 2 * l), &device)?;
    let h = model.hidden(&ids, positions, bias)?;
    let h = h
        .narrow(1, 0, l)?
        .reshape((bt.b * l, model.cfg.hidden_size))?;
    let sel: Vec<u32> = (0..bt.b * l)
        .filter(|&i| bt.kind[i] > 0)
        .map(|i| i as u32)
        .collect();
    anyhow::ensure!(!sel.is_empty(), "a batch without any position to learn");
    let kinds: Vec<u8> = sel.iter().map(|&i| bt.kind[i as usize]).collect();
    let targets: Vec<u32> = sel.iter().map(|&i| bt.clean[i as usize]).collect();
    let nsel = sel.len();
    let sel = Tensor::from_vec(sel, nsel, &device)?;
    let targets = Tensor::from_vec(targets, nsel, &device)?;
    let logits = model.logits(&h.index_select(&sel, 0)?)?;
    let ce = net::cross_entropy(&logits, &targets)?;
    let loss = ce.mean_all()?;
    let grads = loss.backward()?;
    let mut sq = 0f64;
    for (_, var) in &opt.vars {
        if let Some(g) = grads.get(var) {
            sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let gnorm = sq.sqrt();
    let gscale = if clip > 0.0 && gnorm > clip {
        clip / (gnorm + 1e-6)
    } else {
        1.0
    };
    opt.step(&grads, lr, gscale)?;
    Ok((loss, ce, kinds, gnorm))
}

/// Runs (or resumes) training on the CPU and returns the log of the steps it ran.
pub fn train(o: &TrainOptions) -> anyhow::Result<Vec<StepLog>> {
    check(o)?;
    let device = Device::Cpu;
    let resume = o.resume.as_deref().map(load_resume).transpose()?;
    // FIM: the tokenizer with the sentinels (added after its vocabulary when it lacks them).
    let grown = (o.fim_rate > 0.0)
        .then(|| vocab::with_sentinels(&o.tokenizer))
        .transpose()?;
    let mut state = match &resume {
        Some((state, _, _)) => state.clone(),
        None => TrainState {
            step: 0,
            tokens: 0,
            seed: o.seed,
            net: match &o.init {
                Some(dir) => policy::net_config(dir)?,
                None => o.net.clone(),
            },
            adam_t: 0,
        },
    };
    if let Some((_, fim)) = &grown {
        let need = fim.ids().iter().max().map_or(0, |&m| m as usize + 1);
        if state.net.vocab_size < need {
            anyhow::ensure!(
                resume.is_none(),
                "--resume: the checkpoint's vocabulary ({}) lacks the FIM sentinels (ids up to \
                 {}); start a FIM run from it with --init instead",
                state.net.vocab_size,
                need - 1
            );
            // A new run, or one started from a checkpoint without the sentinels: the embedding
            // (and so config.json's vocab_size) grows by their rows.
            state.net.vocab_size = need;
        }
    }
    let cfg = state.net.clone();
    let data = batch::load_tokens(&o.data, &o.tokenizer)?;
    anyhow::ensure!(
        data.len() > o.seq_len + batch::EXTRA + 1,
        "the data holds {} tokens, fewer than one window of {}",
        data.len(),
        o.seq_len + batch::EXTRA
    );
    if let Some(&bad) = data.iter().find(|&&t| t as usize >= cfg.vocab_size) {
        anyhow::bail!(
            "the data holds token id {bad}, outside the vocabulary of {}",
            cfg.vocab_size
        );
    }

    let vm = VarMap::new();
    let model = net::Net::new(&cfg, &vm, &device)?;
    if o.resume.is_none() {
        match &o.init {
            Some(dir) => vocab::load_weights(&vm, dir)?,
            None => init_weights(&vm, state.seed)?,
        }
    }
    let mut opt = AdamW::new(&vm, o.weight_decay)?;
    if let Some((_, tensors, file)) = &resume {
        for (name, var) in &opt.vars {
            var.set(resume_tensor(tensors, &format!("param.{name}"), var, file)?)?;
        }
        opt.restore(tensors, file)?;
        opt.t = state.adam_t;
    }

    std::fs::create_dir_all(&o.out).with_context(|| format!("{}", o.out.display()))?;
    let log_file = o.out.join("train_log.jsonl");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .with_context(|| format!("{}", log_file.display()))?;

    let total = o.stage1_steps + o.stage2_steps;
    let end = o.stop_at.unwrap_or(total).min(total);
    let bsz = (o.batch_tokens / o.seq_len).max(1);
    let mut biases: HashMap<usize, Tensor> = HashMap::new();
    let positions: Vec<usize> = (0..o.seq_len).chain(0..o.seq_len).collect();
    let mut logs = Vec::new();
    let bar = crate::progress::Progress::new(end, "train");
    bar.set_position(state.step);
    while state.step < end {
        let t0 = Instant::now();
        let step = state.step;
        // One RNG per step, seeded by (seed, step): a resumed run draws the same batches.
        let mut rng = ChaCha8Rng::seed_from_u64(state.seed.wrapping_mul(1_000_003) ^ step as u64);
        let (stage, local, peak, warm, n) = if step < o.stage1_steps {
            (1u8, step, o.lr1, o.warmup1, o.stage1_steps)
        } else {
            (2u8, step - o.stage1_steps, o.lr2, o.warmup2, o.stage2_steps)
        };
        let lr = lr_at(peak, local, warm, n, o.min_lr_frac);
        let block = pick_block(o, &mut rng);
        let spec = batch::NoiseSpec {
            stage,
            edit_prob: o.edit_prob,
            edit_rate_max: o.edit_rate_max,
            edit_mask_max: o.edit_mask_max,
            vocab_size: cfg.vocab_size,
            fim: grown.as_ref().map(|g| (o.fim_rate, g.1)),
        };
        let bt = batch::make_batch(&data, bsz, o.seq_len, block, &spec, &mut rng);
        if let std::collections::hash_map::Entry::Vacant(e) = biases.entry(block) {
            e.insert(net::two_l_bias(o.seq_len, block, &device)?);
        }
        let (loss, ce, kinds, gnorm) = step_on_batch(
            &model,
            &mut opt,
            &bt,
            &biases[&block],
            &positions,
            lr,
            o.clip,
        )?;
        let l = bt.l;

        let loss_v = loss.to_scalar::<f32>()?;
        anyhow::ensure!(loss_v.is_finite(), "non-finite loss at step {}", step + 1);
        let ce_v = ce.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mean_of = |k: u8| {
            let (s, c) = ce_v
                .iter()
                .zip(&kinds)
                .filter(|(_, &kk)| kk == k)
                .fold((0f32, 0usize), |(s, c), (v, _)| (s + v, c + 1));
            (c > 0).then(|| s / c as f32)
        };
        state.step += 1;
        state.tokens += (bt.b * l) as u64;
        state.adam_t = opt.t;
        let row = StepLog {
            step: state.step,
            stage,
            loss: loss_v,
            mask_loss: mean_of(1),
            edit_loss: mean_of(2),
            lr,
            grad_norm: gnorm as f32,
            block,
            seq_len: l,
            tokens: state.tokens,
            tok_per_s: (bt.b * l) as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        };
        let line = serde_json::to_string(&row)?;
        writeln!(log, "{line}").with_context(|| format!("{}", log_file.display()))?;
        if !o.quiet {
            bar.suspend(|| println!("{line}"));
        }
        bar.set_position(state.step);
        bar.message(format!("stage {stage}, loss {loss_v:.4}"));
        logs.push(row);
        if (o.save_every > 0 && state.step.is_multiple_of(o.save_every)) || state.step == end {
            save_checkpoint(
                &o.out,
                &vm,
                &opt,
                &state,
                o,
                grown.as_ref().map(|g| g.0.as_str()),
            )?;
        }
    }
    Ok(logs)
}
