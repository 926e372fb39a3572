//! Headless commands.

pub mod bench;
pub mod download;
pub mod eval;
pub mod eval_infill;
pub mod forward;
pub mod generate;
pub mod models;
pub mod out;
pub mod random_checkpoint;
pub mod self_train;
pub mod signals;
pub mod table;
pub mod train;

use clap::{Args, Parser, Subcommand};

use crate::sampler::{SamplerParams, Schedule, UnmaskRule};

#[derive(Parser, Debug)]
#[command(
    name = "unmask",
    version,
    about = "Watch a discrete-diffusion language model write code, step by step"
)]
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
    /// Quality and speed on the held-out split (masked accuracy, validity, repair, tokens/s).
    Eval(eval::EvalArgs),
    /// Replay a saved trace in the terminal: the canvas after each step.
    Replay(ReplayArgs),
    /// List the published models unmask knows, with size, memory and recommended settings.
    Models(models::ModelsArgs),
    /// Download a model from the Hugging Face hub into the standard cache; prints its folder.
    Download(download::DownloadArgs),
    /// Measure decoding speed under several sampler settings; markdown table, optional JSON.
    Bench(bench::BenchArgs),
    /// Write random weights with a published model's shapes (for benchmarks without downloads).
    MakeRandomCheckpoint(random_checkpoint::MakeRandomArgs),
    /// Train (or resume) the block-diffusion model in candle on the CPU.
    Train(train::TrainArgs),
    /// Fine-tune a checkpoint on its own decoding: constrained-order training or on-policy
    /// step reduction (Seed Diffusion's later stages).
    SelfTrain(self_train::SelfTrainArgs),
}

/// The window's flags: the model and sampler flags of `generate` (a flag left out keeps the
/// window's stored setting), plus what to do at launch, so a lesson opens with one command and a
/// script can measure the window.
#[derive(Args, Debug, Default, Clone)]
pub struct GuiArgs {
    /// Model folder, `embedded`, a preset key or a hub id (org/name).
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// Open this trace at start.
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
    /// Diff the `--trace` with this trace of the same prompt (the Fork view), as File > Diff two
    /// saved traces does.
    #[arg(long, requires = "trace")]
    pub diff: Option<std::path::PathBuf>,
    /// Prompt text (complete mode).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Infill: text after the generated middle.
    #[arg(long)]
    pub suffix: Option<String>,
    /// Render the prompt through the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long)]
    pub device: Option<String>,
    #[command(flatten)]
    pub sampler: SamplerFlags,
    /// Start decoding as soon as the model is loaded.
    #[arg(long)]
    pub run: bool,
    /// Start a race (autoregressive against the current settings) at launch.
    #[arg(long, conflicts_with = "run")]
    pub race: bool,
    /// Close the window when the --run decoding (or the --race) has ended.
    #[arg(long)]
    pub quit_when_done: bool,
    /// Write frames drawn, frame times, UI-thread CPU time and the run's tokens/s (JSON) here
    /// when the window closes.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
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

/// Sampler flags shared by the commands that decode; a flag left out takes the model family's
/// default (`presets::reference_params`).
#[derive(Args, Debug, Clone, Default)]
pub struct SamplerFlags {
    /// Tokens to generate [default: 64]
    #[arg(long)]
    pub gen_length: Option<usize>,
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Denoising steps per block.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, value_enum)]
    pub rule: Option<UnmaskRule>,
    #[arg(long)]
    pub threshold: Option<f32>,
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub edit_noise: Option<f32>,
    /// Decode the full length even after an end-of-text token.
    #[arg(long)]
    pub no_stop: bool,
    /// Disable the exact key/value cache of block-causal models.
    #[arg(long)]
    pub no_cache: bool,
    /// An approximate cache: bidirectional models, Fast-dLLM's prefix cache refreshed per block;
    /// block-causal models, finished blocks' keys/values kept from their last denoising step
    /// instead of a clean re-forward.
    #[arg(long)]
    pub approx_cache: bool,
    /// Use a text prompt exactly as tokenized (no prompt-boundary healing of its trailing
    /// newline / partial token).
    #[arg(long)]
    pub no_heal: bool,
    /// Repetition penalty on tokens already generated (1 = off; e.g. 1.2).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// Never repeat an n-gram of this many tokens (0 = off; e.g. 8 for code).
    #[arg(long)]
    pub no_repeat_ngram: Option<usize>,
}

impl SamplerFlags {
    /// The family's defaults with every given flag applied.
    pub fn params(
        &self,
        family: crate::model::Family,
        trained_block: Option<usize>,
    ) -> SamplerParams {
        let mut p =
            crate::presets::reference_params(family, trained_block, self.gen_length.unwrap_or(64));
        self.apply_to(&mut p);
        p.stop_at_eos = !self.no_stop;
        p.kv_cache = !self.no_cache;
        p.approx_cache = self.approx_cache;
        p
    }

    /// Applies only the flags that were given to `p` (the window keeps its stored settings for
    /// the others).
    pub fn apply_to(&self, p: &mut SamplerParams) {
        if let Some(v) = self.gen_length {
            p.gen_length = v;
        }
        if let Some(v) = self.block_size {
            p.block_size = v;
            if self.steps.is_none() {
                p.steps = v;
            }
        }
        if let Some(v) = self.steps {
            p.steps = v;
        }
        if let Some(v) = self.rule {
            p.rule = v;
        }
        if let Some(v) = self.threshold {
            p.threshold = v;
        }
        if let Some(v) = self.schedule {
            p.schedule = v;
        }
        if let Some(v) = self.temperature {
            p.temperature = v;
        }
        if let Some(v) = self.top_k {
            p.top_k = v;
        }
        if let Some(v) = self.top_p {
            p.top_p = v;
        }
        if let Some(v) = self.seed {
            p.seed = v;
        }
        if let Some(v) = self.edit_noise {
            p.edit_noise = v;
        }
        if self.no_stop {
            p.stop_at_eos = false;
        }
        if self.no_cache {
            p.kv_cache = false;
        }
        if self.approx_cache {
            p.approx_cache = true;
        }
        if self.no_heal {
            p.heal = false;
        }
        if let Some(v) = self.repetition_penalty {
            p.repetition_penalty = v;
        }
        if let Some(v) = self.no_repeat_ngram {
            p.no_repeat_ngram = v;
        }
    }
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let folder = download::resolve(&args.model, crate::hub::Need::Metadata)?;
    let (info, _) = crate::model::ModelInfo::inspect(&folder)?;
    if args.json {
        out::println(&serde_json::to_string_pretty(&info)?)
    } else {
        out::println(&info.summary())
    }
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    let trace = crate::trace::Trace::load(&args.trace)?;
    let h = &trace.header;
    let mut canvas = crate::trace::Canvas::initial(h);
    let mut show = |k: usize| {
        canvas.advance(&trace, k);
        let text: String = canvas.cells[h.gen_start..h.gen_end]
            .iter()
            .map(|c| {
                if c.masked {
                    "░".to_string()
                } else {
                    c.text.clone()
                }
            })
            .collect();
        out::println(&format!("── step {k}/{} ──\n{text}", trace.len()))
    };
    match args.step {
        Some(k) if k > trace.len() => anyhow::bail!(
            "the trace has {} steps; --step {k} is past its end",
            trace.len()
        ),
        Some(k) => show(k),
        None => {
            for k in 0..=trace.len() {
                if out::closed() {
                    break;
                }
                show(k)?;
            }
            Ok(())
        }
    }
}
