//! `unmask bench`: decoding speed of one model under several sampler settings. The harness is
//! here; [`memory`] watches device memory while a setting runs. Random checkpoints to run it on
//! without downloads come from `unmask make-random-checkpoint` ([`super::random_checkpoint`]).

mod memory;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use serde_json::json;

use super::table::Table;
use crate::hub::Need;
use crate::model::{self, DiffusionModel};
use crate::sampler::{SamplerParams, Task, UnmaskRule};
use crate::session;
use memory::{gpu_memory_mib, MemoryWatcher};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model folder, `embedded`, a preset key or a hub id.
    #[arg(long, default_value = "embedded")]
    pub model: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Prompt length in tokens (a fixed, deterministic id sequence).
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 256)]
    pub gen_length: usize,
    /// Comma-separated settings: `ar` (block 1, 1 step), `bN-sK` (block N, K steps per block,
    /// low-confidence), `bN-tX` (block N, threshold X, at most N steps).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ar,b4-s4,b4-t0.9,b8-s8,b8-t0.9,b32-s32,b32-t0.9,b32-s8"
    )]
    pub settings: Vec<String>,
    /// Runs per setting (the best is reported).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Disable the key/value cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Repetition penalty for every setting (1 = off): its cost per step shows in the timings.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// No-repeat n-gram size for every setting (0 = off).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One measured setting.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub setting: String,
    pub block_size: usize,
    pub steps: usize,
    pub rule: String,
    pub tokens: usize,
    pub forwards: usize,
    pub total_ms: f64,
    pub tokens_per_second: f64,
    pub ms_per_forward: f64,
    pub tokens_per_forward: f64,
    /// Peak device memory seen during the run: GPU memory in use (nvidia-smi, whole device) on
    /// CUDA, the process's peak resident set on CPU.
    pub peak_memory_mib: Option<f64>,
    /// Where a forward's time went (ms per forward).
    pub breakdown: Breakdown,
}

/// Milliseconds per forward by phase (see [`crate::profile::Phase`]); `other` is the rest of
/// the wall time (schedule, canvas bookkeeping, the prefill's share). `sys` is kernel time of the
/// whole process (allocation churn shows up there), also per forward.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Breakdown {
    pub model: f64,
    pub head: f64,
    pub readback: f64,
    pub propose: f64,
    pub events: f64,
    pub other: f64,
    pub sys: Option<f64>,
}

impl Breakdown {
    fn new(phases: [f64; 5], total_ms: f64, sys_ms: Option<f64>, forwards: usize) -> Self {
        let per = |x: f64| {
            if forwards > 0 {
                x / forwards as f64
            } else {
                0.0
            }
        };
        let [model, head, readback, propose, events] = phases;
        Breakdown {
            model: per(model),
            head: per(head),
            readback: per(readback),
            propose: per(propose),
            events: per(events),
            other: per((total_ms - phases.iter().sum::<f64>()).max(0.0)),
            sys: sys_ms.map(per),
        }
    }
}

/// Kernel-mode CPU time of this process so far, in ms.
fn sys_time_ms() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct we own; RUSAGE_SELF is always valid.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } == 0 {
            return Some(u.ru_stime.tv_sec as f64 * 1e3 + u.ru_stime.tv_usec as f64 / 1e3);
        }
    }
    None
}

/// Parses a setting name into sampler parameters (greedy, no early stop: random weights never
/// reliably emit an end token, and a fixed length keeps runs comparable).
pub fn parse_setting(name: &str, gen_length: usize) -> anyhow::Result<SamplerParams> {
    let base = SamplerParams {
        gen_length,
        temperature: 0.0,
        stop_at_eos: false,
        ..SamplerParams::default()
    };
    if name == "ar" {
        return Ok(base.autoregressive());
    }
    let bad = || {
        anyhow::anyhow!(
            "setting `{name}`: expected ar, bN-sK (e.g. b32-s8) or bN-tX (e.g. b4-t0.9), \
             optionally ending in -a (the approximate cache)"
        )
    };
    let (name_core, approx) = match name.strip_suffix("-a") {
        Some(core) => (core, true),
        None => (name, false),
    };
    let base = SamplerParams {
        approx_cache: approx,
        ..base
    };
    let rest = name_core.strip_prefix('b').ok_or_else(bad)?;
    let (block, tail) = rest.split_once('-').ok_or_else(bad)?;
    let block: usize = block.parse().map_err(|_| bad())?;
    let p = if let Some(k) = tail.strip_prefix('s') {
        SamplerParams {
            block_size: block,
            steps: k.parse().map_err(|_| bad())?,
            rule: UnmaskRule::LowConfidence,
            ..base
        }
    } else if let Some(t) = tail.strip_prefix('t') {
        SamplerParams {
            block_size: block,
            steps: block,
            rule: UnmaskRule::Threshold,
            threshold: t.parse().map_err(|_| bad())?,
            ..base
        }
    } else {
        return Err(bad());
    };
    if let Some(problem) = p.problems(0, None).first() {
        anyhow::bail!("setting `{name}`: {problem}");
    }
    Ok(p)
}

/// A fixed prompt of `n` ordinary token ids (no mask or stop ids).
pub fn bench_prompt(m: &DiffusionModel, n: usize) -> Vec<u32> {
    let limit = m
        .info
        .config
        .vocab_size
        .min(m.info.tokenizer_size.unwrap_or(usize::MAX))
        .max(2) as u64;
    let avoid =
        |id: u32| id == m.mask_id() || m.info.stops.value.contains(&id) || Some(id) == m.info.bos;
    let mut out = Vec::with_capacity(n);
    let mut i: u64 = 0;
    while out.len() < n {
        let id = ((i * 7919 + 13) % limit) as u32;
        i += 1;
        if !avoid(id) {
            out.push(id);
        }
    }
    out
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let folder = super::download::resolve(&args.model, Need::Weights)?;
    let device = model::device::open(&args.device)?;
    let (info, tok) = model::ModelInfo::inspect(&folder)?;
    let dtype = model::parse_dtype(&args.dtype, &device, info.config.torch_dtype.as_deref())?;
    let gpu = args.device.starts_with("cuda").then(|| {
        args.device
            .strip_prefix("cuda:")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0usize)
    });
    let mem_before = gpu.and_then(gpu_memory_mib);
    // Per-phase timing on a GPU needs a device sync at each phase boundary.
    crate::profile::set_sync(gpu.is_some());
    let t_load = Instant::now();
    let m = DiffusionModel::from_inspected(info, tok, dtype, &device)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let mem_loaded = gpu.and_then(gpu_memory_mib);
    let prompt = bench_prompt(&m, args.prompt_tokens);
    let settings: Vec<(String, SamplerParams)> = args
        .settings
        .iter()
        .map(|s| {
            parse_setting(s, args.gen_length).map(|p| {
                (
                    s.clone(),
                    SamplerParams {
                        kv_cache: !args.no_cache,
                        repetition_penalty: args.repetition_penalty,
                        no_repeat_ngram: args.no_repeat_ngram,
                        ..p
                    },
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(p) = settings
        .first()
        .and_then(|(_, p)| p.problems(0, None).into_iter().next())
    {
        anyhow::bail!("--{}: {}", p.field.replace('_', "-"), p.message);
    }
    eprintln!(
        "{}: {} parameters, {:?} on {} ({}), loaded in {:.1} s; prompt {} tokens, gen {}",
        folder.display(),
        m.info.parameters,
        dtype,
        args.device,
        m.net.kernel_summary(),
        load_s,
        prompt.len(),
        args.gen_length
    );
    // Warm-up: first kernels, allocations and (on CUDA) module loading stay out of the figures.
    if let Some((_, p)) = settings.first() {
        let warm = SamplerParams {
            gen_length: p.block_size.max(1),
            ..p.clone()
        };
        decode(&m, &prompt, &warm, &args.device)?;
    }
    let mut rows = Vec::new();
    for (name, p) in &settings {
        let mut best: Option<BenchRow> = None;
        for _ in 0..args.repeat.max(1) {
            let watcher = MemoryWatcher::start(gpu);
            crate::profile::reset();
            let sys0 = sys_time_ms();
            let metrics = decode(&m, &prompt, p, &args.device)?;
            let sys = sys_time_ms().zip(sys0).map(|(a, b)| a - b);
            let phases = crate::profile::snapshot();
            let peak = watcher.stop();
            let row = BenchRow {
                setting: name.clone(),
                block_size: p.block_size,
                steps: p.steps,
                rule: p.rule.name().into(),
                tokens: metrics.tokens,
                forwards: metrics.forwards,
                total_ms: metrics.total_ms,
                tokens_per_second: metrics.tokens_per_second(),
                ms_per_forward: if metrics.forwards > 0 {
                    metrics.total_ms / metrics.forwards as f64
                } else {
                    0.0
                },
                tokens_per_forward: metrics.tokens_per_forward(),
                peak_memory_mib: peak,
                breakdown: Breakdown::new(phases, metrics.total_ms, sys, metrics.forwards),
            };
            if best.as_ref().is_none_or(|b| row.total_ms < b.total_ms) {
                best = Some(row);
            }
        }
        if let Some(row) = best {
            eprintln!(
                "  {:<10} {:>8.1} tok/s  {:>5} forwards  {:>7.2} ms/forward",
                row.setting, row.tokens_per_second, row.forwards, row.ms_per_forward
            );
            rows.push(row);
        }
    }
    let title = format!(
        "{} · {} · {:?} · {} · prompt {} + gen {}",
        folder
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
        format_params(m.info.parameters),
        dtype,
        args.device,
        prompt.len(),
        args.gen_length
    );
    println!("{}", markdown(&title, &rows));
    println!("{}", breakdown_markdown(&rows));
    if let Some(path) = &args.json {
        let out = json!({
            "model": folder.display().to_string(),
            "family": m.family().name(),
            "parameters": m.info.parameters,
            "device": args.device,
            "dtype": format!("{dtype:?}"),
            "kernels": m.net.kernel_summary(),
            "prompt_tokens": prompt.len(),
            "gen_length": args.gen_length,
            "kv_cache": !args.no_cache,
            "load_seconds": load_s,
            "gpu_memory_mib": { "before_load": mem_before, "after_load": mem_loaded },
            "rows": rows,
        });
        crate::atomic::write_json(path, &out)?;
    }
    Ok(())
}

fn decode(
    m: &DiffusionModel,
    prompt: &[u32],
    p: &SamplerParams,
    device: &str,
) -> anyhow::Result<crate::trace::Metrics> {
    let task = Task::Complete {
        prompt: prompt.to_vec(),
    };
    let header = session::prepare(m, &task, p, "", device)?;
    let cancel = AtomicBool::new(false);
    let trace = session::run(m, header, device, &cancel, &mut |_| {})?;
    let fin = trace
        .finish
        .ok_or_else(|| anyhow::anyhow!("the run ended without a finish record"))?;
    Ok(fin.metrics)
}

fn format_params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B params", n as f64 / 1e9)
    } else {
        format!("{:.1} M params", n as f64 / 1e6)
    }
}

/// The rows as a markdown table under a title line.
pub fn markdown(title: &str, rows: &[BenchRow]) -> String {
    let mut t = Table::new([
        "setting",
        "block",
        "steps",
        "rule",
        "tokens",
        "forwards",
        "tokens/s",
        "ms/forward",
        "tokens/forward",
        "peak mem MiB",
    ]);
    for r in rows {
        t.row([
            r.setting.clone(),
            r.block_size.to_string(),
            r.steps.to_string(),
            r.rule.clone(),
            r.tokens.to_string(),
            r.forwards.to_string(),
            format!("{:.1}", r.tokens_per_second),
            format!("{:.2}", r.ms_per_forward),
            format!("{:.2}", r.tokens_per_forward),
            r.peak_memory_mib
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "–".into()),
        ]);
    }
    format!("**{title}**\n\n{}", t.render())
}

/// The per-forward breakdown of every row as a markdown table.
pub fn breakdown_markdown(rows: &[BenchRow]) -> String {
    let mut t = Table::new([
        "setting",
        "ms/forward",
        "model",
        "LM head",
        "readback",
        "propose",
        "events",
        "other",
        "sys",
    ]);
    for r in rows {
        let b = &r.breakdown;
        let ms = [
            r.ms_per_forward,
            b.model,
            b.head,
            b.readback,
            b.propose,
            b.events,
            b.other,
        ];
        let mut cells = vec![r.setting.clone()];
        cells.extend(ms.iter().map(|x| format!("{x:.2}")));
        cells.push(
            b.sys
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "–".into()),
        );
        t.row(cells);
    }
    format!("ms per forward by phase:\n\n{}", t.render())
}
