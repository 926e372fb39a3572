//! What `unmask gui --report FILE.json` measures: frames drawn, how long each frame's UI code
//! took, the UI thread's CPU time, and the live run's own speed. A script can then check that the
//! window keeps up without a person watching it.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// CPU time used by the calling thread so far.
pub fn thread_cpu() -> Duration {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    Duration::ZERO
}

/// A point in the session: time, UI-thread CPU and frames so far.
#[derive(Clone, Copy, Debug)]
struct Mark {
    at: Instant,
    cpu: Duration,
    /// The software rasterizer's threads (`render_priority::rasterizer_cpu`).
    render_cpu: Duration,
    frames: usize,
}

/// Per-frame timings. The figures cover the launch run (from its start to its end) when there
/// is one, else the whole session.
pub struct FrameStats {
    start: Mark,
    end: Option<Mark>,
    /// Milliseconds spent in the app's `ui` per frame.
    pub frame_ms: Vec<f64>,
}

impl Default for FrameStats {
    fn default() -> Self {
        FrameStats {
            start: Mark {
                at: Instant::now(),
                cpu: thread_cpu(),
                render_cpu: super::render_priority::rasterizer_cpu(),
                frames: 0,
            },
            end: None,
            frame_ms: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub frames: usize,
    pub wall_s: f64,
    pub frame_ms_median: f64,
    pub frame_ms_max: f64,
    pub ui_thread_cpu_s: f64,
    /// UI-thread CPU time over wall time.
    pub ui_thread_cpu_share: f64,
    /// The live run's figures from its own clock (tokens/s, forwards …), if one ran.
    pub run: Option<RunReport>,
    /// The race's lanes, if one ran.
    pub race: Option<RaceReport>,
    /// How the main run ended (`finished: complete`, `failed: …`).
    pub status: String,
    /// Software rasterizer threads that yield to the decoder (0 on a GPU; `gui/render_priority.rs`).
    pub render_threads_lowered: usize,
    /// CPU time of the software rasterizer's threads over the same span (0 on a GPU): the cost of
    /// drawing that the UI thread's time does not show.
    pub render_threads_cpu_s: f64,
}

#[derive(Debug, Serialize)]
pub struct RaceReport {
    pub ar_tokens_per_second: f64,
    pub diffusion_tokens_per_second: f64,
    pub speedup: f64,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub tokens: usize,
    pub steps: usize,
    pub forwards: usize,
    pub total_ms: f64,
    pub tokens_per_second: f64,
    pub gen_length: usize,
    pub block_size: usize,
    pub steps_per_block: usize,
}

impl FrameStats {
    pub fn record(&mut self, d: Duration) {
        self.frame_ms.push(d.as_secs_f64() * 1e3);
    }

    fn now(&self) -> Mark {
        Mark {
            at: Instant::now(),
            cpu: thread_cpu(),
            render_cpu: super::render_priority::rasterizer_cpu(),
            frames: self.frame_ms.len(),
        }
    }

    /// The measured span starts here (the launch run was sent to the engine).
    pub fn mark_start(&mut self) {
        self.start = self.now();
        self.end = None;
    }

    /// The measured span ends here (the launch run has ended).
    pub fn mark_end(&mut self) {
        if self.end.is_none() {
            self.end = Some(self.now());
        }
    }

    pub fn report(&self, run: Option<RunReport>) -> Report {
        let end = self.end.unwrap_or_else(|| self.now());
        let mut v = self
            .frame_ms
            .get(self.start.frames..end.frames)
            .unwrap_or(&[])
            .to_vec();
        v.sort_by(f64::total_cmp);
        let wall = end.at.duration_since(self.start.at).as_secs_f64();
        let cpu = end.cpu.saturating_sub(self.start.cpu).as_secs_f64();
        Report {
            frames: v.len(),
            wall_s: wall,
            frame_ms_median: v.get(v.len() / 2).copied().unwrap_or(0.0),
            frame_ms_max: v.last().copied().unwrap_or(0.0),
            ui_thread_cpu_s: cpu,
            ui_thread_cpu_share: if wall > 0.0 { cpu / wall } else { 0.0 },
            run,
            race: None,
            status: String::new(),
            render_threads_lowered: 0,
            render_threads_cpu_s: end
                .render_cpu
                .saturating_sub(self.start.render_cpu)
                .as_secs_f64(),
        }
    }
}

pub fn write(report: &Report, path: &Path) -> Result<(), String> {
    crate::atomic::write_json(path, report).map_err(|e| format!("could not write the report: {e}"))
}
