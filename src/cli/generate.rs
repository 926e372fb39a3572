//! `unmask generate`: headless decoding with every sampler knob as a flag.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use clap::Args;

use crate::model::{self, DiffusionModel};
use crate::sampler::{self, ModelDenoiser, Task};
use crate::session;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model folder, `embedded`, a preset key or a hub id (org/name).
    #[arg(long, default_value = "embedded")]
    pub model: String,
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Infill: text after the generated middle.
    #[arg(long)]
    pub suffix: Option<String>,
    /// Repair mode: a file of code to corrupt and repair.
    #[arg(long)]
    pub repair: Option<PathBuf>,
    /// Repair mode: number of random edits.
    #[arg(long, default_value_t = 8)]
    pub budget: usize,
    /// Render the prompt through the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub sampler: super::SamplerFlags,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Write the trace (JSON Lines) here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Print a JSON summary instead of the text.
    #[arg(long)]
    pub json: bool,
    /// Print each step as it happens (to stderr).
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    let folder = super::download::resolve(&args.model)?;
    let device = model::device::open(&args.device)?;
    let (info, _) = model::ModelInfo::inspect(&folder)?;
    let dtype = model::parse_dtype(&args.dtype, &device, info.config.torch_dtype.as_deref())?;
    let m = DiffusionModel::load(&folder, dtype, &device)?;
    let params = args.sampler.params();
    let prompt_text = args.prompt.clone().unwrap_or_default();
    let task = if let Some(ids) = &args.prompt_ids {
        Task::Complete { prompt: ids.clone() }
    } else if let Some(path) = &args.repair {
        let code = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        session::to_task(&m, &session::TextTask::Repair { prompt: prompt_text.clone(), code, budget: args.budget }, args.chat)?
    } else if let Some(suffix) = &args.suffix {
        session::to_task(&m, &session::TextTask::Infill { prefix: prompt_text.clone(), suffix: suffix.clone() }, args.chat)?
    } else {
        session::to_task(&m, &session::TextTask::Complete { prompt: prompt_text.clone() }, args.chat)?
    };
    let header = session::prepare(&m, &task, &params, &prompt_text, &args.device)?;
    let cancel = AtomicBool::new(false);
    let verbose = args.verbose;
    let mut on_step = |e: &crate::trace::StepEvent| {
        if verbose {
            let toks: Vec<String> = e.commits.iter().map(|c| format!("{}:{:?}", c.pos, c.text)).collect();
            eprintln!("block {} step {}: {} committed {}, {} masks left", e.block, e.step, e.commits.len(), toks.join(" "), e.masks_left);
        }
    };
    let mut den = ModelDenoiser::new(&m, params.kv_cache);
    let trace = session::with_facts(&m, &args.device, |f| sampler::decode(header, &mut den, f, &cancel, &mut on_step))?;
    if let Some(path) = &args.trace {
        trace.save(path)?;
    }
    let fin = trace.finish.as_ref().expect("a finished run has a finish record");
    if args.json {
        let out = serde_json::json!({
            "text": fin.text,
            "tokens": fin.tokens,
            "reason": fin.reason,
            "steps": fin.metrics.steps,
            "forwards": fin.metrics.forwards,
            "tokens_per_second": fin.metrics.tokens_per_second(),
            "tokens_per_forward": fin.metrics.tokens_per_forward(),
            "total_ms": fin.metrics.total_ms,
            "first_block_ms": fin.metrics.first_block_ms,
            "repaired_distance": fin.repaired_distance,
            "corrupted_distance": match &trace.header.task { crate::trace::TaskKind::Repair { corrupted_distance, .. } => Some(*corrupted_distance), _ => None },
            "params": trace.header.params,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", fin.text);
        eprintln!(
            "{} tokens in {:.0} ms ({:.1} tokens/s), {} forwards ({:.2} tokens/forward), {:?}",
            fin.metrics.tokens,
            fin.metrics.total_ms,
            fin.metrics.tokens_per_second(),
            fin.metrics.forwards,
            fin.metrics.tokens_per_forward(),
            fin.reason
        );
    }
    Ok(())
}
