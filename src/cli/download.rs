//! `unmask download`: fetch a checkpoint from the Hugging Face hub into the standard cache; and
//! the `--model` resolution every headless command shares, with download progress on stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::hub::{self, HubOptions, Need, Progress};

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// Hub id (org/name) or a preset key from `unmask models`.
    pub model: String,
    /// Branch, tag or commit.
    #[arg(long)]
    pub revision: Option<String>,
}

pub fn run(args: &DownloadArgs) -> anyhow::Result<()> {
    let id = hub::resolve::hub_id(&args.model)?;
    let opts = HubOptions {
        revision: args.revision.clone(),
        ..HubOptions::from_env()?
    };
    let hub = hub::Hub::new(opts)?;
    let mut shown = DownloadProgress::new();
    let folder = hub.download(&id, &mut |p| shown.show(p))?;
    shown.finish();
    println!("{}", folder.display());
    Ok(())
}

/// Opens `--model` for the headless commands (see [`hub::resolve_model`]): what `need` asks for
/// is fetched when a hub id or preset is not complete in the cache, with progress on stderr.
pub fn resolve(arg: &str, need: Need) -> anyhow::Result<PathBuf> {
    let mut shown = DownloadProgress::new();
    let folder = hub::resolve_model(arg, need, &HubOptions::from_env()?, &mut |p| shown.show(p))?;
    shown.finish();
    Ok(folder)
}

/// Download progress on stderr: an indicatif bar per file on a terminal; elsewhere (logs,
/// scripts, tests) plain lines, one when a file is done and one every ten seconds while a large
/// one is under way, so no carriage-return redraws end up in a log file.
pub struct DownloadProgress {
    file: String,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
    terminal: bool,
    /// The current file's completion has been shown.
    done: bool,
    /// The current file's latest report (a file of unknown size is done when the next begins).
    last: Option<Progress>,
}

/// How often a plain line reports a file still under way.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

impl Default for DownloadProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl DownloadProgress {
    pub fn new() -> Self {
        let now = Instant::now();
        DownloadProgress {
            file: String::new(),
            started: now,
            last_line: now,
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            done: true,
            last: None,
        }
    }

    pub fn show(&mut self, p: &Progress) {
        let now = Instant::now();
        if p.file != self.file {
            self.finish();
            self.file = p.file.clone();
            self.started = now;
            self.last_line = now;
            self.done = false;
            if self.terminal {
                self.bar = Some(new_bar(&p.file, p.bytes_total));
            }
        }
        self.last = Some(p.clone());
        let complete = p.bytes_total > 0 && p.bytes_done >= p.bytes_total;
        if let Some(bar) = &self.bar {
            bar.set_position(p.bytes_done);
            if complete {
                bar.finish();
                self.bar = None;
                self.done = true;
            }
            return;
        }
        if complete && !self.done {
            eprintln!("{}", done_line(p, (now - self.started).as_secs_f64()));
            self.done = true;
        } else if !complete && now - self.last_line >= PLAIN_EVERY {
            eprintln!("{}", running_line(p));
            self.last_line = now;
        }
    }

    /// Ends the current file's display (a bar left unfinished, e.g. by an error, stays visible).
    /// Called when the next file begins and after the last one.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
        // A file whose size the server did not say has no report that marks it complete.
        if let Some(p) = self.last.take() {
            if !self.terminal && !self.done && p.bytes_total == 0 && p.bytes_done > 0 {
                eprintln!("{}", done_line(&p, self.started.elapsed().as_secs_f64()));
                self.done = true;
            }
        }
    }
}

fn new_bar(file: &str, total: u64) -> ProgressBar {
    let (bar, template) = if total > 0 {
        (
            ProgressBar::new(total),
            "{msg:40} {bar:30} {binary_bytes:>10} / {binary_total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
        )
    } else {
        (
            ProgressBar::new_spinner(),
            "{msg:40} {spinner} {binary_bytes:>10} {binary_bytes_per_sec:>12}",
        )
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(file.to_string());
    bar
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// `downloaded FILE: 12.3 MiB in 1.2 s (10.3 MiB/s)`
fn done_line(p: &Progress, secs: f64) -> String {
    format!(
        "downloaded {}: {:.1} MiB in {:.1} s ({:.1} MiB/s)",
        p.file,
        mib(p.bytes_done),
        secs,
        mib(p.bytes_done) / secs.max(1e-3)
    )
}

/// `downloading FILE: 1.0 / 4.0 MiB (25%)`
fn running_line(p: &Progress) -> String {
    let pct = if p.bytes_total > 0 {
        format!(
            " ({:.0}%)",
            100.0 * p.bytes_done as f64 / p.bytes_total as f64
        )
    } else {
        String::new()
    };
    format!(
        "downloading {}: {:.1} / {:.1} MiB{pct}",
        p.file,
        mib(p.bytes_done),
        mib(p.bytes_total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines() {
        let p = Progress {
            file: "model.safetensors".into(),
            bytes_done: 1 << 20,
            bytes_total: 4 << 20,
        };
        assert_eq!(
            running_line(&p),
            "downloading model.safetensors: 1.0 / 4.0 MiB (25%)"
        );
        let p = Progress {
            bytes_done: 4 << 20,
            ..p
        };
        assert_eq!(
            done_line(&p, 2.0),
            "downloaded model.safetensors: 4.0 MiB in 2.0 s (2.0 MiB/s)"
        );
    }
}
