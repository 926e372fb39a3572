//! Progress bars for long headless commands (`eval`, `train`, `self-train`): drawn with indicatif
//! on stderr when stderr is a terminal; otherwise absent, so a log file or a pipe gets the
//! commands' plain lines and nothing else.

use std::borrow::Cow;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` units of work, or nothing when stderr is not a terminal.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar labelled `what`, drawn only if stderr is a terminal.
    pub fn new(len: usize, what: impl Into<Cow<'static, str>>) -> Self {
        Self::drawn_if(std::io::stderr().is_terminal(), len, what)
    }

    /// A bar when `draw` holds, nothing otherwise.
    pub fn drawn_if(draw: bool, len: usize, what: impl Into<Cow<'static, str>>) -> Self {
        if !draw {
            return Progress(None);
        }
        let pb = ProgressBar::new(len as u64);
        // The template is a constant; should indicatif ever reject it, a plain bar still works.
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, about {eta} left)",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        pb.set_style(style);
        pb.set_prefix(what);
        Progress(Some(pb))
    }

    /// Whether a bar is drawn.
    pub fn is_drawn(&self) -> bool {
        self.0.is_some()
    }

    /// One more unit done.
    pub fn inc(&self) {
        if let Some(pb) = &self.0 {
            pb.inc(1);
        }
    }

    /// Units done so far (a resumed run starts part-way).
    pub fn set_position(&self, n: usize) {
        if let Some(pb) = &self.0 {
            pb.set_position(n as u64);
        }
    }

    /// The text after the counts (e.g. the latest loss).
    pub fn message(&self, m: impl Into<Cow<'static, str>>) {
        if let Some(pb) = &self.0 {
            pb.set_message(m);
        }
    }

    /// A line on stderr: above the bar when there is one, plain otherwise.
    pub fn line(&self, s: &str) {
        match &self.0 {
            Some(pb) => pb.println(s),
            None => eprintln!("{s}"),
        }
    }

    /// Runs `f` with the bar taken off the terminal, for output on stdout that shares it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(pb) => pb.suspend(f),
            None => f(),
        }
    }
}

impl Drop for Progress {
    /// A finished or failed command leaves no bar behind: its result line or error follows.
    fn drop(&mut self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_terminal_means_no_bar() {
        let p = Progress::drawn_if(false, 10, "work");
        assert!(!p.is_drawn());
        p.inc();
        p.message("loss 1.0");
        assert_eq!(p.suspend(|| 7), 7);
    }

    #[test]
    fn a_drawn_bar_counts_the_work() {
        let p = Progress::drawn_if(true, 10, "work");
        assert!(p.is_drawn());
        p.set_position(3);
        p.inc();
        let pb = p.0.as_ref().expect("bar");
        assert_eq!((pb.position(), pb.length()), (4, Some(10)));
        assert_eq!(p.suspend(|| 7), 7);
    }
}
