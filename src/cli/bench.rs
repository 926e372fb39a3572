//! `unmask bench`: decoding speed of one model under several sampler settings, and
//! `unmask make-random-checkpoint`: random weights with a published model's shapes, so speed can be
//! measured on a machine that cannot download the real weights.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::json;

use crate::hub::Need;
use crate::model::{self, DiffusionModel};
use crate::sampler::{SamplerParams, Task, UnmaskRule};
use crate::session;

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
            "setting `{name}`: expected ar, bN-sK (e.g. b32-s8) or bN-tX (e.g. b4-t0.9)"
        )
    };
    let rest = name.strip_prefix('b').ok_or_else(bad)?;
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
        "{}: {} parameters, {:?} on {}, loaded in {:.1} s; prompt {} tokens, gen {}",
        folder.display(),
        m.info.parameters,
        dtype,
        args.device,
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
            "prompt_tokens": prompt.len(),
            "gen_length": args.gen_length,
            "kv_cache": !args.no_cache,
            "load_seconds": load_s,
            "gpu_memory_mib": { "before_load": mem_before, "after_load": mem_loaded },
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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
    let mut s = format!(
        "**{title}**\n\n| setting | block | steps | rule | tokens | forwards | tokens/s | ms/forward | tokens/forward | peak mem MiB |\n|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {} |\n",
            r.setting,
            r.block_size,
            r.steps,
            r.rule,
            r.tokens,
            r.forwards,
            r.tokens_per_second,
            r.ms_per_forward,
            r.tokens_per_forward,
            r.peak_memory_mib
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "–".into())
        ));
    }
    s
}

/// The per-forward breakdown of every row as a markdown table.
pub fn breakdown_markdown(rows: &[BenchRow]) -> String {
    let mut s = String::from(
        "ms per forward by phase:\n\n| setting | ms/forward | model | LM head | readback | propose | events | other | sys |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let b = &r.breakdown;
        s.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
            r.setting,
            r.ms_per_forward,
            b.model,
            b.head,
            b.readback,
            b.propose,
            b.events,
            b.other,
            b.sys
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "–".into())
        ));
    }
    s
}

/// GPU memory in use on device `ordinal` per `nvidia-smi` (whole device, all processes).
fn gpu_memory_mib(ordinal: usize) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            "-i",
            &ordinal.to_string(),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The process's peak resident set (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples GPU memory every 100 ms on a thread while a run goes (nvidia-smi has no peak counter).
struct MemoryWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Option<f64>>>,
}

impl MemoryWatcher {
    fn start(gpu: Option<usize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = gpu.map(|ordinal| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak: Option<f64> = None;
                loop {
                    if let Some(m) = gpu_memory_mib(ordinal) {
                        peak = Some(peak.map_or(m, |p: f64| p.max(m)));
                    }
                    if stop.load(Ordering::Relaxed) {
                        return peak;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        MemoryWatcher { stop, handle }
    }

    fn stop(self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle {
            Some(h) => h.join().ok().flatten(),
            None => peak_rss_mib(),
        }
    }
}

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
/// safetensors of random weights (N(0, 0.02²)-like uniform, norms 1, biases 0).
pub fn make_random_checkpoint(args: &MakeRandomArgs) -> anyhow::Result<()> {
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
        let p = args.out.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
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
    let f = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, f);
    let io = |e: std::io::Error| anyhow::anyhow!("{}: {e}", path.display());
    w.write_all(&(head.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&head).map_err(io)?;
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
        w.write_all(&data).map_err(io)?;
    }
    w.flush().map_err(io)?;
    Ok(offset as u64)
}

#[derive(Clone, Copy)]
enum Fill {
    Const(f32),
    /// Uniform with this standard deviation.
    Random(f32),
}

/// Little-endian bytes of `count` values, generated on all cores for large tensors.
fn fill(count: usize, value: Fill, bf16: bool, seed: u64) -> Vec<u8> {
    let elem = if bf16 { 2 } else { 4 };
    let mut out = vec![0u8; count * elem];
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(32);
    let per = count.div_ceil(threads).max(1 << 16) * elem;
    std::thread::scope(|s| {
        for (k, chunk) in out.chunks_mut(per).enumerate() {
            s.spawn(move || {
                let mut state =
                    seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
                let half_width = match value {
                    Fill::Random(std) => std * 3f32.sqrt(),
                    Fill::Const(_) => 0.0,
                };
                for cell in chunk.chunks_mut(elem) {
                    let x = match value {
                        Fill::Const(c) => c,
                        Fill::Random(_) => {
                            // splitmix64
                            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                            let mut z = state;
                            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                            z ^= z >> 31;
                            let u = (z >> 40) as f32 / (1u64 << 24) as f32;
                            (2.0 * u - 1.0) * half_width
                        }
                    };
                    if bf16 {
                        cell.copy_from_slice(&half::bf16::from_f32(x).to_le_bytes());
                    } else {
                        cell.copy_from_slice(&x.to_le_bytes());
                    }
                }
            });
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
