//! What the window knows about runs: the traces being built from engine events, and the timeline
//! cursor. Views read from here; nothing about a generation lives inside a widget.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::canvas::{CanvasCache, CanvasModel};
use crate::engine::Event;
use crate::trace::{Cell, FinishReason, Metrics, Trace};

/// Which part of the window shows a run. The engine never sees it: each lane remembers the id of
/// its current run, and an event finds its lane by that id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Main,
    /// The race view: the same prompt decoded autoregressively.
    RaceAr,
    /// The race view: the current diffusion settings.
    RaceDiffusion,
    /// A fork of the main run after an intervention.
    Fork,
}

impl Lane {
    pub const ALL: [Lane; 4] = [Lane::Main, Lane::RaceAr, Lane::RaceDiffusion, Lane::Fork];
}

/// Where a lane's current run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    Idle,
    /// Sent to the engine, no header yet.
    Queued,
    Running,
    Finished(FinishReason),
    Failed(String),
}

impl RunStatus {
    /// Whether the engine may still send events for this run.
    pub fn is_active(&self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// One lane's run: the trace as far as it has arrived. Views borrow it (or share the `Arc`, as a
/// background save does); appending copies it only while such a share is alive.
#[derive(Clone, Debug)]
pub struct LaneRun {
    pub run: u64,
    pub trace: Option<Arc<Trace>>,
    pub status: RunStatus,
}

impl Default for LaneRun {
    fn default() -> Self {
        LaneRun {
            run: 0,
            trace: None,
            status: RunStatus::Idle,
        }
    }
}

impl LaneRun {
    fn apply(&mut self, ev: Event) {
        match ev {
            Event::Started { header, .. } => {
                self.trace = Some(Arc::new(Trace::new(*header)));
                self.status = RunStatus::Running;
            }
            Event::Step { event, .. } => {
                if let Some(t) = self.trace.as_mut().map(Arc::make_mut) {
                    // Events of one run arrive in order; a gap would mean a bug upstream, and
                    // appending anyway would make the canvas lie, so drop it.
                    if event.index == t.events.len() {
                        t.events.push(*event);
                    }
                }
            }
            Event::Finished { trace, .. } => {
                self.status = match &trace.finish {
                    Some(f) => RunStatus::Finished(f.reason.clone()),
                    None => RunStatus::Finished(FinishReason::Complete),
                };
                self.trace = Some(Arc::new(*trace));
            }
            Event::Failed { error, .. } => {
                // A cancelled run arrives as an error from the sampler; keep what was decoded.
                self.status = if error.contains("cancelled") {
                    RunStatus::Finished(FinishReason::Cancelled)
                } else {
                    RunStatus::Failed(error)
                };
            }
        }
    }
}

/// All run state of the window.
pub struct Store {
    next_run: u64,
    pub main: LaneRun,
    pub race_ar: LaneRun,
    pub race_diffusion: LaneRun,
    /// A fork of the main run (an intervention continued), or a second trace to compare.
    pub fork: LaneRun,
    /// Timeline cursor over the main trace: 0 = before the first step, k = after k steps.
    pub cursor: usize,
    /// Keep the cursor at the newest step while a run streams in.
    pub follow: bool,
    pub playing: bool,
    /// Playback speed in steps per second.
    pub speed: f32,
    play_accum: f32,
    /// The race view's shared clock in milliseconds of run time.
    pub race_clock_ms: f64,
    pub race_playing: bool,
    /// The canvas at the cursor, moved forward step by step.
    pub canvas: CanvasCache,
    /// The race lanes' canvases at the shared clock (autoregressive, diffusion).
    pub race_canvas: [CanvasCache; 2],
    /// The compare view's canvases (original, fork).
    pub fork_canvas: [CanvasCache; 2],
    /// The race's quality line, for the (autoregressive, diffusion) runs it was computed from.
    pub race_quality: Option<((u64, u64), String)>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            next_run: 1,
            main: LaneRun::default(),
            race_ar: LaneRun::default(),
            race_diffusion: LaneRun::default(),
            fork: LaneRun::default(),
            cursor: 0,
            follow: true,
            playing: false,
            speed: 8.0,
            play_accum: 0.0,
            race_clock_ms: 0.0,
            race_playing: false,
            canvas: CanvasCache::default(),
            race_canvas: Default::default(),
            fork_canvas: Default::default(),
            race_quality: None,
        }
    }
}

impl Store {
    /// Reserves a run id for `lane` and marks it queued.
    pub fn begin(&mut self, lane: Lane) -> u64 {
        let run = self.next_run;
        self.next_run += 1;
        let fresh = LaneRun {
            run,
            trace: None,
            status: RunStatus::Queued,
        };
        match lane {
            Lane::Main => {
                self.main = fresh;
                self.cursor = 0;
                self.follow = true;
                self.playing = false;
            }
            Lane::RaceAr => {
                self.race_ar = fresh;
                self.race_clock_ms = 0.0;
                // The replay starts once both lanes are timed (see `tick`).
                self.race_playing = true;
            }
            Lane::RaceDiffusion => self.race_diffusion = fresh,
            Lane::Fork => self.fork = fresh,
        }
        run
    }

    fn lane_mut(&mut self, lane: Lane) -> &mut LaneRun {
        match lane {
            Lane::Main => &mut self.main,
            Lane::RaceAr => &mut self.race_ar,
            Lane::RaceDiffusion => &mut self.race_diffusion,
            Lane::Fork => &mut self.fork,
        }
    }

    /// The lane whose current run is `run`; `None` for a superseded run.
    pub fn lane_of(&self, run: u64) -> Option<Lane> {
        let lane = |l: Lane| match l {
            Lane::Main => &self.main,
            Lane::RaceAr => &self.race_ar,
            Lane::RaceDiffusion => &self.race_diffusion,
            Lane::Fork => &self.fork,
        };
        Lane::ALL.into_iter().find(|&l| lane(l).run == run)
    }

    /// Applies one engine event; events of superseded runs are ignored.
    pub fn apply(&mut self, ev: Event) {
        let run = match &ev {
            Event::Started { run, .. }
            | Event::Step { run, .. }
            | Event::Finished { run, .. }
            | Event::Failed { run, .. } => *run,
        };
        // Run ids start at 1, so an idle lane (run 0) never matches.
        let Some(lane) = self.lane_of(run).filter(|_| run != 0) else {
            return;
        };
        self.lane_mut(lane).apply(ev);
        if lane == Lane::Main && self.follow {
            self.cursor = self.len();
        }
    }

    /// Drains the engine's events within `budget`, so a burst never stalls a frame.
    pub fn drain(&mut self, mut next: impl FnMut() -> Option<Event>, budget: Duration) -> usize {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < budget {
            let Some(ev) = next() else { break };
            self.apply(ev);
            n += 1;
        }
        n
    }

    /// Replaces the main lane with a trace read from disk.
    pub fn load(&mut self, trace: Trace) {
        let run = self.next_run;
        self.next_run += 1;
        let status = match &trace.finish {
            Some(f) => RunStatus::Finished(f.reason.clone()),
            None => RunStatus::Finished(FinishReason::Cancelled),
        };
        self.main = LaneRun {
            run,
            trace: Some(Arc::new(trace)),
            status,
        };
        self.cursor = self.len();
        self.follow = false;
        self.playing = false;
    }

    pub fn trace(&self) -> Option<&Trace> {
        self.main.trace.as_deref()
    }

    /// Number of steps of the main trace so far.
    pub fn len(&self) -> usize {
        self.trace().map_or(0, Trace::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the cursor (clamped); moving away from the newest step stops following.
    pub fn set_cursor(&mut self, k: usize) {
        let len = self.len();
        self.cursor = k.min(len);
        self.follow = self.cursor == len && self.main.status.is_active();
    }

    /// The canvas at the cursor, cached until the cursor or the trace changes.
    pub fn cells(&mut self) -> &[Cell] {
        self.canvas_model().map_or(&[], |m| m.cells.as_slice())
    }

    /// Everything the canvas view draws at the cursor.
    pub fn canvas_model(&mut self) -> Option<&CanvasModel> {
        let t = self.main.trace.as_ref()?;
        Some(self.canvas.get(self.main.run, t, self.cursor))
    }

    /// Advances playback by `dt` seconds; returns whether anything is animating.
    pub fn tick(&mut self, dt: f32) -> bool {
        let mut animating = false;
        if self.playing {
            self.play_accum += dt * self.speed;
            let whole = self.play_accum.floor();
            self.play_accum -= whole;
            let len = self.len();
            self.cursor = (self.cursor + whole as usize).min(len);
            if self.cursor >= len && !self.main.status.is_active() {
                self.playing = false;
            }
            animating = true;
        }
        let measuring = self.race_ar.status.is_active() || self.race_diffusion.status.is_active();
        if self.race_playing && !measuring {
            self.race_clock_ms += f64::from(dt) * 1000.0;
            let end = race_end_ms(&self.race_ar).max(race_end_ms(&self.race_diffusion));
            if self.race_clock_ms >= end {
                self.race_clock_ms = end;
                self.race_playing = false;
            }
            animating = true;
        }
        animating
    }

    pub fn toggle_play(&mut self) {
        if !self.playing && self.cursor >= self.len() {
            self.cursor = 0;
        }
        self.playing = !self.playing;
        self.play_accum = 0.0;
        self.follow = false;
    }

    /// Speed figures of the main run: the finish record's, or computed from the steps so far.
    pub fn metrics(&self) -> Option<Metrics> {
        let t = self.trace()?;
        if let Some(f) = &t.finish {
            return Some(f.metrics.clone());
        }
        Some(live_metrics(t))
    }
}

/// Metrics of a run still streaming in.
pub fn live_metrics(t: &Trace) -> Metrics {
    let gen = t.header.gen_end - t.header.gen_start;
    let last = t.events.last();
    let first_block_ms = t
        .events
        .iter()
        .take_while(|e| e.block == 0)
        .last()
        .filter(|_| t.events.iter().any(|e| e.block > 0))
        .map_or(0.0, |e| e.elapsed_ms);
    Metrics {
        total_ms: last.map_or(0.0, |e| e.elapsed_ms),
        forwards: last.map_or(0, |e| e.nfe),
        tokens: last.map_or(0, |e| gen.saturating_sub(e.masks_left)),
        steps: t.events.len(),
        first_block_ms,
    }
}

/// Run time at which a lane's trace ends (its last step, or its total when finished).
pub fn race_end_ms(l: &LaneRun) -> f64 {
    let Some(t) = &l.trace else { return 0.0 };
    let last = t.events.last().map_or(0.0, |e| e.elapsed_ms);
    t.finish
        .as_ref()
        .map_or(last, |f| f.metrics.total_ms.max(last))
}

/// Steps of `t` that had ended by run time `ms`.
pub fn steps_by(t: &Trace, ms: f64) -> usize {
    t.events.partition_point(|e| e.elapsed_ms <= ms)
}
