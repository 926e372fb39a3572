//! Where a decode spends its time, for `unmask bench`: process-wide counters of nanoseconds per
//! phase of a step. Adding to them costs two clock reads per phase per forward, so they are always
//! on; only the benchmark reads and resets them (runs measured one at a time).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The phases of one denoising step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Embedding and the decoder layers.
    Model = 0,
    /// Final norm and LM head over the rows the step reads.
    Head = 1,
    /// Softmax statistics, top candidates and the copy of the step's numbers to the host.
    Readback = 2,
    /// Host-side proposals, scores and selection.
    Propose = 3,
    /// Building the step event: token texts of commits and alternatives.
    Events = 4,
}

const PHASES: usize = 5;

static NANOS: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];
static SYNC: AtomicBool = AtomicBool::new(false);

/// Adds the time since `since` to `phase`; returns now (the start of the next phase).
pub fn add(phase: Phase, since: Instant) -> Instant {
    let now = Instant::now();
    NANOS[phase as usize].fetch_add((now - since).as_nanos() as u64, Ordering::Relaxed);
    now
}

/// Zeroes every counter.
pub fn reset() {
    for n in &NANOS {
        n.store(0, Ordering::Relaxed);
    }
}

/// Milliseconds per phase since the last reset, in [`Phase`] order.
pub fn snapshot() -> [f64; PHASES] {
    let mut out = [0.0; PHASES];
    for (o, n) in out.iter_mut().zip(&NANOS) {
        *o = n.load(Ordering::Relaxed) as f64 / 1e6;
    }
    out
}

/// GPU work is asynchronous: with this on, the model waits for the device at phase boundaries so
/// the counters mean something there (the benchmark turns it on for CUDA; it costs a sync each).
pub fn set_sync(on: bool) {
    SYNC.store(on, Ordering::Relaxed);
}

pub fn sync_enabled() -> bool {
    SYNC.load(Ordering::Relaxed)
}
