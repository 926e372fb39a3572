//! `unmask generate`: headless decoding with every sampler knob as a flag.

use std::path::PathBuf;

use clap::Args;

use crate::hub::Need;
use crate::model::{self, DiffusionModel, ModelDenoiser};
use crate::sampler::{self, Task};
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
    #[arg(long, conflicts_with_all = ["prompt_ids", "suffix"])]
    pub repair: Option<PathBuf>,
    /// Repair mode: number of random edits (at most the code's token count).
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
    let folder = super::download::resolve(&args.model, Need::Weights)?;
    let device = model::device::open(&args.device)?;
    let (m, _) = DiffusionModel::open(&folder, &args.dtype, &device)?;
    let params = args.sampler.params(m.family(), m.info.config.block_size);
    let prompt_text = args.prompt.clone().unwrap_or_default();
    let header = if let Some(ids) = &args.prompt_ids {
        let rows = m.info.config.embedding_size;
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= rows) {
            anyhow::bail!(
                "--prompt-ids: token id {bad} is outside the model's vocabulary ({rows} ids)"
            );
        }
        // Ids are used exactly as given (reference parity): no healing.
        let task = Task::Complete {
            prompt: ids.clone(),
        };
        session::prepare(&m, &task, &params, &prompt_text, &args.device)?
    } else {
        let task = if let Some(path) = &args.repair {
            let code = crate::input::read_text(path, 16 << 20)?;
            session::TextTask::Repair {
                prompt: prompt_text.clone(),
                code,
                budget: args.budget,
            }
        } else if let Some(suffix) = &args.suffix {
            session::TextTask::Infill {
                prefix: prompt_text.clone(),
                suffix: suffix.clone(),
            }
        } else {
            session::TextTask::Complete {
                prompt: prompt_text.clone(),
            }
        };
        session::prepare_text(&m, &task, args.chat, &params, &args.device)?
    };
    if let Some(h) = &header.heal {
        eprintln!("{}", h.describe());
    }
    let cancel = super::signals::cancel_flag();
    let verbose = args.verbose;
    let stream = !args.json;
    // Streaming: print the generated text as blocks finish (each time the masks before the
    // first unfinished position are all resolved, the newly settled text is printed).
    let mut canvas = crate::trace::Canvas::initial(&header);
    let (gen_start, gen_end) = (header.gen_start, header.gen_end);
    let stops = m.info.stops.value.clone();
    let heal = header.heal.clone();
    let mut printed = String::new();
    let mut stopped = false;
    let mut write_error: Option<anyhow::Error> = None;
    let mut on_step = |e: &crate::trace::StepEvent| {
        canvas.apply(e);
        if verbose {
            let toks: Vec<String> = e
                .commits
                .iter()
                .map(|c| format!("{}:{:?}", c.pos, c.text))
                .collect();
            eprintln!(
                "block {} step {}: {} committed {}, {} masks left",
                e.block,
                e.step,
                e.commits.len(),
                toks.join(" "),
                e.masks_left
            );
        }
        if stream && !stopped {
            let settled = canvas.cells[gen_start..gen_end]
                .iter()
                .position(|c| c.masked)
                .map_or(gen_end, |i| gen_start + i);
            let mut ids: Vec<u32> = canvas.cells[gen_start..settled]
                .iter()
                .map(|c| c.token)
                .collect();
            if let Some(cut) = ids.iter().position(|t| stops.contains(t)) {
                ids.truncate(cut);
                stopped = true;
            }
            let text = m.decode(&ids);
            let text = match &heal {
                Some(h) => h.continuation(&text).to_string(),
                None => text,
            };
            if text.len() > printed.len()
                && text.starts_with(&printed)
                && text.is_char_boundary(printed.len())
            {
                if let Err(e) = super::out::print(&text[printed.len()..]) {
                    write_error.get_or_insert(e);
                }
                printed = text;
            }
        }
    };
    let mut den = ModelDenoiser::new(&m, &params);
    let trace = session::with_facts(&m, &args.device, |f| {
        sampler::decode(header, &mut den, f, cancel, &mut on_step)
    })?;
    if let Some(path) = &args.trace {
        trace.save(path)?;
    }
    if let Some(e) = write_error {
        return Err(e);
    }
    let fin = trace
        .finish
        .as_ref()
        .expect("a finished run has a finish record");
    let corrupted = match &trace.header.task {
        crate::trace::TaskKind::Repair {
            corrupted_distance, ..
        } => Some(*corrupted_distance),
        _ => None,
    };
    if args.json {
        let out = serde_json::json!({
            "ids": fin.tokens,
            "text": fin.text,
            "steps": fin.metrics.steps,
            "forwards": fin.metrics.forwards,
            "tokens_per_second": fin.metrics.tokens_per_second(),
            "stop_reason": fin.reason,
            "tokens_per_forward": fin.metrics.tokens_per_forward(),
            "total_ms": fin.metrics.total_ms,
            "first_block_ms": fin.metrics.first_block_ms,
            "distance_before": corrupted,
            "distance_after": fin.repaired_distance,
            "params": trace.header.params,
        });
        super::out::println(&serde_json::to_string_pretty(&out)?)?;
    } else {
        // Whatever streaming could not print as a clean extension (e.g. after a revision).
        if fin.text != printed {
            if !printed.is_empty() {
                super::out::println("\n--- final text ---")?;
            }
            super::out::print(&fin.text)?;
        }
        super::out::println("")?;
        if let (Some(b), Some(a)) = (corrupted, fin.repaired_distance) {
            eprintln!("repair: Levenshtein distance to the original {b} → {a} tokens");
        }
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
    if super::signals::cancelled() {
        eprintln!(
            "cancelled by a signal after {} steps{}",
            trace.len(),
            args.trace
                .as_ref()
                .map(|p| format!("; the partial trace is in {}", p.display()))
                .unwrap_or_default()
        );
        std::process::exit(super::signals::CANCELLED_EXIT);
    }
    Ok(())
}
