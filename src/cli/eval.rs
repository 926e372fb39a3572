//! `unmask eval`: quality and speed of a model on the held-out split.
//!
//! * masked-token accuracy and NLL at mask ratios 0.15 / 0.5 / 0.9, each block masked with clean
//!   earlier blocks as context (the block-diffusion training condition);
//! * syntactic validity of completions of held-out prompts, judged by a Python parser
//!   ([`crate::pycheck`], checked against CPython's `ast.parse`) on prompt + completion cut at
//!   its last complete line, for
//!   autoregressive decoding and several diffusion settings, with tokens/s for each;
//! * repair: held-out snippets corrupted by random edits, then repaired; token Levenshtein distance
//!   to the original before and after, for this model and optionally a second one (stage 1);
//! * infill: held-out definitions with body lines removed and filled in, judged on whether
//!   prefix + middle + suffix parses ([`super::eval_infill`]).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use candle_core::{DType, Device};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::table::Table;
use crate::hub::Need;
use crate::model::{self, DiffusionModel, KvCache, Mask};
use crate::progress::Progress;
use crate::sampler::{SamplerParams, UnmaskRule};
use crate::session::{self, TextTask};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model folder, `embedded`, a preset key or a hub id (org/name).
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// A second model for the repair comparison (e.g. the stage-1 checkpoint); any `--model`
    /// form.
    #[arg(long)]
    pub compare: Option<String>,
    /// Held-out split: JSON Lines with a `text` field per file.
    #[arg(long, default_value = DEFAULT_HELDOUT)]
    pub heldout: PathBuf,
    /// Held-out prompts: JSON Lines with a `prefix` field.
    #[arg(long, default_value = "assets/eval_prompts.jsonl")]
    pub prompts: PathBuf,
    /// Prompts to complete per setting.
    #[arg(long, default_value_t = 100)]
    pub n_prompts: usize,
    /// Tokens generated per completion.
    #[arg(long, default_value_t = 64)]
    pub gen_length: usize,
    /// Held-out sequences for the masked-token metrics.
    #[arg(long, default_value_t = 64)]
    pub n_sequences: usize,
    /// Snippets to repair.
    #[arg(long, default_value_t = 50)]
    pub n_repair: usize,
    /// Infill cases (held-out definitions with 1–3 body lines removed).
    #[arg(long, default_value_t = 50)]
    pub n_infill: usize,
    /// Random edits per repair snippet.
    #[arg(long, default_value_t = 4)]
    pub repair_budget: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Write the full results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Skip sections: any of masked, validity, repair, infill.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Decoding settings of the validity section, in `unmask bench`'s syntax: `ar`, `bN-sK`
    /// (block N, K steps), `bN-tX` (block N, threshold X). Greedy, stopping at end-of-text.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ar,b8-s8,b8-s4,b8-s2,b32-t0.9,b32-t0.7"
    )]
    pub settings: Vec<String>,
    /// Prompt forms: `newline` (each prefix + "\n", as people type a prompt) and `stripped` (the
    /// prefix as stored, ending right after its last line's text).
    #[arg(long, value_delimiter = ',', default_value = "newline,stripped")]
    pub forms: Vec<String>,
    /// Turn prompt-boundary healing off.
    #[arg(long)]
    pub no_heal: bool,
    /// Repetition penalty for every setting (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// No-repeat n-gram size for every setting (0 = off).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram: usize,
}

/// The held-out split's default path: built by the corpus scripts, not committed.
const DEFAULT_HELDOUT: &str = "data/corpus/heldout.jsonl";

#[derive(Serialize, Debug)]
pub struct MaskedResult {
    pub ratio: f32,
    pub accuracy: f64,
    pub nll: f64,
    pub tokens: usize,
}

#[derive(Serialize, Debug)]
pub struct SettingResult {
    pub name: String,
    /// `newline` or `stripped` (see `EvalArgs::forms`).
    pub form: String,
    pub heal: bool,
    pub block_size: usize,
    pub steps: usize,
    pub rule: String,
    pub valid: usize,
    pub total: usize,
    pub validity: f64,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub forwards: usize,
    pub tokens_per_forward: f64,
}

#[derive(Serialize, Debug)]
pub struct RepairResult {
    pub model: String,
    pub snippets: usize,
    pub budget: usize,
    pub distance_before: f64,
    pub distance_after: f64,
    pub fully_repaired: usize,
}

#[derive(Serialize, Debug, Default)]
pub struct EvalReport {
    pub model: String,
    pub masked: Vec<MaskedResult>,
    pub settings: Vec<SettingResult>,
    pub repair: Vec<RepairResult>,
    pub infill: Vec<super::eval_infill::InfillResult>,
}

/// A readable name for a setting key (`ar`, `b8-s4`, `b32-t0.7`).
pub fn setting_name(key: &str, p: &SamplerParams) -> String {
    if key == "ar" {
        return "AR (block 1, 1 step)".into();
    }
    let name = match p.rule {
        UnmaskRule::Threshold => format!("block {}, threshold {}", p.block_size, p.threshold),
        _ => format!("block {}, {} steps", p.block_size, p.steps),
    };
    if p.approx_cache {
        name + ", approximate cache"
    } else {
        name
    }
}

/// The decoding settings compared (greedy, stopping at end-of-text), in the order given.
pub fn settings(
    keys: &[String],
    gen_length: usize,
) -> anyhow::Result<Vec<(String, SamplerParams)>> {
    keys.iter()
        .map(|k| {
            let p = super::bench::parse_setting(k, gen_length)?;
            let p = SamplerParams {
                stop_at_eos: true,
                ..p
            };
            Ok((setting_name(k, &p), p))
        })
        .collect()
}

/// A held-out prompt in the requested form: `newline` appends the line break a person types
/// before asking for the next line; `stripped` keeps the stored prefix.
pub fn prompt_form(prefix: &str, form: &str) -> anyhow::Result<String> {
    match form {
        "newline" => Ok(format!("{}\n", prefix.trim_end_matches('\n'))),
        "stripped" => Ok(prefix.trim_end_matches('\n').to_string()),
        _ => anyhow::bail!("--forms: unknown form `{form}`; one of: newline, stripped"),
    }
}

fn read_jsonl(path: &Path, field: &str) -> anyhow::Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| {
        format!(
            "{}: cannot open (run the corpus scripts first)",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {} is not JSON", path.display(), i + 1))?;
        let s = v
            .get(field)
            .and_then(|x| x.as_str())
            .with_context(|| format!("{}: line {} has no `{field}`", path.display(), i + 1))?;
        out.push(s.to_string());
    }
    Ok(out)
}

pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    let device = model::device::open(&args.device)?;
    let folder = super::download::resolve(&args.model, Need::Weights)?;
    let m = DiffusionModel::load(&folder, DType::F32, &device)?;
    let mut report = EvalReport {
        model: args.model.clone(),
        ..Default::default()
    };
    let mut skip_list = args.skip.clone();
    if !args.heldout.exists() && args.heldout == Path::new(DEFAULT_HELDOUT) {
        // A fresh clone has the prompts (assets/) but not the held-out split (built by the corpus
        // scripts, too large to commit): run what needs only the prompts and say what was skipped.
        for s in ["masked", "repair", "infill"] {
            if !skip_list.iter().any(|x| x == s) {
                eprintln!(
                    "{DEFAULT_HELDOUT} not found (build it with scripts/build_corpus.py, or pass \
                     --heldout FILE): skipping the {s} section"
                );
                skip_list.push(s.to_string());
            }
        }
    }
    let skip = |s: &str| skip_list.iter().any(|x| x == s);
    let sets = settings(&args.settings, args.gen_length)?;
    for f in &args.forms {
        prompt_form("", f)?;
    }
    let tuned = |p: &SamplerParams| SamplerParams {
        heal: !args.no_heal,
        repetition_penalty: args.repetition_penalty,
        no_repeat_ngram: args.no_repeat_ngram,
        ..p.clone()
    };
    if let Some(p) = sets
        .first()
        .and_then(|(_, p)| tuned(p).problems(0, None).into_iter().next())
    {
        anyhow::bail!("--{}: {}", p.field.replace('_', "-"), p.message);
    }
    if !skip("masked") {
        let texts = read_jsonl(&args.heldout, "text")?;
        for ratio in [0.15f32, 0.5, 0.9] {
            let bar = Progress::new(args.n_sequences, format!("masked ratio {ratio}"));
            let r = masked_metrics(&m, &texts, ratio, args.n_sequences, &device, &bar)?;
            drop(bar);
            eprintln!(
                "masked ratio {ratio}: accuracy {:.3}, NLL {:.3} over {} tokens",
                r.accuracy, r.nll, r.tokens
            );
            report.masked.push(r);
        }
    }
    if !skip("validity") {
        let prefixes: Vec<String> = read_jsonl(&args.prompts, "prefix")?
            .into_iter()
            .take(args.n_prompts)
            .collect();
        for form in &args.forms {
            let prompts = prefixes
                .iter()
                .map(|p| prompt_form(p, form))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (name, params) in &sets {
                let bar = Progress::new(prompts.len(), format!("{form} / {name}"));
                let mut r = validity(&m, &prompts, name, &tuned(params), &args.device, &bar)?;
                drop(bar);
                r.form = form.clone();
                eprintln!(
                    "{form} / {name}: valid {}/{} ({:.0}%), {:.1} tokens/s, {:.2} tokens/forward",
                    r.valid,
                    r.total,
                    r.validity * 100.0,
                    r.tokens_per_second,
                    r.tokens_per_forward
                );
                report.settings.push(r);
            }
        }
    }
    if !skip("infill") {
        let block_causal = m.family().attention() == model::Attention::BlockCausal;
        if block_causal && m.info.fim.is_none() {
            // Such a model refuses infill (see sampler::prepare); the section says so, not fails.
            eprintln!(
                "infill: skipped, {} is block-causal and not trained for fill-in-the-middle \
                 (no `fim_layout` in its config.json)",
                args.model
            );
        } else {
            let texts = read_jsonl(&args.heldout, "text")?;
            let cases = super::eval_infill::cases(&texts, args.n_infill);
            // The first diffusion setting (the middle is decoded like any completion).
            let (name, params) = sets
                .iter()
                .find(|(_, p)| p.block_size > 1)
                .or(sets.first())
                .context("no decoding setting")?;
            let bar = Progress::new(cases.len(), format!("infill / {name}"));
            let r = super::eval_infill::run(&m, &cases, name, &tuned(params), &args.device, &bar)?;
            drop(bar);
            eprintln!(
                "infill / {name}: prefix + middle + suffix parses {}/{}, exact {}",
                r.parses, r.cases, r.exact
            );
            report.infill.push(r);
        }
    }
    if !skip("repair") {
        let texts = read_jsonl(&args.heldout, "text")?;
        let snippets = repair_snippets(&texts, args.n_repair);
        let mut models = vec![(args.model.clone(), m)];
        if let Some(other) = &args.compare {
            models.push((
                other.clone(),
                DiffusionModel::load(
                    &super::download::resolve(other, Need::Weights)?,
                    DType::F32,
                    &device,
                )?,
            ));
        }
        for (name, mm) in &models {
            let bar = Progress::new(snippets.len(), format!("repair {name}"));
            let r = repair(mm, name, &snippets, args.repair_budget, &args.device, &bar)?;
            drop(bar);
            eprintln!(
                "repair {name}: distance {:.2} → {:.2}, fully repaired {}/{}",
                r.distance_before, r.distance_after, r.fully_repaired, r.snippets
            );
            report.repair.push(r);
        }
    }
    println!("{}", markdown(&report));
    if let Some(p) = &args.json {
        crate::atomic::write_json(p, &report)?;
    }
    Ok(())
}

/// Accuracy and NLL of masked positions: each block masked at `ratio` (at least one position)
/// with clean earlier blocks as context; sequences of 256 tokens from the held-out files.
pub fn masked_metrics(
    m: &DiffusionModel,
    texts: &[String],
    ratio: f32,
    n: usize,
    _dev: &Device,
    progress: &Progress,
) -> anyhow::Result<MaskedResult> {
    let b = m.info.config.block_size.unwrap_or(8);
    let len = 256.min(m.info.config.max_position_embeddings);
    let mask = m.mask_id();
    let mut rng = ChaCha8Rng::seed_from_u64(1234 + (ratio * 100.0) as u64);
    let (mut correct, mut total, mut nll) = (0usize, 0usize, 0f64);
    let mut seqs = 0;
    for t in texts {
        if seqs >= n {
            break;
        }
        let ids = m.encode(t)?;
        if ids.len() < len {
            continue;
        }
        let ids = &ids[..len];
        seqs += 1;
        progress.inc();
        let blocks: Vec<usize> = (0..len).map(|i| i / b).collect();
        let bidir = m.family().attention() == model::Attention::Bidirectional;
        let mut cache = KvCache::new();
        for s in (0..len).step_by(b) {
            let e = (s + b).min(len);
            let mut noisy = ids[s..e].to_vec();
            let mut masked: Vec<usize> = (0..noisy.len())
                .filter(|_| rng.random::<f32>() < ratio)
                .collect();
            if masked.is_empty() {
                masked.push(rng.random_range(0..noisy.len()));
            }
            for &i in &masked {
                noisy[i] = mask;
            }
            let logits = if bidir {
                // Bidirectional models: the whole clean prefix plus the noisy block, no cache.
                let mut all = ids[..s].to_vec();
                all.extend(&noisy);
                let full = m.forward_all(&all, b)?;
                full.narrow(0, s, e - s)?
            } else {
                m.net.forward(
                    &noisy,
                    s,
                    &mut cache,
                    0,
                    Mask::BlockCausal(&blocks),
                    0..e - s,
                )?
            };
            let rows = logits.to_vec2::<f32>()?;
            for &i in &masked {
                let row = &rows[i];
                let target = ids[s + i] as usize;
                let (arg, _) = crate::sampler::propose::argmax(row);
                correct += (arg == target) as usize;
                let p = crate::sampler::propose::prob_of(row, target as u32).max(1e-30);
                nll -= (p as f64).ln();
                total += 1;
            }
            if !bidir {
                m.net.forward(
                    &ids[s..e],
                    s,
                    &mut cache,
                    e - s,
                    Mask::BlockCausal(&blocks),
                    0..1,
                )?;
            }
        }
    }
    if total == 0 {
        anyhow::bail!("no held-out sequence of {len} tokens found");
    }
    Ok(MaskedResult {
        ratio,
        accuracy: correct as f64 / total as f64,
        nll: nll / total as f64,
        tokens: total,
    })
}

/// Completes every prompt with `params` and judges the results with [`crate::pycheck::judge`].
pub fn validity(
    m: &DiffusionModel,
    prompts: &[String],
    name: &str,
    params: &SamplerParams,
    device: &str,
    progress: &Progress,
) -> anyhow::Result<SettingResult> {
    let cancel = AtomicBool::new(false);
    let mut verdicts = Vec::new();
    let (mut tokens, mut ms, mut forwards) = (0usize, 0f64, 0usize);
    for p in prompts {
        let trace = session::generate(
            m,
            &TextTask::Complete { prompt: p.clone() },
            false,
            params,
            device,
            &cancel,
            &mut |_| {},
        )?;
        let fin = trace.finish.context("run without finish")?;
        tokens += fin.tokens.len();
        ms += fin.metrics.total_ms;
        forwards += fin.metrics.forwards;
        let stopped = matches!(fin.reason, crate::trace::FinishReason::Eos { .. });
        verdicts.push(crate::pycheck::judge(p, &fin.text, stopped));
        progress.inc();
    }
    let valid = verdicts.iter().filter(|&&v| v).count();
    Ok(SettingResult {
        name: name.to_string(),
        form: String::new(),
        heal: params.heal,
        block_size: params.block_size,
        steps: params.steps,
        rule: params.rule.name().to_string(),
        valid,
        total: prompts.len(),
        validity: valid as f64 / prompts.len().max(1) as f64,
        tokens,
        seconds: ms / 1e3,
        tokens_per_second: tokens as f64 * 1e3 / ms.max(1e-9),
        forwards,
        tokens_per_forward: tokens as f64 / forwards.max(1) as f64,
    })
}

/// Snippets of 6–12 whole lines from held-out files.
fn repair_snippets(texts: &[String], n: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut out = Vec::new();
    for t in texts {
        if out.len() >= n {
            break;
        }
        let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() < 14 {
            continue;
        }
        let k = rng.random_range(6..=12);
        let s = rng.random_range(0..lines.len() - k);
        out.push(lines[s..s + k].join("\n") + "\n");
    }
    out
}

/// Repair mode on each snippet; mean token Levenshtein distance before and after.
pub fn repair(
    m: &DiffusionModel,
    name: &str,
    snippets: &[String],
    budget: usize,
    device: &str,
    progress: &Progress,
) -> anyhow::Result<RepairResult> {
    let cancel = AtomicBool::new(false);
    let params = SamplerParams {
        block_size: 8,
        steps: 4,
        stop_at_eos: false,
        ..Default::default()
    };
    let (mut before, mut after, mut full) = (0usize, 0usize, 0usize);
    for (i, s) in snippets.iter().enumerate() {
        let p = SamplerParams {
            seed: i as u64,
            ..params.clone()
        };
        let task = TextTask::Repair {
            prompt: String::new(),
            code: s.clone(),
            budget,
        };
        let trace = session::generate(m, &task, false, &p, device, &cancel, &mut |_| {})?;
        if let crate::trace::TaskKind::Repair {
            corrupted_distance, ..
        } = trace.header.task
        {
            before += corrupted_distance;
        }
        let d = trace.finish.and_then(|f| f.repaired_distance).unwrap_or(0);
        after += d;
        full += (d == 0) as usize;
        progress.inc();
    }
    let n = snippets.len().max(1) as f64;
    Ok(RepairResult {
        model: name.to_string(),
        snippets: snippets.len(),
        budget,
        distance_before: before as f64 / n,
        distance_after: after as f64 / n,
        fully_repaired: full,
    })
}

pub fn markdown(r: &EvalReport) -> String {
    let mut s = String::new();
    if !r.masked.is_empty() {
        let mut t = Table::new(["mask ratio", "accuracy", "NLL", "tokens"]);
        for x in &r.masked {
            t.row([
                x.ratio.to_string(),
                format!("{:.3}", x.accuracy),
                format!("{:.3}", x.nll),
                x.tokens.to_string(),
            ]);
        }
        s += &t.render();
        s += "\n";
    }
    if !r.settings.is_empty() {
        let mut t = Table::new([
            "prompts",
            "setting",
            "heal",
            "valid",
            "tokens/s",
            "tokens/forward",
            "forwards",
        ]);
        for x in &r.settings {
            t.row([
                x.form.clone(),
                x.name.clone(),
                if x.heal { "on" } else { "off" }.to_string(),
                format!("{}/{} ({:.0}%)", x.valid, x.total, x.validity * 100.0),
                format!("{:.1}", x.tokens_per_second),
                format!("{:.2}", x.tokens_per_forward),
                x.forwards.to_string(),
            ]);
        }
        s += &t.render();
        s += "\n";
    }
    if !r.repair.is_empty() {
        let mut t = Table::new([
            "model",
            "snippets",
            "edits",
            "distance before",
            "distance after",
            "fully repaired",
        ]);
        for x in &r.repair {
            t.row([
                x.model.clone(),
                x.snippets.to_string(),
                x.budget.to_string(),
                format!("{:.2}", x.distance_before),
                format!("{:.2}", x.distance_after),
                x.fully_repaired.to_string(),
            ]);
        }
        s += &t.render();
    }
    if !r.infill.is_empty() {
        s += "\n";
        let mut t = Table::new([
            "infill setting",
            "cases",
            "parses",
            "exact",
            "empty middle parses",
            "tokens/forward",
        ]);
        for x in &r.infill {
            t.row([
                x.setting.clone(),
                x.cases.to_string(),
                format!(
                    "{}/{} ({:.0}%)",
                    x.parses,
                    x.cases,
                    100.0 * x.parses as f64 / x.cases.max(1) as f64
                ),
                x.exact.to_string(),
                x.empty_parses.to_string(),
                format!("{:.2}", x.tokens_per_forward),
            ]);
        }
        s += &t.render();
    }
    s
}
