//! The playground app: owns the engine, the store and the settings, and lays out the panels.
//! Each frame: poll the model load, drain engine events into the store, apply keys and
//! playback, then draw what the store holds at the cursor.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poll_promise::Promise;

use super::canvas::{self, CanvasView};
use super::colors::ColorMode;
use super::commit_map::{self, CpuMapPainter, GpuMapPainter, MapPainter, Raster};
use super::controls::{self, Action, ControlsState};
use super::jobs::{Job, Outcome};
use super::pacing::Pacer;
use super::render_priority;
use super::report::{self, FrameStats, RunReport};
use super::settings::{Settings, View};
use super::store::Lane;
use super::store::{RunStatus, Store};
use super::{compare, explain, files, highlight, metrics, output, race, timeline};
use crate::cli::GuiArgs;
use crate::engine::{Command, Engine};
use crate::model::{self, device, DiffusionModel};
use crate::sampler::{ParamProblem, SamplerParams};
use crate::trace::{Cell, Edit};

/// How long a frame may spend applying engine events before it draws.
const DRAIN_BUDGET: Duration = Duration::from_millis(4);
/// The display rate: the window repaints at most this often. While a decoder runs on the CPU
/// the interval grows with what a frame costs (`pacing`).
const FRAME_INTERVAL_MS: u64 = 16;
/// While the race's lanes decode, the window stays nearly still so that it does not compete with
/// the decoders it is timing.
const QUIET_INTERVAL_MS: u64 = 500;

/// Set when the `--run` decoding failed, so `unmask gui --quit-when-done` exits non-zero.
pub static LAUNCH_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the command line asks the window to do at launch (`unmask gui --run …`).
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Start decoding as soon as the model is loaded.
    pub run: bool,
    /// Start a race instead.
    pub race: bool,
    /// Close the window once that run has ended.
    pub quit_when_done: bool,
    /// Write frame and run figures here when the window closes.
    pub report: Option<PathBuf>,
}

type LoadResult = Result<Arc<DiffusionModel>, String>;

enum ModelSlot {
    Unloaded,
    Loading {
        promise: Promise<LoadResult>,
        what: String,
        since: Instant,
    },
    Ready(Arc<DiffusionModel>),
    Failed(String),
}

/// An intervention being prepared: the step the run is paused at, the tile chosen, the edits.
#[derive(Clone, Debug, Default)]
pub struct Intervene {
    pub at_step: usize,
    pub selected: Option<usize>,
    pub edits: Vec<Edit>,
    /// Masked positions to commit at the fork's first step.
    pub force: Vec<usize>,
    /// The pin menu's text field, and why its text cannot be pinned.
    pub typed: String,
    pub typed_error: Option<String>,
}

/// The window's state.
pub struct PlaygroundApp {
    pub settings: Settings,
    pub store: Store,
    engine: Option<Engine>,
    model: ModelSlot,
    /// Errors shown in the banner until dismissed.
    errors: Vec<String>,
    notice: Option<String>,
    map_painter: Option<Box<dyn MapPainter>>,
    raster: Option<Raster>,
    map_uv: egui::Rect,
    hover_pos: Option<usize>,
    devices: Vec<String>,
    /// (task text, tokens) of the last prompt measured, for the context-length check.
    fixed_len: Option<(String, usize)>,
    trace_to_open: Option<PathBuf>,
    /// `gui --diff`: the trace to diff `trace_to_open` with.
    diff_with: Option<PathBuf>,
    /// File work in flight (dialogs, loads, saves, exports).
    jobs: Vec<Job>,
    ctx: Option<egui::Context>,
    pub launch: Launch,
    launched: bool,
    reported: bool,
    pub stats: FrameStats,
    /// Repaint interval the engine's wake-up uses, in milliseconds.
    repaint_ms: Arc<AtomicU64>,
    pub intervene: Intervene,
    /// wgpu draws on the CPU (lavapipe): its rasterizer threads yield to the decoder.
    cpu_rendered: bool,
    /// Rasterizer threads running at `render_priority::RENDER_NICE`.
    render_threads_lowered: usize,
    /// What a frame costs, and so how often to draw while a CPU decoder runs.
    pacer: Pacer,
    /// The window's background is the clear colour instead of each panel's fill (a real window;
    /// the test harness clears to transparent, so there the panels keep their fill).
    background_by_clear: bool,
    /// Animations are off (`still_while`).
    still: bool,
    /// CPUs this process may use (read once: on Linux each query reads cgroup files).
    cores: usize,
}

impl PlaygroundApp {
    fn with_settings(settings: Settings) -> Self {
        highlight::preload();
        PlaygroundApp {
            settings,
            store: Store::default(),
            engine: None,
            model: ModelSlot::Unloaded,
            errors: Vec::new(),
            notice: None,
            map_painter: None,
            raster: None,
            map_uv: egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
            hover_pos: None,
            devices: device::available(),
            fixed_len: None,
            trace_to_open: None,
            diff_with: None,
            jobs: Vec::new(),
            ctx: None,
            launch: Launch::default(),
            launched: false,
            reported: false,
            stats: FrameStats::default(),
            repaint_ms: Arc::new(AtomicU64::new(FRAME_INTERVAL_MS)),
            intervene: Intervene::default(),
            cpu_rendered: false,
            render_threads_lowered: 0,
            pacer: Pacer::default(),
            background_by_clear: false,
            still: false,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The app as the binary starts it: settings from eframe storage, then whatever the command
    /// line gives (model, prompt, sampler flags, a trace to open, what to do at launch).
    pub fn new(cc: &eframe::CreationContext<'_>, args: &GuiArgs) -> Self {
        let mut settings: Settings = cc
            .storage
            .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
            .unwrap_or_default();
        apply_args(&mut settings, args);
        let mut app = Self::with_settings(settings);
        app.trace_to_open = args.trace.clone();
        app.background_by_clear = true;
        app.diff_with = args.diff.clone();
        app.launch = Launch {
            run: args.run,
            race: args.race,
            quit_when_done: args.quit_when_done,
            report: args.report.clone(),
        };
        app
    }

    /// Default settings on `model_dir`, without eframe's creation context or storage (tests).
    pub fn new_for_test(model_dir: &Path) -> Self {
        let mut settings = Settings::default();
        if model_dir != model::embedded_dir() {
            settings.model = Some(model_dir.to_path_buf());
        }
        Self::with_settings(settings)
    }

    /// The canvas at the timeline cursor, as the canvas view draws it.
    pub fn displayed_cells(&mut self) -> Vec<Cell> {
        self.store.cells().to_vec()
    }

    /// The commit map's raster of the main run, as last drawn.
    pub fn commit_map_raster(&self) -> Option<&Raster> {
        self.raster.as_ref()
    }

    /// Commit-map rows uploaded by the painter so far (the work counter the tests check).
    pub fn commit_map_rows_uploaded(&self) -> usize {
        self.map_painter.as_ref().map_or(0, |p| p.rows_uploaded())
    }

    pub fn model_ready(&self) -> bool {
        matches!(self.model, ModelSlot::Ready(_))
    }

    /// No animations while `still`: an animating widget (a scroll bar fading in as the canvas
    /// grows) asks for a frame at once, every frame, past the pacing of a CPU decoder's frames.
    fn still_while(&mut self, still: bool, ctx: &egui::Context) {
        if still != self.still {
            self.still = still;
            let t = if still {
                0.0
            } else {
                egui::Style::default().animation_time
            };
            ctx.all_styles_mut(|s| s.animation_time = t);
        }
    }

    /// The loaded model decodes on the CPU, where frames take time from it.
    fn decodes_on_cpu(&self) -> bool {
        matches!(&self.model, ModelSlot::Ready(m) if m.net.device().is_cpu())
    }

    /// The model load failure, if any.
    pub fn model_error(&self) -> Option<&str> {
        match &self.model {
            ModelSlot::Failed(e) => Some(e),
            _ => None,
        }
    }

    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Whether any lane is waiting for the engine.
    pub fn running(&self) -> bool {
        self.store.main.status.is_active()
            || self.store.race_ar.status.is_active()
            || self.store.race_diffusion.status.is_active()
            || self.store.fork.status.is_active()
    }

    /// What clicking a tile does: choose it for an intervention at the cursor's step (the run
    /// must be paused or finished; moving to another step starts a new set of edits).
    pub fn select_tile(&mut self, pos: usize) {
        if self.store.main.status.is_active() {
            self.notice = Some("Cancel or let the run finish before intervening.".into());
            return;
        }
        let k = self.store.cursor;
        if self.intervene.at_step != k {
            self.intervene.edits.clear();
            self.intervene.force.clear();
        }
        self.intervene.at_step = k;
        if self.intervene.selected != Some(pos) {
            self.intervene.typed_error = None;
        }
        self.intervene.selected = Some(pos);
        self.store.playing = false;
    }

    /// Pins `token` (or re-masks, `None`) at `pos`, replacing an earlier edit there.
    pub fn edit(&mut self, pos: usize, token: Option<u32>, text: String) {
        self.intervene.edits.retain(|e| e.pos != pos);
        if token.is_some() {
            self.intervene.force.retain(|&p| p != pos);
        }
        self.intervene.edits.push(Edit { pos, token, text });
    }

    /// Pins the one token `text` encodes to at `pos`; the error says why it cannot (the model is
    /// not loaded, the text is no token or several, it is the mask).
    pub fn pin_typed(&mut self, pos: usize, text: &str) -> Result<(), String> {
        let ModelSlot::Ready(m) = &self.model else {
            return Err("load a model first: typed text is encoded with its tokenizer".into());
        };
        if text.is_empty() {
            return Err("type a token first".into());
        }
        let ids = m.encode(text).map_err(|e| e.to_string())?;
        let id = match ids.as_slice() {
            [id] if *id == m.mask_id() => return Err(format!("{text:?} is the mask token")),
            [id] => *id,
            [] => return Err(format!("{text:?} encodes to no token")),
            many => {
                let parts: Vec<String> = many
                    .iter()
                    .map(|&i| format!("{:?}", m.token_text(i)))
                    .collect();
                return Err(format!(
                    "{text:?} is {} tokens ({}), not one: pin one token at a time",
                    many.len(),
                    parts.join(" + ")
                ));
            }
        };
        let shown = m.token_text(id);
        self.edit(pos, Some(id), shown);
        Ok(())
    }

    /// Marks the masked `pos` to commit at the fork's first step, whatever its score.
    pub fn force_next(&mut self, pos: usize) {
        self.intervene
            .edits
            .retain(|e| e.pos != pos || e.token.is_none());
        if !self.intervene.force.contains(&pos) {
            self.intervene.force.push(pos);
        }
    }

    /// Continues decoding from the edited canvas as a fork beside the original.
    pub fn continue_fork(&mut self) {
        if !self.model_ready() || self.running() {
            return;
        }
        let Some(t) = self.store.main.trace.clone() else {
            return;
        };
        let iv = &self.intervene;
        match crate::fork::fork_header(&t, iv.at_step, &iv.edits, &iv.force) {
            Ok(header) => {
                let run = self.store.begin(Lane::Fork);
                if let Some(e) = &self.engine {
                    e.send(Command::Resume {
                        run,
                        header: Box::new(header),
                    });
                }
                self.settings.view = View::Fork;
            }
            Err(e) => self.errors.push(format!("Cannot fork: {e}")),
        }
    }

    /// The intervention panel: the chosen tile's alternatives, the edits, Continue.
    fn intervene_ui(&mut self, ui: &mut egui::Ui) {
        let Some(t) = self.store.main.trace.clone() else {
            ui.weak("Generate or open a run first.");
            return;
        };
        let iv = self.intervene.clone();
        if iv.selected.is_none() && iv.edits.is_empty() && iv.force.is_empty() {
            ui.weak("Pause (or finish) a run, then click a tile to pin a token or re-mask it.");
            return;
        }
        ui.label(format!("at step {} of {}", iv.at_step, t.len()));
        let (mut edit, mut typed, mut force) = (None, None, None);
        if let Some(pos) = iv.selected {
            let cells = if self.store.cursor == iv.at_step {
                self.store.cells().to_vec()
            } else {
                t.cells_at(iv.at_step)
            };
            if let Some(cell) = cells.get(pos) {
                ui.label(format!(
                    "position {pos}: {}",
                    if cell.masked {
                        "masked".to_string()
                    } else {
                        format!("{:?}", cell.text)
                    }
                ));
                // A masked tile has no alternatives yet: offer what the model proposed when it
                // committed the position later in the run.
                let alts = if cell.top.is_empty() {
                    t.events
                        .iter()
                        .rev()
                        .flat_map(|e| e.commits.iter())
                        .find(|c| c.pos == pos)
                        .map(|c| c.top.clone())
                        .unwrap_or_default()
                } else {
                    cell.top.clone()
                };
                for (id, text, p) in alts.iter().take(5) {
                    if ui.button(format!("pin #{id} {text:?} · {p:.2}")).clicked() {
                        edit = Some((pos, Some(*id), text.clone()));
                    }
                }
                ui.horizontal(|ui| {
                    let l = ui.label("token:");
                    let r = ui
                        .add(
                            egui::TextEdit::singleline(&mut self.intervene.typed)
                                .hint_text("type one token")
                                .desired_width(110.0),
                        )
                        .labelled_by(l.id);
                    let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                    if ui.button("pin typed").clicked() || enter {
                        typed = Some(pos);
                    }
                });
                if let Some(e) = &iv.typed_error {
                    ui.colored_label(egui::Color32::from_rgb(255, 120, 120), e);
                }
                if !cell.masked && cell.committed_at.is_some() && ui.button("re-mask").clicked() {
                    edit = Some((pos, None, String::new()));
                }
                if cell.masked && ui.button("commit next").clicked() {
                    force = Some(pos);
                }
            }
        }
        for e in &iv.edits {
            ui.weak(match e.token {
                Some(id) => format!("edit: position {} pinned to #{id} {:?}", e.pos, e.text),
                None => format!("edit: position {} re-masked", e.pos),
            });
        }
        for p in &iv.force {
            ui.weak(format!("edit: position {p} commits next"));
        }
        let mut go = false;
        ui.horizontal(|ui| {
            let can = self.model_ready()
                && !self.running()
                && !(iv.edits.is_empty() && iv.force.is_empty());
            go = ui
                .add_enabled(can, egui::Button::new("Continue from here"))
                .clicked();
            if ui.button("Clear").clicked() {
                self.intervene = Intervene::default();
            }
        });
        if let Some((pos, token, text)) = edit {
            self.edit(pos, token, text);
        }
        if let Some(pos) = typed {
            let text = self.intervene.typed.clone();
            self.intervene.typed_error = self.pin_typed(pos, &text).err();
        }
        if let Some(pos) = force {
            self.force_next(pos);
        }
        if go {
            self.continue_fork();
        }
    }

    /// Whether file work (a dialog, a load, a save, an export) is in flight.
    pub fn io_busy(&self) -> bool {
        !self.jobs.is_empty()
    }

    fn spawn_job(
        &mut self,
        what: impl Into<String>,
        work: impl FnOnce() -> Result<Outcome, String> + Send + 'static,
    ) {
        let job = Job::spawn(what, self.ctx.clone(), work);
        self.jobs.push(job);
    }

    /// Applies the outcomes of finished jobs.
    fn poll_jobs(&mut self, ctx: &egui::Context) {
        let mut pending = Vec::new();
        for job in std::mem::take(&mut self.jobs) {
            match job.try_take() {
                Err(job) => pending.push(job),
                Ok(Err(e)) => self.errors.push(e),
                Ok(Ok(Outcome::Cancelled)) => {}
                Ok(Ok(Outcome::Done(notice))) => self.notice = Some(notice),
                Ok(Ok(Outcome::ModelFolder(f))) => self.load_model(Some(f), ctx),
                Ok(Ok(Outcome::Diff(pair))) => {
                    let (pa, ta, pb, tb) = *pair;
                    if let Some(e) = &self.engine {
                        if self.store.main.status.is_active() || self.store.fork.status.is_active()
                        {
                            e.cancel();
                        }
                    }
                    self.store.load(ta);
                    self.store.load_fork(tb);
                    self.intervene = Intervene::default();
                    self.settings.view = View::Fork;
                    self.notice = Some(format!(
                        "Diffing {} (original) with {}",
                        file_name(&pa),
                        file_name(&pb)
                    ));
                }
                Ok(Ok(Outcome::Opened(path, t))) => {
                    if let Some(e) = &self.engine {
                        if self.store.main.status.is_active() {
                            e.cancel();
                        }
                    }
                    self.store.load(*t);
                    self.settings.view = View::Canvas;
                    self.notice = Some(format!("Opened {}", file_name(&path)));
                }
            }
        }
        pending.append(&mut self.jobs);
        self.jobs = pending;
        if !self.jobs.is_empty() {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
    }

    /// What File → Open trace… does once a path is chosen: reads it on a background thread.
    pub fn open_trace(&mut self, path: &Path) {
        let path = path.to_path_buf();
        self.spawn_job(format!("Opening {}", file_name(&path)), move || {
            files::open_trace(&path).map(|t| Outcome::Opened(path, Box::new(t)))
        });
    }

    /// What File → Diff two saved traces… does once both paths are chosen: reads both on a
    /// background thread, then shows them side by side in the Fork view.
    pub fn diff_traces(&mut self, a: &Path, b: &Path) {
        let (a, b) = (a.to_path_buf(), b.to_path_buf());
        self.spawn_job(
            format!("Opening {} and {}", file_name(&a), file_name(&b)),
            move || {
                files::open_pair(&a, &b).map(|(ta, tb)| Outcome::Diff(Box::new((a, ta, b, tb))))
            },
        );
    }

    /// What File → Save trace… does once a path is chosen: writes on a background thread.
    pub fn save_trace(&mut self, path: &Path) {
        let Some(t) = self.store.main.trace.clone() else {
            self.errors
                .push("Nothing to save: generate or open a trace first.".into());
            return;
        };
        let path = path.to_path_buf();
        self.spawn_job(format!("Saving {}", file_name(&path)), move || {
            files::save_trace(&t, &path)
                .map(|()| Outcome::Done(format!("Saved {}", file_name(&path))))
        });
    }

    /// The canvas at the cursor as a picture with its token text.
    pub fn canvas_image(&mut self, ctx: &egui::Context) -> Option<image::RgbaImage> {
        let mode = self.settings.color_mode;
        let t = self.store.main.trace.clone()?;
        let model = self
            .store
            .canvas
            .get(self.store.main.run, &t, self.store.cursor);
        Some(canvas::render_png(ctx, &t, model, mode, 14.0))
    }

    pub fn export_canvas_png(&mut self, ctx: &egui::Context, path: &Path) {
        let Some(img) = self.canvas_image(ctx) else {
            return;
        };
        let path = path.to_path_buf();
        self.spawn_job(format!("Writing {}", file_name(&path)), move || {
            files::save_png(&img, &path)
                .map(|()| Outcome::Done(format!("Wrote {}", file_name(&path))))
        });
    }

    /// Writes the decoding as an animated PNG (one frame per step, `steps_per_second` frames a
    /// second) in the background; the texts are laid out here first.
    pub fn export_animation(&mut self, ctx: &egui::Context, path: &Path, steps_per_second: f32) {
        let Some(t) = self.store.main.trace.clone() else {
            return;
        };
        let sheet = canvas::GlyphSheet::for_trace(ctx, &t, 14.0);
        let mode = self.settings.color_mode;
        let path = path.to_path_buf();
        self.spawn_job(format!("Writing {}", file_name(&path)), move || {
            files::save_apng(&sheet, &t, mode, steps_per_second, &path)
                .map(|()| Outcome::Done(format!("Wrote {}", file_name(&path))))
        });
    }

    /// The commit map at its stored resolution (one texel per position and step up to
    /// `commit_map::MAX_SIDE`), each texel scaled up to at least 1024 pixels across.
    pub fn commit_map_image(&self) -> Option<image::RgbaImage> {
        let t = self.store.trace()?;
        let r = Raster::build(t, self.store.main.run);
        let px = (1024 / r.cols.max(1)).clamp(1, 16) as u32;
        Some(r.to_image(px, self.settings.color_mode))
    }

    pub fn export_commit_map_png(&mut self, path: &Path) {
        let Some(t) = self.store.main.trace.clone() else {
            return;
        };
        let (run, mode) = (self.store.main.run, self.settings.color_mode);
        let path = path.to_path_buf();
        self.spawn_job(format!("Writing {}", file_name(&path)), move || {
            let r = Raster::build(&t, run);
            let px = (1024 / r.cols.max(1)).clamp(1, 16) as u32;
            files::save_png(&r.to_image(px, mode), &path)
                .map(|()| Outcome::Done(format!("Wrote {}", file_name(&path))))
        });
    }

    /// File-menu entries that first ask for a path: the dialog runs on the job's thread too.
    fn pick_then(
        &mut self,
        what: &str,
        default_name: &'static str,
        ext: &'static str,
        then: impl FnOnce(PathBuf) -> Result<Outcome, String> + Send + 'static,
    ) {
        self.spawn_job(what.to_string(), move || {
            match files::pick_save(default_name, ext) {
                Some(p) => then(p),
                None => Ok(Outcome::Cancelled),
            }
        });
    }

    /// Starts loading `folder` (`None`: embedded) on a background thread.
    fn load_model(&mut self, folder: Option<PathBuf>, ctx: &egui::Context) {
        if let Some(f) = &folder {
            self.settings.remember(f.clone());
        }
        self.settings.model = folder.clone();
        let dir = folder.unwrap_or_else(model::embedded_dir);
        let dev_name = self.settings.device.clone();
        let what = format!("{} on {dev_name}", dir.display());
        let ctx = ctx.clone();
        let promise = Promise::spawn_thread("unmask-load-model", move || {
            let result = (|| {
                let dev = device::open(&dev_name).map_err(|e| e.to_string())?;
                let dtype = model::parse_dtype("auto", &dev, None).map_err(|e| e.to_string())?;
                DiffusionModel::load(&dir, dtype, &dev)
                    .map(Arc::new)
                    .map_err(|e| format!("Could not load the model: {e}"))
            })();
            ctx.request_repaint();
            result
        });
        self.fixed_len = None;
        self.model = ModelSlot::Loading {
            promise,
            what,
            since: Instant::now(),
        };
    }

    fn poll_model(&mut self) {
        let ModelSlot::Loading { promise, .. } = &self.model else {
            return;
        };
        let Some(result) = promise.ready() else {
            return;
        };
        let result = result.clone();
        match result {
            Ok(m) => {
                if let Some(e) = &self.engine {
                    e.send(Command::SetModel {
                        model: m.clone(),
                        device: self.settings.device.clone(),
                    });
                }
                self.model = ModelSlot::Ready(m);
            }
            Err(e) => {
                self.errors.push(e.clone());
                self.model = ModelSlot::Failed(e);
            }
        }
    }

    fn model_status(&self) -> String {
        match &self.model {
            ModelSlot::Unloaded => "no model".into(),
            ModelSlot::Loading { what, since, .. } => {
                format!("loading {what}… {:.1} s", since.elapsed().as_secs_f32())
            }
            ModelSlot::Ready(m) => format!(
                "{} · {:.1} M parameters · context {} · {}",
                m.family().name(),
                m.info.parameters as f64 / 1e6,
                m.info.config.max_position_embeddings,
                self.settings.device
            ),
            ModelSlot::Failed(e) => format!("failed: {e}"),
        }
    }

    /// Parameter problems, with the prompt measured in tokens when the model is there.
    fn problems(&mut self) -> Vec<ParamProblem> {
        let ModelSlot::Ready(m) = &self.model else {
            return self.settings.params.problems(0, None);
        };
        let text = self.settings.task().prompt_text();
        let len = match &self.fixed_len {
            Some((t, n)) if *t == text => *n,
            _ => {
                let n = m.encode(&text).map(|v| v.len()).unwrap_or(0);
                self.fixed_len = Some((text, n));
                n
            }
        };
        self.settings
            .params
            .problems(len, Some(m.info.config.max_position_embeddings))
    }

    fn send_generate(&mut self, lane: Lane, params: SamplerParams) {
        // Again at each run: a rasterizer thread started since the first frame is caught too.
        self.yield_rendering();
        let Some(engine) = &self.engine else { return };
        let run = self.store.begin(lane);
        engine.send(Command::Generate {
            run,
            task: self.settings.task(),
            chat: self.settings.chat,
            params,
        });
    }

    fn generate(&mut self) {
        if !self.model_ready() || self.running() {
            return;
        }
        self.send_generate(Lane::Main, self.settings.params.clone());
        self.settings.view = View::Canvas;
    }

    /// Autoregressive then diffusion, one after the other, so their clocks do not compete.
    fn race(&mut self) {
        if !self.model_ready() || self.running() {
            return;
        }
        let diffusion = self.settings.params.clone();
        let ar = diffusion.autoregressive();
        // The lanes are timed; as in `unmask bench`, the model is warmed up first.
        if let Some(engine) = &self.engine {
            engine.send(Command::WarmUp {
                task: self.settings.task(),
                chat: self.settings.chat,
                params: diffusion.clone(),
            });
        }
        self.send_generate(Lane::RaceAr, ar);
        self.send_generate(Lane::RaceDiffusion, diffusion);
        self.settings.view = View::Race;
    }

    fn cancel(&mut self) {
        if let Some(e) = &self.engine {
            e.cancel();
        }
    }

    /// One-time setup that needs the context: engine, model load, commit-map painter.
    fn start(&mut self, ctx: &egui::Context, frame: &eframe::Frame) {
        self.ctx = Some(ctx.clone());
        if self.engine.is_none() {
            let c = ctx.clone();
            let every = self.repaint_ms.clone();
            // Events wake the window at most at the frame rate (or rarer while the race times
            // its lanes); a repaint per event would take the decoder's CPU.
            self.engine = Some(Engine::spawn(move || {
                c.request_repaint_after(Duration::from_millis(every.load(Ordering::Relaxed)))
            }));
        }
        if matches!(self.model, ModelSlot::Unloaded) {
            self.load_model(self.settings.model.clone(), ctx);
        }
        if self.map_painter.is_none() {
            self.cpu_rendered = frame.wgpu_render_state().is_some_and(|rs| {
                rs.adapter.get_info().device_type == egui_wgpu::wgpu::DeviceType::Cpu
            });
            self.yield_rendering();
            self.map_painter = Some(match frame.wgpu_render_state() {
                Some(rs) => Box::new(GpuMapPainter::new(rs)),
                None => Box::new(CpuMapPainter::default()),
            });
        }
        if let Some(p) = self.trace_to_open.take() {
            match self.diff_with.take() {
                Some(q) => self.diff_traces(&p, &q),
                None => self.open_trace(&p),
            }
        }
    }

    /// On a CPU-rendered display, drawing yields to decoding (`render_priority`); a no-op on a
    /// GPU. The UI thread itself is left alone, since the decoder's threads are created from it.
    fn yield_rendering(&mut self) {
        if !self.cpu_rendered {
            return;
        }
        match render_priority::lower_rasterizer_threads(render_priority::RENDER_NICE) {
            Ok(t) => self.render_threads_lowered = t.len(),
            Err(e) => tracing::warn!("could not lower the rasterizer threads' priority: {e}"),
        }
    }

    /// Everything that happens before drawing.
    pub fn update_state(&mut self, ctx: &egui::Context) {
        self.poll_model();
        self.poll_jobs(ctx);
        let racing =
            self.store.race_ar.status.is_active() || self.store.race_diffusion.status.is_active();
        let interval = if racing {
            QUIET_INTERVAL_MS
        } else {
            let cpu_decoding = self.running() && self.decodes_on_cpu();
            self.still_while(cpu_decoding, ctx);
            self.pacer.interval(cpu_decoding, self.cores).as_millis() as u64
        };
        self.repaint_ms.store(interval, Ordering::Relaxed);
        if let Some(engine) = &self.engine {
            let drained = self.store.drain(|| engine.try_recv(), DRAIN_BUDGET);
            if drained > 0 {
                ctx.request_repaint_after(Duration::from_millis(interval));
            }
        }
        if (self.launch.run || self.launch.race) && !self.launched && self.model_ready() {
            self.launched = true;
            self.stats.mark_start();
            if self.launch.race {
                self.race();
            } else {
                self.generate();
            }
        }
        if self.launched && !self.running() {
            self.stats.mark_end();
        }
        if ctx.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::Enter)) {
            self.generate();
        }
        timeline::keys(ctx, &mut self.store);
        let dt = ctx.input(|i| i.stable_dt).min(0.1);
        if self.store.tick(dt) {
            ctx.request_repaint_after(Duration::from_millis(FRAME_INTERVAL_MS));
        }
        if matches!(self.model, ModelSlot::Loading { .. }) {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
    }

    fn menu(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open trace…").clicked() {
                    self.spawn_job("Choosing a trace", || match files::pick_open_trace() {
                        Some(p) => files::open_trace(&p).map(|t| Outcome::Opened(p, Box::new(t))),
                        None => Ok(Outcome::Cancelled),
                    });
                }
                if ui.button("Diff two saved traces…").clicked() {
                    self.spawn_job("Choosing two traces to diff", || {
                        let Some(a) = files::pick_trace_titled("First trace (the original)") else {
                            return Ok(Outcome::Cancelled);
                        };
                        let Some(b) = files::pick_trace_titled("Second trace (to compare)") else {
                            return Ok(Outcome::Cancelled);
                        };
                        files::open_pair(&a, &b)
                            .map(|(ta, tb)| Outcome::Diff(Box::new((a, ta, b, tb))))
                    });
                }
                let has = self.store.trace().is_some();
                if ui
                    .add_enabled(has, egui::Button::new("Save trace…"))
                    .clicked()
                {
                    if let Some(t) = self.store.main.trace.clone() {
                        self.pick_then("Saving the trace", "trace.jsonl", "jsonl", move |p| {
                            files::save_trace(&t, &p)
                                .map(|()| Outcome::Done(format!("Saved {}", file_name(&p))))
                        });
                    }
                }
                ui.separator();
                if ui
                    .add_enabled(has, egui::Button::new("Export canvas PNG…"))
                    .clicked()
                {
                    // Texts are laid out here (that needs the window's fonts); the picture is
                    // drawn, and the file chosen and written, off the UI thread.
                    let ctx = ui.ctx().clone();
                    let mode = self.settings.color_mode;
                    if let Some(t) = self.store.main.trace.clone() {
                        let model = self
                            .store
                            .canvas
                            .get(self.store.main.run, &t, self.store.cursor)
                            .clone();
                        let sheet = canvas::GlyphSheet::new(
                            &ctx,
                            14.0,
                            model.tiles.iter().map(|t| t.text.as_str()),
                        );
                        self.pick_then("Exporting the canvas", "canvas.png", "png", move |p| {
                            let img = canvas::render_picture(&sheet, &t, &model, mode, None);
                            files::save_png(&img, &p)
                                .map(|()| Outcome::Done(format!("Wrote {}", file_name(&p))))
                        });
                    }
                }
                if ui
                    .add_enabled(has, egui::Button::new("Export decoding animation (APNG)…"))
                    .on_hover_text("one frame per step, at the timeline's playback speed")
                    .clicked()
                {
                    let ctx = ui.ctx().clone();
                    if let Some(t) = self.store.main.trace.clone() {
                        let sheet = canvas::GlyphSheet::for_trace(&ctx, &t, 14.0);
                        let mode = self.settings.color_mode;
                        let rate = self.store.speed;
                        self.pick_then(
                            "Exporting the animation",
                            "decoding.png",
                            "png",
                            move |p| {
                                files::save_apng(&sheet, &t, mode, rate, &p)
                                    .map(|()| Outcome::Done(format!("Wrote {}", file_name(&p))))
                            },
                        );
                    }
                }
                if ui
                    .add_enabled(has, egui::Button::new("Export commit map PNG…"))
                    .clicked()
                {
                    if let Some(t) = self.store.main.trace.clone() {
                        let (run, mode) = (self.store.main.run, self.settings.color_mode);
                        self.pick_then(
                            "Exporting the commit map",
                            "commit-map.png",
                            "png",
                            move |p| {
                                let r = Raster::build(&t, run);
                                let px = (1024 / r.cols.max(1)).clamp(1, 16) as u32;
                                files::save_png(&r.to_image(px, mode), &p)
                                    .map(|()| Outcome::Done(format!("Wrote {}", file_name(&p))))
                            },
                        );
                    }
                }
            });
            ui.separator();
            ui.selectable_value(&mut self.settings.view, View::Canvas, "Canvas");
            ui.selectable_value(&mut self.settings.view, View::Race, "Race");
            ui.selectable_value(&mut self.settings.view, View::Fork, "Fork");
            ui.separator();
            ui.label("colour:");
            egui::ComboBox::from_id_salt("color-mode")
                .selected_text(self.settings.color_mode.name())
                .show_ui(ui, |ui| {
                    for m in ColorMode::ALL {
                        ui.selectable_value(&mut self.settings.color_mode, m, m.name());
                    }
                });
            ui.separator();
            ui.label(run_status(&self.store.main.status));
            if let Some(n) = &self.notice {
                ui.weak(n);
            }
            for j in &self.jobs {
                ui.spinner();
                ui.label(format!(
                    "{}… {:.1} s",
                    j.what,
                    j.since.elapsed().as_secs_f32()
                ));
            }
        });
        let mut dismiss = None;
        for (i, e) in self.errors.iter().enumerate() {
            egui::Frame::new()
                .fill(egui::Color32::from_rgb(90, 25, 25))
                .inner_margin(6.0)
                .corner_radius(4.0)
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        ui.label(
                            egui::RichText::new(e).color(egui::Color32::from_rgb(255, 200, 200)),
                        );
                        if ui.button("Dismiss").clicked() {
                            dismiss = Some(i);
                        }
                    });
                });
        }
        if let Some(i) = dismiss {
            self.errors.remove(i);
        }
    }

    fn central(&mut self, ui: &mut egui::Ui) {
        if let ModelSlot::Loading { what, since, .. } = &self.model {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(format!(
                    "Loading model {what}… {:.1} s",
                    since.elapsed().as_secs_f32()
                ));
            });
        }
        if self.settings.view == View::Race {
            race::show(ui, &mut self.store, self.settings.color_mode);
            return;
        }
        if self.settings.view == View::Fork {
            compare::show(ui, &mut self.store, self.settings.color_mode);
            return;
        }
        let Some(trace) = self.store.main.trace.clone() else {
            ui.centered_and_justified(|ui| {
                ui.weak(match &self.store.main.status {
                    RunStatus::Queued => "Starting…",
                    RunStatus::Failed(_) => "The run failed (see above).",
                    _ => "Write a prompt and press Generate (Ctrl+Enter), or open a trace (File > Open trace).",
                });
            });
            return;
        };
        let mode = self.settings.color_mode;
        let run = self.store.main.run;
        // The raster moves forward with the trace: a new step writes one row.
        if self
            .raster
            .as_ref()
            .is_none_or(|r| r.run != run || r.steps > trace.len())
        {
            self.map_uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            self.raster = Some(Raster::new(&trace, run));
        }
        if let Some(r) = self.raster.as_mut() {
            r.update(&trace);
        }
        let mut new_hover = None;
        let (marks, marked) = {
            let d = super::compare::diff(&mut self.store);
            (d.list.clone(), d.set.clone())
        };
        let (map_frame, _) = self.panel_frames(ui.style());
        egui::Panel::bottom("commit-map").frame(map_frame).resizable(true).default_size(190.0).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong("Commit map");
                ui.weak("rows: steps · columns: positions · scroll to zoom, drag to pan, click a row to jump");
                if !marks.is_empty() {
                    ui.colored_label(commit_map::DIFF_TOKEN, format!("{} differ from the fork", marks.len()));
                    ui.weak("(red: token · orange: commit step)");
                }
            });
            if let (Some(r), Some(p)) = (&self.raster, self.map_painter.as_mut()) {
                let resp = commit_map::show(ui, p.as_mut(), r, mode, &mut self.map_uv, self.store.cursor, self.hover_pos, &marks);
                if let Some((_, pos)) = resp.hovered {
                    new_hover = Some(pos);
                }
                if let Some(s) = resp.clicked {
                    self.store.playing = false;
                    self.store.set_cursor(s + 1);
                }
            }
        });
        let cursor = self.store.cursor;
        let mut clicked = None;
        let model = self.store.canvas.get(run, &trace, cursor);
        let masked = model
            .cells
            .get(trace.header.gen_start..trace.header.gen_end)
            .map_or(0, |c| c.iter().filter(|c| c.masked).count());
        ui.horizontal(|ui| {
            ui.strong("Canvas");
            ui.label(format!(
                "step {cursor} of {} · {masked} masked",
                trace.len()
            ));
        });
        egui::ScrollArea::both()
            .id_salt("canvas")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                let v = CanvasView {
                    trace: &trace,
                    model,
                    cursor,
                    mode,
                    hover: self.hover_pos,
                    font_size: 14.0,
                    marked: (!marked.is_empty()).then_some(&*marked),
                    selected: self
                        .intervene
                        .selected
                        .filter(|_| self.intervene.at_step == cursor),
                };
                let r = canvas::show(ui, &v);
                if let Some(p) = r.hovered {
                    new_hover = Some(p);
                }
                clicked = r.clicked;
            });
        if let Some(p) = clicked {
            self.select_tile(p);
        }
        self.hover_pos = new_hover;
    }

    fn side(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::vertical().id_salt("side").show(ui, |ui| {
            egui::CollapsingHeader::new("Intervene")
                .default_open(true)
                .show(ui, |ui| self.intervene_ui(ui));
            egui::CollapsingHeader::new("Metrics")
                .default_open(true)
                .show(ui, |ui| metrics::show(ui, &self.store));
            egui::CollapsingHeader::new("Explain")
                .default_open(true)
                .show(ui, |ui| {
                    explain::show(ui, self.store.main.trace.as_deref(), self.store.cursor);
                });
            egui::CollapsingHeader::new("Output")
                .default_open(true)
                .show(ui, |ui| {
                    let lang = self.settings.lang.clone();
                    output::show(ui, &mut self.store, &lang);
                });
        });
    }

    /// Frames for the side and central panels. In a real window they draw no fill: the clear
    /// colour is the panel colour ([`eframe::App::clear_color`]), and a clear costs a software
    /// rasterizer a memset where a window-sized fill costs it every pixel's shader (measured:
    /// about 60 % of a frame's rasterizer time on lavapipe).
    fn panel_frames(&self, style: &egui::Style) -> (egui::Frame, egui::Frame) {
        let side = egui::Frame::side_top_panel(style);
        let central = egui::Frame::central_panel(style);
        if self.background_by_clear {
            let none = egui::Color32::TRANSPARENT;
            (side.fill(none), central.fill(none))
        } else {
            (side, central)
        }
    }

    /// Draws the whole window.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        let (side, central) = self.panel_frames(ui.style());
        egui::Panel::top("menu")
            .frame(side)
            .show(ui, |ui| self.menu(ui));
        let problems = self.problems();
        let status = self.model_status();
        let running = self.running();
        let ready = self.model_ready();
        let devices = self.devices.clone();
        let mut actions = Vec::new();
        egui::Panel::left("controls")
            .frame(side)
            .default_size(330.0)
            .show(ui, |ui| {
                let st = ControlsState {
                    problems: &problems,
                    devices: &devices,
                    running,
                    model_ready: ready,
                    model_status: &status,
                };
                actions = controls::show(ui, &mut self.settings, &st);
            });
        egui::Panel::bottom("timeline").frame(side).show(ui, |ui| {
            ui.add_space(4.0);
            timeline::show(ui, &mut self.store);
            ui.add_space(2.0);
        });
        egui::Panel::right("side")
            .frame(side)
            .default_size(380.0)
            .show(ui, |ui| self.side(ui));
        egui::CentralPanel::default()
            .frame(central)
            .show(ui, |ui| self.central(ui));
        let ctx = ui.ctx().clone();
        for a in actions {
            match a {
                Action::Generate => {
                    if problems.is_empty() {
                        self.generate();
                    }
                }
                Action::Cancel => self.cancel(),
                Action::Race => {
                    if problems.is_empty() {
                        self.race();
                    }
                }
                Action::LoadModel(f) => self.load_model(f, &ctx),
                Action::PickModelFolder => {
                    self.spawn_job("Choosing a model folder", || {
                        Ok(files::pick_model_folder()
                            .map_or(Outcome::Cancelled, Outcome::ModelFolder))
                    });
                }
            }
        }
    }
}

impl PlaygroundApp {
    /// The figures of this session so far (frames, frame times, UI-thread CPU, the live run).
    pub fn report(&self) -> report::Report {
        let run = self.store.trace().map(|t| {
            let m = self.store.metrics().unwrap_or_default();
            RunReport {
                tokens: m.tokens,
                steps: m.steps,
                forwards: m.forwards,
                total_ms: m.total_ms,
                tokens_per_second: m.tokens_per_second(),
                gen_length: t.header.params.gen_length,
                block_size: t.header.params.block_size,
                steps_per_block: t.header.params.steps,
            }
        });
        let mut r = self.stats.report(run);
        r.status = run_status(&self.store.main.status);
        r.render_threads_lowered = self.render_threads_lowered;
        let lane = |l: &super::store::LaneRun| {
            l.trace
                .as_ref()
                .and_then(|t| t.finish.as_ref())
                .map(|f| f.metrics.tokens_per_second())
        };
        if let (Some(a), Some(d)) = (lane(&self.store.race_ar), lane(&self.store.race_diffusion)) {
            r.race = Some(report::RaceReport {
                ar_tokens_per_second: a,
                diffusion_tokens_per_second: d,
                speedup: race::speedup(&self.store).unwrap_or(0.0),
            });
        }
        r
    }

    /// Writes `--report` once, when the window closes or the launch run ends.
    fn finish_report(&mut self) {
        if self.reported {
            return;
        }
        self.reported = true;
        if let Some(path) = self.launch.report.clone() {
            if let Err(e) = report::write(&self.report(), &path) {
                eprintln!("error: {e}");
            }
        }
    }
}

/// Applies the command line's choices over the stored settings; flags left out keep them.
pub fn apply_args(settings: &mut Settings, args: &GuiArgs) {
    if args.model != "embedded" {
        // `gui::run` has resolved presets and hub ids to a folder before the window opened.
        let folder = std::path::PathBuf::from(&args.model);
        settings.remember(folder.clone());
        settings.model = Some(folder);
    }
    if let Some(p) = &args.prompt {
        settings.prompt = p.clone();
        settings.mode = super::settings::Mode::Complete;
    }
    if let Some(s) = &args.suffix {
        settings.suffix = s.clone();
        settings.mode = super::settings::Mode::Infill;
    }
    if args.chat {
        settings.chat = true;
    }
    if let Some(d) = &args.device {
        settings.device = d.clone();
    }
    args.sampler.apply_to(&mut settings.params);
}

/// The last component of a path, for short notices.
fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn run_status(s: &RunStatus) -> String {
    match s {
        RunStatus::Idle => "idle".into(),
        RunStatus::Queued => "queued".into(),
        RunStatus::Running => "running…".into(),
        RunStatus::Finished(r) => format!(
            "finished: {}",
            match r {
                crate::trace::FinishReason::Complete => "complete".to_string(),
                crate::trace::FinishReason::Eos { block, .. } =>
                    format!("end of text in block {}", block + 1),
                crate::trace::FinishReason::Cancelled => "cancelled".to_string(),
            }
        ),
        RunStatus::Failed(e) => format!("failed: {e}"),
    }
}

impl eframe::App for PlaygroundApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let t0 = Instant::now();
        let cpu0 = report::thread_cpu();
        let render_cpu = if self.cpu_rendered {
            render_priority::rasterizer_cpu()
        } else {
            Duration::ZERO
        };
        self.pacer.frame_started(cpu0 + render_cpu);
        let ctx = ui.ctx().clone();
        self.start(&ctx, frame);
        self.update_state(&ctx);
        let t1 = Instant::now();
        self.draw(ui);
        self.stats.record(t0.elapsed());
        tracing::trace!(
            state_ms = (t1 - t0).as_secs_f64() * 1e3,
            draw_ms = t1.elapsed().as_secs_f64() * 1e3,
            // Against the wall time: how much of a long frame was work, not preemption.
            cpu_ms = (report::thread_cpu() - cpu0).as_secs_f64() * 1e3,
            cursor = self.store.cursor,
            // What drawing costs (UI thread + rasterizer), which paces a CPU decoder's frames.
            draw_cost_ms = self.pacer.frame_cost().as_secs_f64() * 1e3,
            interval_ms = self.repaint_ms.load(Ordering::Relaxed),
            // Who asked for this frame (a widget that animates keeps asking).
            causes = format!("{:?}", ctx.repaint_causes()),
            "frame"
        );
        if self.launch.quit_when_done && self.launched && !self.running() && !self.reported {
            // A script reading only the exit is told what went wrong.
            if let RunStatus::Failed(e) = &self.store.main.status {
                eprintln!("error: the run failed: {e}");
                LAUNCH_FAILED.store(true, Ordering::SeqCst);
            }
            for e in &self.errors {
                eprintln!("error: {e}");
            }
            self.finish_report();
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    /// The panels' colour: in a real window the panels draw no fill of their own
    /// ([`PlaygroundApp::panel_frames`]).
    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        visuals.panel_fill.to_normalized_gamma_f32()
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }

    fn on_exit(&mut self) {
        self.finish_report();
    }
}
