//! Headless commands.

pub mod bench;
pub mod download;
pub mod forward;
pub mod generate;
pub mod models;

use clap::{Args, Parser, Subcommand};

use crate::sampler::{SamplerParams, Schedule, UnmaskRule};

#[derive(Parser, Debug)]
#[command(name = "unmask", version, about = "Watch a discrete-diffusion language model write code, step by step")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the playground window (the default).
    Gui(GuiArgs),
    /// Decode a prompt headlessly; print the text, or JSON with --json.
    Generate(generate::GenerateArgs),
    /// Write the logits of one forward over given ids to a safetensors file.
    Forward(forward::ForwardArgs),
    /// Describe a checkpoint folder: family, size, special ids and where they came from.
    Inspect(InspectArgs),
    /// Replay a saved trace in the terminal: the canvas after each step.
    Replay(ReplayArgs),
    /// List the published models unmask knows, with size, memory and recommended settings.
    Models(models::ModelsArgs),
    /// Download a model from the Hugging Face hub into the standard cache; prints its folder.
    Download(download::DownloadArgs),
    /// Measure decoding speed under several sampler settings; markdown table, optional JSON.
    Bench(bench::BenchArgs),
    /// Write random weights with a published model's shapes (for benchmarks without downloads).
    MakeRandomCheckpoint(bench::MakeRandomArgs),
}

#[derive(Args, Debug, Default)]
pub struct GuiArgs {
    /// Model folder, or `embedded`.
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// Open this trace at start.
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model folder, `embedded`, a preset key or a hub id (org/name).
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    pub trace: std::path::PathBuf,
    /// Show only this step (0 = initial canvas).
    #[arg(long)]
    pub step: Option<usize>,
}

/// Sampler flags shared by the commands that decode.
#[derive(Args, Debug, Clone)]
pub struct SamplerFlags {
    #[arg(long, default_value_t = 64)]
    pub gen_length: usize,
    #[arg(long, default_value_t = 8)]
    pub block_size: usize,
    /// Denoising steps per block.
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// low-confidence | margin | entropy | random | left-to-right | threshold
    #[arg(long, default_value = "low-confidence", value_parser = parse_rule)]
    pub rule: UnmaskRule,
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f32,
    /// uniform | timestep
    #[arg(long, default_value = "uniform", value_parser = parse_schedule)]
    pub schedule: Schedule,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.0)]
    pub edit_noise: f32,
    /// Decode the full length even after an end-of-text token.
    #[arg(long)]
    pub no_stop: bool,
    /// Disable the key/value cache.
    #[arg(long)]
    pub no_cache: bool,
}

fn parse_rule(s: &str) -> Result<UnmaskRule, String> {
    UnmaskRule::parse(s).ok_or_else(|| {
        format!("unknown rule `{s}`; one of: {}", UnmaskRule::ALL.iter().map(|r| r.name()).collect::<Vec<_>>().join(", "))
    })
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    Schedule::parse(s).ok_or_else(|| format!("unknown schedule `{s}`; one of: uniform, timestep"))
}

impl SamplerFlags {
    pub fn params(&self) -> SamplerParams {
        SamplerParams {
            gen_length: self.gen_length,
            block_size: self.block_size,
            steps: self.steps,
            rule: self.rule,
            threshold: self.threshold,
            schedule: self.schedule,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            stop_at_eos: !self.no_stop,
            edit_noise: self.edit_noise,
            kv_cache: !self.no_cache,
        }
    }
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let folder = download::resolve(&args.model)?;
    let (info, _) = crate::model::ModelInfo::inspect(&folder)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{}", info.summary());
    }
    Ok(())
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let trace = crate::trace::Trace::load(&args.trace)?;
    let h = &trace.header;
    let show = |k: usize| {
        let cells = trace.cells_at(k);
        let text: String = cells[h.gen_start..h.gen_end].iter().map(|c| if c.masked { "░".to_string() } else { c.text.clone() }).collect();
        println!("── step {k}/{} ──\n{text}", trace.len());
    };
    match args.step {
        Some(k) if k > trace.len() => anyhow::bail!("the trace has {} steps; --step {k} is past its end", trace.len()),
        Some(k) => show(k),
        None => (0..=trace.len()).for_each(show),
    }
    Ok(())
}
