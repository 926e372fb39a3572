//! Traces: a self-describing header plus one event per denoising step, written as JSON Lines.
//! Replaying the events over the header's initial canvas reproduces every canvas the live run
//! showed.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::input::open_regular;

/// Longest line a trace may hold (a header with a 16k-token canvas is well under 8 MiB).
pub const MAX_LINE: usize = 64 << 20;

/// Checks a step against the header: what it commits and re-opens must lie inside its block
/// and the generated region (never the prompt), and a commit never writes the mask token.
fn check_event(h: &TraceHeader, e: &StepEvent) -> std::result::Result<(), String> {
    let len = h.initial.len();
    if e.block_start > e.block_end || e.block_end > len {
        return Err(format!(
            "block {}..{} is outside the canvas of {len}",
            e.block_start, e.block_end
        ));
    }
    let positions = e
        .commits
        .iter()
        .map(|c| ("commit", c.pos))
        .chain(e.reopened.iter().map(|r| ("re-open", r.pos)));
    for (what, p) in positions {
        if p >= len {
            return Err(format!("position {p} is outside the canvas of {len}"));
        }
        if p < h.gen_start || p >= h.gen_end {
            return Err(format!(
                "{what} at position {p}, outside the generated region {}..{} (the prompt and suffix are fixed)",
                h.gen_start, h.gen_end
            ));
        }
        if p < e.block_start || p >= e.block_end {
            return Err(format!(
                "{what} at position {p}, outside its block {}..{}",
                e.block_start, e.block_end
            ));
        }
    }
    // A number JSON cannot hold (1e300 read into an f32 is infinite) would be written back as
    // `null`, and the trace could no longer be read.
    let floats = e
        .commits
        .iter()
        .flat_map(|c| {
            [c.prob as f64, c.score as f64]
                .into_iter()
                .chain(c.top.iter().map(|t| t.2 as f64))
        })
        .chain(e.reopened.iter().map(|r| r.prob as f64))
        .chain(e.best_left.map(|b| b.1 as f64))
        .chain([e.forward_ms, e.step_ms, e.elapsed_ms]);
    if let Some(x) = floats.into_iter().find(|x| !x.is_finite()) {
        return Err(format!("a value out of range ({x})"));
    }
    if let Some(v) = h.vocab_size {
        let ids = e
            .commits
            .iter()
            .flat_map(|c| std::iter::once(c.token).chain(c.previous))
            .chain(e.commits.iter().flat_map(|c| c.top.iter().map(|t| t.0)));
        if let Some(id) = ids.into_iter().find(|&id| id as usize >= v) {
            return Err(format!(
                "token id {id} is outside the model's vocabulary of {v}"
            ));
        }
    }
    if let Some(c) = e.commits.iter().find(|c| c.token == h.mask_id) {
        return Err(format!(
            "commit at position {} writes the mask token {}",
            c.pos, h.mask_id
        ));
    }
    Ok(())
}

use crate::sampler::params::SamplerParams;

pub const TRACE_VERSION: u32 = 1;

/// What a run decodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TaskKind {
    Complete,
    Infill {
        suffix_len: usize,
        /// Fill-in-the-middle layout (`crate::fim`): the canvas is `<|fim_suffix|> S
        /// <|fim_prefix|> P <|fim_middle|>` then the middle, which ends at end-of-text; false:
        /// prefix, middle, suffix in place.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fim: bool,
    },
    Repair {
        budget: usize,
        original: Vec<u32>,
        corrupted_distance: usize,
    },
}

/// Everything needed to interpret and reproduce the events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceHeader {
    pub version: u32,
    pub model_id: String,
    pub model_hash: String,
    pub family: String,
    pub tokenizer: String,
    pub params: SamplerParams,
    pub task: TaskKind,
    pub prompt: String,
    pub mask_id: u32,
    pub stop_ids: Vec<u32>,
    /// Rows of the model's embedding: every token id in the trace is below it. Absent in traces
    /// written before it was recorded (their ids are then not range-checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// The canvas before the first step (prompt, masks or corrupted code, suffix).
    pub initial: Vec<u32>,
    /// Text of each initial token.
    pub initial_text: Vec<String>,
    /// Canvas positions being generated.
    pub gen_start: usize,
    pub gen_end: usize,
    pub device: String,
    /// Prompt-boundary healing: the prompt tokens backed off (already absent from `initial`) and
    /// the tokens allowed at `gen_start`. None: the prompt was used as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<crate::sampler::heal::Heal>,
    /// Set when this run is a fork: decoding went on from another run's canvas after edits by
    /// hand (its `initial` already holds them), so replaying the file reproduces the fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention: Option<Intervention>,
}

/// One change made by hand to a paused canvas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    pub pos: usize,
    /// The token pinned there; `None`: the position was re-masked.
    pub token: Option<u32>,
    pub text: String,
}

/// Where a fork came from: the step of the original run it left from, and the edits made there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intervention {
    pub at_step: usize,
    pub edits: Vec<Edit>,
    /// Masked positions forced to commit at the fork's first step, whatever their score.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub force_next: Vec<usize>,
}

/// One committed position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub pos: usize,
    pub token: u32,
    pub text: String,
    /// p(x̂) under the filtered distribution.
    pub prob: f32,
    /// The value the rule ranked on.
    pub score: f32,
    /// Five most likely tokens: (id, text, probability).
    pub top: Vec<(u32, String, f32)>,
    /// The token this position held before it was re-opened, when this is a revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u32>,
}

/// A committed token re-opened by edit noise or repair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reopen {
    pub pos: usize,
    pub token: u32,
    pub text: String,
    /// The model's probability of the token when it was re-opened.
    pub prob: f32,
}

/// One denoising step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    /// Global step index (0-based).
    pub index: usize,
    pub block: usize,
    /// Step within the block.
    pub step: usize,
    pub block_start: usize,
    pub block_end: usize,
    /// Positions the schedule asked for (for the threshold rule: the minimum, 1).
    pub planned: usize,
    pub commits: Vec<Commit>,
    pub reopened: Vec<Reopen>,
    /// Best score among positions left masked, and its position.
    pub best_left: Option<(usize, f32)>,
    /// Masks left in the whole generated region after this step.
    pub masks_left: usize,
    /// Tokens fed through the network by this step's forward.
    pub in_flight: usize,
    pub forward_ms: f64,
    pub step_ms: f64,
    /// Forwards so far in the run, including this step's.
    pub nfe: usize,
    /// Milliseconds since the run started, at the end of this step.
    pub elapsed_ms: f64,
}

/// Why a run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum FinishReason {
    Complete,
    /// Stopped at the end of the block that produced a stop token.
    Eos {
        block: usize,
        token: u32,
    },
    Cancelled,
}

/// The last record of a finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub reason: FinishReason,
    /// Generated tokens (the region up to where decoding stopped).
    pub tokens: Vec<u32>,
    pub text: String,
    pub metrics: Metrics,
    /// Repair mode: distance to the original after repair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_distance: Option<usize>,
}

/// Speed figures of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub total_ms: f64,
    pub forwards: usize,
    pub tokens: usize,
    pub steps: usize,
    pub first_block_ms: f64,
}

impl Metrics {
    pub fn tokens_per_second(&self) -> f64 {
        if self.total_ms > 0.0 {
            self.tokens as f64 * 1000.0 / self.total_ms
        } else {
            0.0
        }
    }
    pub fn tokens_per_forward(&self) -> f64 {
        if self.forwards > 0 {
            self.tokens as f64 / self.forwards as f64
        } else {
            0.0
        }
    }
    pub fn ms_per_step(&self) -> f64 {
        if self.steps > 0 {
            self.total_ms / self.steps as f64
        } else {
            0.0
        }
    }
}

/// One line of a trace file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
enum Line {
    Header(Box<TraceHeader>),
    Step(Box<StepEvent>),
    Finish(Box<Finish>),
}

/// A run: header, events, and the finish record once it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub header: TraceHeader,
    pub events: Vec<StepEvent>,
    pub finish: Option<Finish>,
}

/// A canvas position as a view sees it at some step.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub token: u32,
    pub text: String,
    pub masked: bool,
    /// Global step at which the current token was committed (None: given, not generated).
    pub committed_at: Option<usize>,
    pub prob: f32,
    pub score: f32,
    /// Times this position was revised (re-opened and committed again).
    pub revisions: usize,
    pub previous: Option<u32>,
    pub top: Vec<(u32, String, f32)>,
}

/// The canvas as views see it: every position's cell, moved forward one step event at a time.
/// The only place that replays events, so every view shows the same canvas the live run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Canvas {
    pub cells: Vec<Cell>,
    /// Step events applied so far.
    pub steps: usize,
    mask_id: u32,
}

impl Canvas {
    /// The canvas before the first step.
    pub fn initial(h: &TraceHeader) -> Self {
        let cells = h
            .initial
            .iter()
            .enumerate()
            .map(|(i, &token)| Cell {
                token,
                text: h.initial_text.get(i).cloned().unwrap_or_default(),
                masked: token == h.mask_id,
                committed_at: None,
                prob: 1.0,
                score: 0.0,
                revisions: 0,
                previous: None,
                top: Vec::new(),
            })
            .collect();
        Canvas {
            cells,
            steps: 0,
            mask_id: h.mask_id,
        }
    }

    /// Applies one step: its re-opened positions become masks, then its commits land. Positions
    /// outside the canvas are ignored (a loaded trace is validated before it is shown).
    pub fn apply(&mut self, e: &StepEvent) {
        Self::apply_to(&mut self.cells, self.mask_id, e);
        self.steps += 1;
    }

    /// [`Canvas::apply`] on cells kept elsewhere (a view's own cache), `mask_id` from the header.
    pub fn apply_to(cells: &mut [Cell], mask_id: u32, e: &StepEvent) {
        for r in &e.reopened {
            if let Some(c) = cells.get_mut(r.pos) {
                c.previous = Some(r.token);
                c.token = mask_id;
                c.text = "[MASK]".into();
                c.masked = true;
            }
        }
        for m in &e.commits {
            if let Some(c) = cells.get_mut(m.pos) {
                if m.previous.is_some() {
                    c.revisions += 1;
                }
                c.token = m.token;
                c.text.clone_from(&m.text);
                c.masked = false;
                c.committed_at = Some(e.index);
                c.prob = m.prob;
                c.score = m.score;
                c.previous = m.previous;
                c.top.clone_from(&m.top);
            }
        }
    }

    /// Applies the trace's events from where this canvas stands up to step `k` (forward only: a
    /// canvas past `k` stays as it is).
    pub fn advance(&mut self, trace: &Trace, k: usize) {
        let from = self.steps.min(k);
        for e in trace.events.iter().take(k).skip(from) {
            self.apply(e);
        }
    }

    /// The token ids.
    pub fn tokens(&self) -> Vec<u32> {
        self.cells.iter().map(|c| c.token).collect()
    }
}

impl Trace {
    pub fn new(header: TraceHeader) -> Self {
        Trace {
            header,
            events: Vec::new(),
            finish: None,
        }
    }

    /// Number of cursor positions: 0 = before the first step, k = after k steps.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Token ids of the canvas after `k` steps.
    pub fn tokens_at(&self, k: usize) -> Vec<u32> {
        self.canvas_at(k).tokens()
    }

    /// Full cell state of the canvas after `k` steps.
    pub fn cells_at(&self, k: usize) -> Vec<Cell> {
        self.canvas_at(k).cells
    }

    /// The canvas after `k` steps, replayed from the initial one.
    pub fn canvas_at(&self, k: usize) -> Canvas {
        let mut c = Canvas::initial(&self.header);
        c.advance(self, k);
        c
    }

    /// Writes the trace atomically (see [`crate::atomic`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::atomic::write(path, |f| {
            let mut w = std::io::BufWriter::new(f.as_file_mut());
            self.write_to(&mut w)?;
            w.flush()
        })
    }

    /// Writes JSON Lines to any writer.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let line = |w: &mut dyn Write, l: &Line| -> std::io::Result<()> {
            serde_json::to_writer(&mut *w, l)?;
            w.write_all(b"\n")
        };
        line(w, &Line::Header(Box::new(self.header.clone())))?;
        for e in &self.events {
            line(w, &Line::Step(Box::new(e.clone())))?;
        }
        if let Some(f) = &self.finish {
            line(w, &Line::Finish(Box::new(f.clone())))?;
        }
        Ok(())
    }

    /// Reads a trace; a corrupt or truncated file is reported with the line that failed.
    pub fn load(path: &Path) -> Result<Self> {
        let f = open_regular(path)?;
        Self::read_from(std::io::BufReader::new(f), path)
    }

    pub fn read_from(r: impl BufRead, path: &Path) -> Result<Self> {
        let err = |line: usize, problem: String| Error::Trace {
            file: path.to_path_buf(),
            line,
            problem,
        };
        let mut trace: Option<Trace> = None;
        let mut r = r;
        let mut buf = Vec::new();
        for n in 1.. {
            buf.clear();
            // Bounded: a file without newlines (or /dev/zero) must not fill memory.
            let got = (&mut r)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(|e| err(n, format!("unreadable: {e}")))?;
            if got == 0 {
                break;
            }
            if buf.len() > MAX_LINE {
                return Err(err(
                    n,
                    format!("line longer than {} MiB; not a trace", MAX_LINE >> 20),
                ));
            }
            let l =
                std::str::from_utf8(&buf).map_err(|e| err(n, format!("not UTF-8 text: {e}")))?;
            if l.trim().is_empty() {
                continue;
            }
            let parsed: Line =
                serde_json::from_str(l).map_err(|e| err(n, format!("not a trace record: {e}")))?;
            match (parsed, trace.as_mut()) {
                (Line::Header(h), None) => {
                    if h.version != TRACE_VERSION {
                        return Err(err(
                            n,
                            format!(
                                "trace version {} is not supported (expected {TRACE_VERSION})",
                                h.version
                            ),
                        ));
                    }
                    if let Some(v) = h.vocab_size {
                        if let Some(id) = h.initial.iter().find(|&&id| id as usize >= v) {
                            return Err(err(
                                n,
                                format!(
                                    "canvas token id {id} is outside the model's vocabulary of {v}"
                                ),
                            ));
                        }
                    }
                    if h.initial.len() != h.initial_text.len()
                        || h.gen_end > h.initial.len()
                        || h.gen_start > h.gen_end
                    {
                        return Err(err(n, "header is inconsistent (canvas lengths)".into()));
                    }
                    let p = &h.params;
                    if ![p.threshold, p.temperature, p.top_p, p.edit_noise]
                        .iter()
                        .all(|x| x.is_finite())
                    {
                        return Err(err(n, "a sampler parameter is out of range".into()));
                    }
                    trace = Some(Trace::new(*h));
                }
                (Line::Header(_), Some(_)) => return Err(err(n, "a second header".into())),
                (_, None) => return Err(err(n, "the first record must be the header".into())),
                (Line::Step(e), Some(t)) => {
                    if t.finish.is_some() {
                        return Err(err(n, "a step after the finish record".into()));
                    }
                    if e.index != t.events.len() {
                        return Err(err(
                            n,
                            format!(
                                "step index {} out of order (expected {})",
                                e.index,
                                t.events.len()
                            ),
                        ));
                    }
                    check_event(&t.header, &e).map_err(|p| err(n, p))?;
                    t.events.push(*e);
                }
                (Line::Finish(_), Some(t)) if t.finish.is_some() => {
                    return Err(err(n, "a second finish record".into()))
                }
                (Line::Finish(f), Some(t)) => {
                    let m = &f.metrics;
                    if !(m.total_ms.is_finite() && m.first_block_ms.is_finite()) {
                        return Err(err(n, "a finish metric is out of range".into()));
                    }
                    let room = t.header.gen_end - t.header.gen_start;
                    if f.tokens.len() > room {
                        return Err(err(
                            n,
                            format!(
                                "the finish record holds {} tokens, the generated region only {room}",
                                f.tokens.len()
                            ),
                        ));
                    }
                    t.finish = Some(*f)
                }
            }
        }
        trace.ok_or_else(|| err(0, "empty file: no header".into()))
    }
}
