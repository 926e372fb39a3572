//! File work off the UI thread: dialogs, trace loads and saves, PNG writes. Each job runs on its
//! own thread and hands back an outcome the app applies; the window shows a spinner meanwhile,
//! so a slow disk, a FIFO or a dialog never freezes it.

use std::path::PathBuf;
use std::time::Instant;

use poll_promise::Promise;

use crate::trace::Trace;

/// What a finished job asks the app to do.
pub enum Outcome {
    /// A trace was read: show it.
    Opened(PathBuf, Box<Trace>),
    /// Two traces of the same prompt were read: diff them (main lane, fork lane).
    Diff(Box<(PathBuf, Trace, PathBuf, Trace)>),
    /// Written; the notice to show.
    Done(String),
    /// A model folder was picked.
    ModelFolder(PathBuf),
    /// The user closed the dialog.
    Cancelled,
}

pub struct Job {
    pub what: String,
    pub since: Instant,
    promise: Promise<Result<Outcome, String>>,
}

impl Job {
    /// Runs `work` on a thread; `wake` (a repaint request) is called when it ends.
    pub fn spawn(
        what: impl Into<String>,
        wake: Option<egui::Context>,
        work: impl FnOnce() -> Result<Outcome, String> + Send + 'static,
    ) -> Job {
        let promise = Promise::spawn_thread("unmask-file-job", move || {
            let r = work();
            if let Some(ctx) = wake {
                ctx.request_repaint();
            }
            r
        });
        Job {
            what: what.into(),
            since: Instant::now(),
            promise,
        }
    }

    /// The outcome once the thread has ended.
    pub fn try_take(self) -> Result<Result<Outcome, String>, Job> {
        match self.promise.try_take() {
            Ok(r) => Ok(r),
            Err(promise) => Err(Job { promise, ..self }),
        }
    }
}
