//! `unmask download`: fetch a checkpoint from the Hugging Face hub into the standard cache.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;

use crate::hub::{self, HubOptions, Progress};

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// Hub id (org/name) or a preset key from `unmask models`.
    pub model: String,
    /// Branch, tag or commit.
    #[arg(long)]
    pub revision: Option<String>,
}

pub fn run(args: &DownloadArgs) -> anyhow::Result<()> {
    let id = crate::presets::find(&args.model)
        .map(|p| p.hub_id.to_string())
        .unwrap_or_else(|| args.model.clone());
    let opts = HubOptions {
        revision: args.revision.clone(),
        ..HubOptions::from_env()?
    };
    let hub = hub::Hub::new(opts)?;
    let mut line = ProgressLine::default();
    let folder = hub.download(&id, &mut |p| line.show(p))?;
    line.finish();
    println!("{}", folder.display());
    Ok(())
}

/// Opens `--model` for the headless commands, with a progress line on stderr when it downloads.
pub fn resolve(arg: &str) -> anyhow::Result<std::path::PathBuf> {
    let mut line = ProgressLine::default();
    let folder = hub::resolve_model(arg, &HubOptions::from_env()?, &mut |p| line.show(p))?;
    line.finish();
    Ok(folder)
}

/// A one-line terminal progress display, redrawn at most ten times a second.
#[derive(Default)]
pub struct ProgressLine {
    file: String,
    last: Option<Instant>,
    started: Option<Instant>,
    drawn: bool,
}

impl ProgressLine {
    pub fn show(&mut self, p: &Progress) {
        let now = Instant::now();
        let new_file = p.file != self.file;
        if new_file {
            if self.drawn {
                eprintln!();
            }
            self.file = p.file.clone();
            self.started = Some(now);
        }
        let done = p.bytes_total > 0 && p.bytes_done >= p.bytes_total;
        if !new_file
            && !done
            && self
                .last
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let secs = self
            .started
            .map(|s| (now - s).as_secs_f64())
            .unwrap_or(0.0)
            .max(1e-3);
        let pct = if p.bytes_total > 0 {
            100.0 * p.bytes_done as f64 / p.bytes_total as f64
        } else {
            0.0
        };
        eprint!(
            "\r{:<40} {:>9.1} / {:>9.1} MiB {:>5.1}% {:>7.1} MiB/s",
            p.file,
            mib(p.bytes_done),
            mib(p.bytes_total),
            pct,
            mib(p.bytes_done) / secs
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
