//! The worker thread that runs the sampler: commands in, events out, cancellation through an
//! atomic flag checked before every step. The GUI never blocks on it. The engine speaks of runs:
//! a run id is chosen by the caller and is opaque here (the window maps it to the lane that
//! shows it), so nothing in this file knows about views.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::model::DiffusionModel;
use crate::sampler::SamplerParams;
use crate::session::{self, TextTask};
use crate::trace::{StepEvent, Trace, TraceHeader};

/// UI → engine.
pub enum Command {
    /// Use this model for the next runs.
    SetModel {
        model: Arc<DiffusionModel>,
        device: String,
    },
    Generate {
        run: u64,
        task: TextTask,
        chat: bool,
        params: SamplerParams,
    },
    /// Decode one block of `params` and drop the result: the first forwards of a session pay for
    /// first-touch allocations and cold caches, which a timed run (the race's lanes) should not.
    /// `unmask bench` does the same before its rows.
    WarmUp {
        task: TextTask,
        chat: bool,
        params: SamplerParams,
    },
    /// Decode a prepared header as it is (a fork: another run's canvas edited by hand).
    Resume {
        run: u64,
        header: Box<TraceHeader>,
    },
    Shutdown,
}

/// Engine → UI.
#[derive(Debug)]
pub enum Event {
    Started { run: u64, header: Box<TraceHeader> },
    Step { run: u64, event: Box<StepEvent> },
    Finished { run: u64, trace: Box<Trace> },
    Failed { run: u64, error: String },
}

/// One cancel flag per queued or running generation, so that a Cancel followed at once by a new
/// Generate cancels the old runs without touching the new one.
type CancelFlags = Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>;

/// Handle to the worker thread.
pub struct Engine {
    tx: Sender<Command>,
    rx: Receiver<Event>,
    cancel: CancelFlags,
    handle: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the worker; `wake` is called after every event (e.g. `ctx.request_repaint()`).
    pub fn spawn(wake: impl Fn() + Send + 'static) -> Self {
        let (tx, cmd_rx) = channel::<Command>();
        let (ev_tx, rx) = channel::<Event>();
        let cancel: CancelFlags = Arc::default();
        let flag = cancel.clone();
        let handle = std::thread::Builder::new()
            .name("unmask-engine".into())
            .spawn(move || worker(cmd_rx, ev_tx, flag, wake))
            .expect("spawning the engine thread");
        Engine {
            tx,
            rx,
            cancel,
            handle: Some(handle),
        }
    }

    pub fn send(&self, cmd: Command) {
        if let Command::Generate { run, .. } | Command::Resume { run, .. } = &cmd {
            if let Ok(mut flags) = self.cancel.lock() {
                flags.insert(*run, Arc::new(AtomicBool::new(false)));
            }
        }
        let _ = self.tx.send(cmd);
    }

    /// Asks the running generation (and any queued ones) to stop before their next step.
    pub fn cancel(&self) {
        if let Ok(flags) = self.cancel.lock() {
            for f in flags.values() {
                f.store(true, Ordering::SeqCst);
            }
        }
    }

    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Waits up to `timeout` for the next event (tests and the CLI).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.cancel();
        let _ = self.tx.send(Command::Shutdown);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn worker(rx: Receiver<Command>, tx: Sender<Event>, cancel: CancelFlags, wake: impl Fn()) {
    let mut model: Option<(Arc<DiffusionModel>, String)> = None;
    let emit = |e: Event| {
        let _ = tx.send(e);
        wake();
    };
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Shutdown => break,
            Command::SetModel { model: m, device } => model = Some((m, device)),
            Command::Generate {
                run,
                task,
                chat,
                params,
            } => with_run(model.as_ref(), &cancel, run, &emit, |m, device, flag| {
                generate(m, device, run, &task, chat, &params, flag, &emit)
            }),
            Command::WarmUp { task, chat, params } => {
                if let Some((m, device)) = &model {
                    let one_block = SamplerParams {
                        gen_length: params.block_size.max(1),
                        ..params
                    };
                    let never = AtomicBool::new(false);
                    // Nothing to report: a failure here shows again in the timed run.
                    if let Ok(h) = session::prepare_text(m, &task, chat, &one_block, device) {
                        let _ = session::run(m, h, device, &never, &mut |_| {});
                    }
                }
            }
            Command::Resume { run, header } => {
                with_run(model.as_ref(), &cancel, run, &emit, |m, device, flag| {
                    decode(m, device, run, *header, flag, &emit)
                })
            }
        }
    }
}

/// Runs one request: takes its cancel flag, runs `body` on the loaded model (or reports that none
/// is loaded), then forgets the flag.
fn with_run(
    model: Option<&(Arc<DiffusionModel>, String)>,
    cancel: &CancelFlags,
    run: u64,
    emit: &dyn Fn(Event),
    body: impl FnOnce(&DiffusionModel, &str, &AtomicBool),
) {
    let flag = cancel
        .lock()
        .ok()
        .and_then(|f| f.get(&run).cloned())
        .unwrap_or_default();
    match model {
        Some((m, device)) => body(m, device, &flag),
        None => emit(Event::Failed {
            run,
            error: "no model is loaded".into(),
        }),
    }
    if let Ok(mut f) = cancel.lock() {
        f.remove(&run);
    }
}

#[allow(clippy::too_many_arguments)]
fn generate(
    m: &DiffusionModel,
    device: &str,
    run: u64,
    task: &TextTask,
    chat: bool,
    params: &SamplerParams,
    cancel: &AtomicBool,
    emit: &dyn Fn(Event),
) {
    let prepared = session::prepare_text(m, task, chat, params, device);
    let header = match prepared {
        Ok(h) => h,
        Err(e) => {
            return emit(Event::Failed {
                run,
                error: e.to_string(),
            })
        }
    };
    decode(m, device, run, header, cancel, emit);
}

/// Decodes a prepared header, streaming its events.
fn decode(
    m: &DiffusionModel,
    device: &str,
    run: u64,
    header: TraceHeader,
    cancel: &AtomicBool,
    emit: &dyn Fn(Event),
) {
    emit(Event::Started {
        run,
        header: Box::new(header.clone()),
    });
    let mut on_step = |e: &StepEvent| {
        emit(Event::Step {
            run,
            event: Box::new(e.clone()),
        })
    };
    match session::run(m, header, device, cancel, &mut on_step) {
        Ok(trace) => emit(Event::Finished {
            run,
            trace: Box::new(trace),
        }),
        Err(e) => emit(Event::Failed {
            run,
            error: e.to_string(),
        }),
    }
}
