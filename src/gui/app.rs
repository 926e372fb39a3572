//! The playground app: owns the engine, the store and the settings, and lays out the panels.
//! Each frame: poll the model load, drain engine events into the store, apply keys and
//! playback, then draw what the store holds at the cursor.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poll_promise::Promise;

use super::canvas::{self, CanvasView};
use super::colors::ColorMode;
use super::commit_map::{self, CpuMapPainter, GpuMapPainter, MapPainter, Raster};
use super::controls::{self, Action, ControlsState};
use super::settings::{Settings, View};
use super::store::{RunStatus, Store};
use super::{explain, files, highlight, metrics, output, race, timeline};
use crate::engine::{Command, Engine, Lane};
use crate::model::{self, device, DiffusionModel};
use crate::sampler::{ParamProblem, SamplerParams};
use crate::trace::Cell;

/// How long a frame may spend applying engine events before it draws.
const DRAIN_BUDGET: Duration = Duration::from_millis(4);

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
        }
    }

    /// The app as the binary starts it: settings from eframe storage, `model` from the command
    /// line (`embedded` keeps the stored choice), optionally a trace to open.
    pub fn new(cc: &eframe::CreationContext<'_>, model: &str, trace: Option<PathBuf>) -> Self {
        let mut settings: Settings = cc
            .storage
            .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
            .unwrap_or_default();
        if model != "embedded" {
            let folder = model::resolve_model_arg(model);
            settings.remember(folder.clone());
            settings.model = Some(folder);
        }
        let mut app = Self::with_settings(settings);
        app.trace_to_open = trace;
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

    pub fn model_ready(&self) -> bool {
        matches!(self.model, ModelSlot::Ready(_))
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
    }

    /// What Files → Open trace… does once a path is chosen.
    pub fn open_trace(&mut self, path: &Path) {
        match files::open_trace(path) {
            Ok(t) => {
                if let Some(e) = &self.engine {
                    if self.store.main.status.is_active() {
                        e.cancel();
                    }
                }
                self.store.load(t);
                self.settings.view = View::Canvas;
                self.notice = Some(format!("Opened {}", file_name(path)));
            }
            Err(e) => self.errors.push(e),
        }
    }

    /// What Files → Save trace… does once a path is chosen.
    pub fn save_trace(&mut self, path: &Path) {
        let Some(t) = self.store.trace() else {
            self.errors
                .push("Nothing to save: generate or open a trace first.".into());
            return;
        };
        match files::save_trace(t, path) {
            Ok(()) => self.notice = Some(format!("Saved {}", file_name(path))),
            Err(e) => self.errors.push(e),
        }
    }

    pub fn export_canvas_png(&mut self, path: &Path) {
        let mode = self.settings.color_mode;
        let cells = self.store.cells().to_vec();
        let Some(t) = self.store.trace() else { return };
        let img = canvas::render_png(t, &cells, mode, 8);
        if let Err(e) = files::save_png(&img, path) {
            self.errors.push(e);
        }
    }

    pub fn export_commit_map_png(&mut self, path: &Path) {
        let Some(t) = self.store.trace() else { return };
        let r = Raster::build(t, self.store.main.run, self.settings.color_mode);
        let px = (1024 / r.width.max(1)).clamp(1, 16) as u32;
        if let Err(e) = files::save_png(&r.to_image(px), path) {
            self.errors.push(e);
        }
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
        let Some(engine) = &self.engine else { return };
        let run = self.store.begin(lane);
        engine.send(Command::Generate {
            run,
            lane,
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
        if self.engine.is_none() {
            let c = ctx.clone();
            self.engine = Some(Engine::spawn(move || c.request_repaint()));
        }
        if matches!(self.model, ModelSlot::Unloaded) {
            self.load_model(self.settings.model.clone(), ctx);
        }
        if self.map_painter.is_none() {
            self.map_painter = Some(match frame.wgpu_render_state() {
                Some(rs) => Box::new(GpuMapPainter::new(rs)),
                None => Box::new(CpuMapPainter::default()),
            });
        }
        if let Some(p) = self.trace_to_open.take() {
            self.open_trace(&p);
        }
    }

    /// Everything that happens before drawing.
    pub fn update_state(&mut self, ctx: &egui::Context) {
        self.poll_model();
        if let Some(engine) = &self.engine {
            let drained = self.store.drain(|| engine.try_recv(), DRAIN_BUDGET);
            if drained > 0 {
                ctx.request_repaint();
            }
        }
        if ctx.input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::Enter)) {
            self.generate();
        }
        timeline::keys(ctx, &mut self.store);
        let dt = ctx.input(|i| i.stable_dt).min(0.1);
        if self.store.tick(dt) {
            ctx.request_repaint();
        }
        if matches!(self.model, ModelSlot::Loading { .. }) {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
    }

    fn menu(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open trace…").clicked() {
                    if let Some(p) = files::pick_open_trace() {
                        self.open_trace(&p);
                    }
                }
                let has = self.store.trace().is_some();
                if ui
                    .add_enabled(has, egui::Button::new("Save trace…"))
                    .clicked()
                {
                    if let Some(p) = files::pick_save("trace.jsonl", "jsonl") {
                        self.save_trace(&p);
                    }
                }
                ui.separator();
                if ui
                    .add_enabled(has, egui::Button::new("Export canvas PNG…"))
                    .clicked()
                {
                    if let Some(p) = files::pick_save("canvas.png", "png") {
                        self.export_canvas_png(&p);
                    }
                }
                if ui
                    .add_enabled(has, egui::Button::new("Export commit map PNG…"))
                    .clicked()
                {
                    if let Some(p) = files::pick_save("commit-map.png", "png") {
                        self.export_commit_map_png(&p);
                    }
                }
            });
            ui.separator();
            ui.selectable_value(&mut self.settings.view, View::Canvas, "Canvas");
            ui.selectable_value(&mut self.settings.view, View::Race, "Race");
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
        let stale = self
            .raster
            .as_ref()
            .is_none_or(|r| r.key.run != run || r.key.steps != trace.len() || r.key.mode != mode);
        if stale {
            if self.raster.as_ref().is_some_and(|r| r.key.run != run) {
                self.map_uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            }
            self.raster = Some(Raster::build(&trace, run, mode));
        }
        let mut new_hover = None;
        egui::Panel::bottom("commit-map").resizable(true).default_size(190.0).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong("Commit map");
                ui.weak("rows: steps · columns: positions · scroll to zoom, drag to pan, click a row to jump");
            });
            if let (Some(r), Some(p)) = (&self.raster, self.map_painter.as_mut()) {
                let resp = commit_map::show(ui, p.as_mut(), r, trace.header.gen_start, &mut self.map_uv, self.store.cursor, self.hover_pos);
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
        let cells = self.store.cells().to_vec();
        let masked = cells
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
                    cells: &cells,
                    cursor,
                    mode,
                    hover: self.hover_pos,
                    font_size: 14.0,
                };
                if let Some(p) = canvas::show(ui, &v) {
                    new_hover = Some(p);
                }
            });
        self.hover_pos = new_hover;
    }

    fn side(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::vertical().id_salt("side").show(ui, |ui| {
            egui::CollapsingHeader::new("Metrics")
                .default_open(true)
                .show(ui, |ui| metrics::show(ui, &self.store));
            egui::CollapsingHeader::new("Explain")
                .default_open(true)
                .show(ui, |ui| {
                    explain::show(ui, self.store.main.trace.as_ref(), self.store.cursor);
                });
            egui::CollapsingHeader::new("Output")
                .default_open(true)
                .show(ui, |ui| {
                    let lang = self.settings.lang.clone();
                    output::show(ui, &mut self.store, &lang);
                });
        });
    }

    /// Draws the whole window.
    pub fn draw(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("menu").show(ui, |ui| self.menu(ui));
        let problems = self.problems();
        let status = self.model_status();
        let running = self.running();
        let ready = self.model_ready();
        let devices = self.devices.clone();
        let mut actions = Vec::new();
        egui::Panel::left("controls")
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
        egui::Panel::bottom("timeline").show(ui, |ui| {
            ui.add_space(4.0);
            timeline::show(ui, &mut self.store);
            ui.add_space(2.0);
        });
        egui::Panel::right("side")
            .default_size(380.0)
            .show(ui, |ui| self.side(ui));
        egui::CentralPanel::default().show(ui, |ui| self.central(ui));
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
                    if let Some(f) = files::pick_model_folder() {
                        self.load_model(Some(f), &ctx);
                    }
                }
            }
        }
    }
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
        let ctx = ui.ctx().clone();
        self.start(&ctx, frame);
        self.update_state(&ctx);
        self.draw(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }
}
