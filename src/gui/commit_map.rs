//! The commit map: a steps × positions raster of the whole run. Row `r` is the generated region
//! after the last step of its bin (one step per row unless the run has more steps than a texture
//! may have rows); a texel holds what the colour needs (masked / given / commit step, probability,
//! score, revisions), and the colour is computed when drawing: in `shaders/commit_map.wgsl` on the
//! wgpu path, in `texel_color` on the CPU fallback. So a new step writes one row, a colour-mode
//! change rewrites nothing, and any trace fits in `MAX_SIDE` × `MAX_SIDE` texels.

use std::ops::Range;

use egui::{Color32, Rect, Sense, Stroke, Vec2};

use super::colors::{self, ColorMode, Scale};
use crate::trace::{StepEvent, Trace};

/// Largest texture side: wider regions keep every `k`-th position, longer runs every `k`-th
/// step, so a 100k × 100k trace takes 2048 × 2048 × 8 bytes (32 MiB), not 40 GB.
pub const MAX_SIDE: usize = 2048;

/// One texel: `[state | revisions << 24, prob_u16 << 16 | score_f16]` where state is 0 for
/// masked, 1 for given, `2 + step` for committed at `step` (saturating).
pub type Texel = [u32; 2];

const STATE_BITS: u32 = 0x00ff_ffff;

fn texel(
    committed_at: Option<usize>,
    masked: bool,
    prob: f32,
    score: f32,
    revisions: usize,
) -> Texel {
    let state = if masked {
        0
    } else {
        committed_at.map_or(1, |s| (s as u64 + 2).min(u64::from(STATE_BITS)) as u32)
    };
    let rev = (revisions.min(255) as u32) << 24;
    let p = if prob.is_finite() {
        prob.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let p16 = (p * 65535.0).round() as u32;
    let s16 = u32::from(half::f16::from_f32(if score.is_finite() { score } else { 0.0 }).to_bits());
    [state | rev, (p16 << 16) | s16]
}

/// The colour of a texel in `mode`; the same mapping as `colors::cell_color` and the shader.
pub fn texel_color(t: Texel, mode: ColorMode, scale: &Scale) -> Color32 {
    let state = t[0] & STATE_BITS;
    if state == 0 {
        return colors::MASKED;
    }
    if state == 1 {
        return colors::GIVEN;
    }
    let cell = crate::trace::Cell {
        token: 0,
        text: String::new(),
        masked: false,
        committed_at: Some((state - 2) as usize),
        prob: (t[1] >> 16) as f32 / 65535.0,
        score: half::f16::from_bits((t[1] & 0xffff) as u16).to_f32(),
        revisions: (t[0] >> 24) as usize,
        previous: None,
        top: Vec::new(),
    };
    colors::cell_color(&cell, mode, scale)
}

/// The raster of one run, moved forward as steps arrive.
#[derive(Clone, Debug)]
pub struct Raster {
    pub run: u64,
    gen_start: usize,
    /// Positions per column and steps per row (level of detail; 1 = full resolution).
    pub pos_per_col: usize,
    pub steps_per_row: usize,
    pub cols: usize,
    pub rows: usize,
    /// Steps applied so far.
    pub steps: usize,
    /// The current texel of each column's position.
    state: Vec<Texel>,
    /// `rows × cols` texels, row-major.
    pub data: Vec<Texel>,
    pub score_min: f32,
    pub score_max: f32,
    /// Bumped when rows are rewritten wholesale (a coarser level of detail), so painters know
    /// to upload everything rather than the new rows.
    pub generation: u64,
    /// Rows written since the raster was made: the work counter the tests check.
    pub rows_written: usize,
}

impl Raster {
    /// An empty raster for `trace`'s canvas; `update` fills it.
    pub fn new(trace: &Trace, run: u64) -> Raster {
        let h = &trace.header;
        let width = h.gen_end.saturating_sub(h.gen_start);
        let pos_per_col = width.div_ceil(MAX_SIDE).max(1);
        let cols = width.div_ceil(pos_per_col);
        let state = (0..cols)
            .map(|x| {
                let pos = h.gen_start + x * pos_per_col;
                let masked = h.initial.get(pos).is_none_or(|&t| t == h.mask_id);
                texel(None, masked, 1.0, 0.0, 0)
            })
            .collect();
        Raster {
            run,
            gen_start: h.gen_start,
            pos_per_col,
            steps_per_row: 1,
            cols,
            rows: 0,
            steps: 0,
            state,
            data: Vec::new(),
            score_min: f32::INFINITY,
            score_max: f32::NEG_INFINITY,
            generation: 0,
            rows_written: 0,
        }
    }

    /// Builds the raster of a whole trace.
    pub fn build(trace: &Trace, run: u64) -> Raster {
        let mut r = Raster::new(trace, run);
        r.update(trace);
        r
    }

    /// Applies the steps that arrived since the last call. Each row touched is written once per
    /// call, so a live step costs one row and a whole trace costs its rows.
    pub fn update(&mut self, trace: &Trace) {
        let new = trace.events.get(self.steps..).unwrap_or(&[]);
        let mut pending: Option<usize> = None;
        for e in new {
            let mut row = self.steps / self.steps_per_row;
            if let Some(p) = pending.filter(|&p| p != row) {
                // The previous row's bin is complete: write it before this step changes state.
                self.write_row(p);
            }
            if row >= MAX_SIDE {
                // Out of rows: halve the level of detail in time, keeping each pair's later row.
                self.coarsen();
                row = self.steps / self.steps_per_row;
            }
            self.apply(e);
            self.steps += 1;
            pending = Some(row);
        }
        if let Some(p) = pending {
            self.write_row(p);
        }
    }

    fn apply(&mut self, e: &StepEvent) {
        let on_grid = |pos: usize, r: &Raster| {
            pos.checked_sub(r.gen_start)
                .filter(|d| d % r.pos_per_col == 0)
                .map(|d| d / r.pos_per_col)
                .filter(|&x| x < r.cols)
        };
        for r in &e.reopened {
            if let Some(x) = on_grid(r.pos, self) {
                self.state[x][0] &= !STATE_BITS;
            }
        }
        for m in &e.commits {
            if m.score.is_finite() {
                self.score_min = self.score_min.min(m.score);
                self.score_max = self.score_max.max(m.score);
            }
            if let Some(x) = on_grid(m.pos, self) {
                let revisions =
                    (self.state[x][0] >> 24) as usize + usize::from(m.previous.is_some());
                self.state[x] = texel(Some(e.index), false, m.prob, m.score, revisions);
            }
        }
    }

    fn write_row(&mut self, row: usize) {
        let start = row * self.cols;
        if self.data.len() < start + self.cols {
            self.data.resize(start + self.cols, [0, 0]);
        }
        self.data[start..start + self.cols].copy_from_slice(&self.state);
        self.rows = self.rows.max(row + 1);
        self.rows_written += 1;
    }

    fn coarsen(&mut self) {
        let old_rows = self.rows.max(1);
        let keep = old_rows.div_ceil(2);
        for r in 0..keep {
            let src = (2 * r + 1).min(old_rows - 1) * self.cols;
            self.data.copy_within(src..src + self.cols, r * self.cols);
        }
        self.rows = keep;
        self.data.truncate(keep * self.cols);
        self.steps_per_row *= 2;
        self.generation += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.cols == 0 || self.rows == 0
    }

    /// The colour scale of the whole run so far.
    pub fn scale(&self) -> Scale {
        Scale {
            steps: self.steps.max(1),
            score_min: self.score_min,
            score_max: self.score_max,
        }
    }

    /// Row drawn for step `s` (0-based).
    pub fn row_of_step(&self, s: usize) -> usize {
        s / self.steps_per_row
    }

    /// The last step a row shows.
    pub fn step_of_row(&self, r: usize) -> usize {
        ((r + 1) * self.steps_per_row).min(self.steps.max(1)) - 1
    }

    /// Canvas position a column shows.
    pub fn pos_of_col(&self, x: usize) -> usize {
        self.gen_start + x * self.pos_per_col
    }

    /// Colours of rows `rows` as RGBA8.
    pub fn rgba(&self, rows: Range<usize>, mode: ColorMode) -> Vec<u8> {
        let scale = self.scale();
        let texels = self
            .data
            .get(rows.start * self.cols..rows.end * self.cols)
            .unwrap_or(&[]);
        let mut out = Vec::with_capacity(texels.len() * 4);
        for &t in texels {
            let c = texel_color(t, mode, &scale);
            out.extend_from_slice(&[c.r(), c.g(), c.b(), 255]);
        }
        out
    }

    /// The raster at its full stored resolution, each texel `px` × `px`, for the PNG export.
    pub fn to_image(&self, px: u32, mode: ColorMode) -> image::RgbaImage {
        let px = px.max(1);
        let (w, h) = (self.cols.max(1) as u32, self.rows.max(1) as u32);
        let rgba = self.rgba(0..self.rows, mode);
        image::RgbaImage::from_fn(w * px, h * px, |x, y| {
            let i = ((y / px) as usize * self.cols + (x / px) as usize) * 4;
            match rgba.get(i..i + 4) {
                Some(p) => image::Rgba([p[0], p[1], p[2], p[3]]),
                None => image::Rgba([0, 0, 0, 255]),
            }
        })
    }
}

/// What a painter has uploaded of a raster: it sends only the rows the steps since then wrote
/// (the row of the first new step onwards), unless the run or the level of detail changed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Synced {
    pub run: u64,
    pub generation: u64,
    pub steps: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Synced {
    /// Rows to upload; `None`: everything.
    pub fn rows_to_send(&self, r: &Raster) -> Option<Range<usize>> {
        if self.run != r.run
            || self.generation != r.generation
            || self.cols != r.cols
            || self.steps > r.steps
            || self.rows == 0
        {
            return None;
        }
        Some(r.row_of_step(self.steps).min(r.rows)..r.rows)
    }

    pub fn of(r: &Raster) -> Synced {
        Synced {
            run: r.run,
            generation: r.generation,
            steps: r.steps,
            rows: r.rows,
            cols: r.cols,
        }
    }
}

/// Paints a raster's uv window into a rectangle. Two implementations paint the same picture.
pub trait MapPainter {
    fn paint(&mut self, ui: &mut egui::Ui, rect: Rect, raster: &Raster, uv: Rect, mode: ColorMode);
    /// Shown in the view's corner, so a screenshot says which path drew it.
    fn name(&self) -> &'static str;
    /// Rows uploaded since the painter was made (the work counter the tests check).
    fn rows_uploaded(&self) -> usize;
}

/// CPU fallback: the raster as a nearest-filtered egui texture, coloured on the CPU. New rows go
/// up as partial texture updates; a new colour scale recolours everything.
#[derive(Default)]
pub struct CpuMapPainter {
    texture: Option<egui::TextureHandle>,
    /// Texture rows allocated (grows by doubling).
    capacity: usize,
    synced: Synced,
    colored: Option<(ColorMode, u64, u64, u64)>,
    uploaded: usize,
}

impl MapPainter for CpuMapPainter {
    fn paint(&mut self, ui: &mut egui::Ui, rect: Rect, raster: &Raster, uv: Rect, mode: ColorMode) {
        if raster.is_empty() {
            return;
        }
        let sc = raster.scale();
        // Only what the mode's colours depend on: commit-step colours move with the run's
        // length, score colours with its score range, the others with nothing.
        let color_key = match mode {
            ColorMode::CommitStep => (mode, sc.steps as u64, 0, 0),
            ColorMode::Score => (
                mode,
                0,
                u64::from(sc.score_min.to_bits()),
                u64::from(sc.score_max.to_bits()),
            ),
            _ => (mode, 0, 0, 0),
        };
        let mut send = self.synced.rows_to_send(raster);
        if self.colored != Some(color_key) || raster.rows > self.capacity || self.texture.is_none()
        {
            send = None;
        }
        let opts = egui::TextureOptions::NEAREST;
        match send {
            Some(rows) if rows.is_empty() => {}
            Some(rows) => {
                let img = egui::ColorImage::from_rgba_unmultiplied(
                    [raster.cols, rows.len()],
                    &raster.rgba(rows.clone(), mode),
                );
                if let Some(t) = self.texture.as_mut() {
                    t.set_partial([0, rows.start], img, opts);
                }
                self.uploaded += rows.len();
            }
            None => {
                let capacity = raster
                    .rows
                    .next_power_of_two()
                    .clamp(64, MAX_SIDE)
                    .max(raster.rows);
                let mut rgba = raster.rgba(0..raster.rows, mode);
                rgba.resize(raster.cols * capacity * 4, 0);
                let img = egui::ColorImage::from_rgba_unmultiplied([raster.cols, capacity], &rgba);
                match self.texture.as_mut() {
                    Some(t) if t.size() == [raster.cols, capacity] => t.set(img, opts),
                    _ => self.texture = Some(ui.ctx().load_texture("commit-map", img, opts)),
                }
                self.capacity = capacity;
                self.uploaded += raster.rows;
            }
        }
        self.synced = Synced::of(raster);
        self.colored = Some(color_key);
        if let Some(tex) = &self.texture {
            // Only the filled rows of the texture are shown.
            let fill = raster.rows as f32 / self.capacity.max(1) as f32;
            let uv = Rect::from_min_max(
                egui::pos2(uv.min.x, uv.min.y * fill),
                egui::pos2(uv.max.x, uv.max.y * fill),
            );
            ui.painter().image(tex.id(), rect, uv, Color32::WHITE);
        }
    }

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn rows_uploaded(&self) -> usize {
        self.uploaded
    }
}

/// GPU path: `shaders/commit_map.wgsl` through an egui-wgpu paint callback. The texture holds
/// the texel data; new rows are written into it in place from the UI thread's queue.
pub struct GpuMapPainter {
    rs: egui_wgpu::RenderState,
    synced: Synced,
    uploaded: usize,
}

impl GpuMapPainter {
    /// Creates the pipeline once and stores it in the renderer's callback resources.
    pub fn new(rs: &egui_wgpu::RenderState) -> Self {
        let resources = gpu::Resources::new(&rs.device, rs.target_format);
        rs.renderer.write().callback_resources.insert(resources);
        GpuMapPainter {
            rs: rs.clone(),
            synced: Synced::default(),
            uploaded: 0,
        }
    }
}

impl MapPainter for GpuMapPainter {
    fn paint(&mut self, ui: &mut egui::Ui, rect: Rect, raster: &Raster, uv: Rect, mode: ColorMode) {
        if raster.is_empty() {
            return;
        }
        {
            let mut renderer = self.rs.renderer.write();
            let Some(res) = renderer.callback_resources.get_mut::<gpu::Resources>() else {
                return;
            };
            let send = self.synced.rows_to_send(raster);
            self.uploaded += res.sync(&self.rs.device, &self.rs.queue, raster, send);
            let sc = raster.scale();
            res.set_view(&self.rs.queue, raster, uv, mode, &sc);
        }
        self.synced = Synced::of(raster);
        ui.painter().add(egui_wgpu::Callback::new_paint_callback(
            rect,
            gpu::MapCallback,
        ));
    }

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn rows_uploaded(&self) -> usize {
        self.uploaded
    }
}

mod gpu {
    use std::ops::Range;

    use egui_wgpu::wgpu;

    use super::{ColorMode, Raster, Scale, MAX_SIDE};

    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct ViewUniform {
        uv_min: [f32; 2],
        uv_max: [f32; 2],
        /// cols, rows, colour mode, 1 when the target is sRGB.
        size: [u32; 4],
        /// steps, score min, score max, unused.
        scale: [f32; 4],
    }

    struct Tex {
        texture: wgpu::Texture,
        bind: wgpu::BindGroup,
        cols: usize,
        capacity: usize,
    }

    pub struct Resources {
        pipeline: wgpu::RenderPipeline,
        layout: wgpu::BindGroupLayout,
        uniform: wgpu::Buffer,
        srgb_target: bool,
        tex: Option<Tex>,
    }

    impl Resources {
        pub fn new(device: &wgpu::Device, format: wgpu::TextureFormat) -> Self {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("commit_map"),
                source: wgpu::ShaderSource::Wgsl(
                    include_str!("../../shaders/commit_map.wgsl").into(),
                ),
            });
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("commit_map"),
                entries: &[
                    wgpu::BindGroupLayoutEntry {
                        binding: 0,
                        visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    },
                    wgpu::BindGroupLayoutEntry {
                        binding: 1,
                        visibility: wgpu::ShaderStages::FRAGMENT,
                        ty: wgpu::BindingType::Texture {
                            multisampled: false,
                            sample_type: wgpu::TextureSampleType::Uint,
                            view_dimension: wgpu::TextureViewDimension::D2,
                        },
                        count: None,
                    },
                ],
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("commit_map"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some("commit_map"),
                layout: Some(&pipeline_layout),
                vertex: wgpu::VertexState {
                    module: &module,
                    entry_point: Some("vs_main"),
                    buffers: &[],
                    compilation_options: wgpu::PipelineCompilationOptions::default(),
                },
                primitive: wgpu::PrimitiveState::default(),
                depth_stencil: None,
                multisample: wgpu::MultisampleState::default(),
                fragment: Some(wgpu::FragmentState {
                    module: &module,
                    entry_point: Some("fs_main"),
                    targets: &[Some(wgpu::ColorTargetState {
                        format,
                        blend: None,
                        write_mask: wgpu::ColorWrites::ALL,
                    })],
                    compilation_options: wgpu::PipelineCompilationOptions::default(),
                }),
                multiview_mask: None,
                cache: None,
            });
            let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("commit_map_view"),
                size: std::mem::size_of::<ViewUniform>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            Resources {
                pipeline,
                layout,
                uniform,
                srgb_target: format.is_srgb(),
                tex: None,
            }
        }

        /// A texture with room for `capacity` rows (grown by doubling, so appends rarely
        /// reallocate).
        fn allocate(&mut self, device: &wgpu::Device, cols: usize, capacity: usize) {
            let texture = device.create_texture(&wgpu::TextureDescriptor {
                label: Some("commit_map_texels"),
                size: wgpu::Extent3d {
                    width: cols as u32,
                    height: capacity as u32,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rg32Uint,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
            let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("commit_map"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: self.uniform.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::TextureView(&view),
                    },
                ],
            });
            self.tex = Some(Tex {
                texture,
                bind,
                cols,
                capacity,
            });
        }

        /// Writes `send` rows of the raster (all of them when `None` or when the texture must
        /// grow) into the texture; returns the rows written.
        pub fn sync(
            &mut self,
            device: &wgpu::Device,
            queue: &wgpu::Queue,
            r: &Raster,
            send: Option<Range<usize>>,
        ) -> usize {
            let fits = self
                .tex
                .as_ref()
                .is_some_and(|t| t.cols == r.cols && t.capacity >= r.rows);
            let rows = match send {
                Some(rows) if fits => rows,
                _ => {
                    if !fits {
                        let capacity = r.rows.next_power_of_two().clamp(64, MAX_SIDE).max(r.rows);
                        self.allocate(device, r.cols, capacity);
                    }
                    0..r.rows
                }
            };
            let Some(t) = &self.tex else { return 0 };
            if rows.is_empty() {
                return 0;
            }
            let texels = &r.data[rows.start * r.cols..rows.end * r.cols];
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &t.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: rows.start as u32,
                        z: 0,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                bytemuck::cast_slice(texels),
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(8 * r.cols as u32),
                    rows_per_image: Some(rows.len() as u32),
                },
                wgpu::Extent3d {
                    width: r.cols as u32,
                    height: rows.len() as u32,
                    depth_or_array_layers: 1,
                },
            );
            rows.len()
        }

        pub fn set_view(
            &self,
            queue: &wgpu::Queue,
            r: &Raster,
            uv: egui::Rect,
            mode: ColorMode,
            sc: &Scale,
        ) {
            let mode = match mode {
                ColorMode::CommitStep => 0,
                ColorMode::Probability => 1,
                ColorMode::Score => 2,
                ColorMode::Revisions => 3,
            };
            let u = ViewUniform {
                uv_min: [uv.min.x, uv.min.y],
                uv_max: [uv.max.x, uv.max.y],
                size: [
                    r.cols as u32,
                    r.rows as u32,
                    mode,
                    u32::from(self.srgb_target),
                ],
                scale: [sc.steps as f32, sc.score_min, sc.score_max, 0.0],
            };
            queue.write_buffer(&self.uniform, 0, bytemuck::bytes_of(&u));
        }
    }

    /// Draws the texture the painter keeps up to date.
    pub struct MapCallback;

    impl egui_wgpu::CallbackTrait for MapCallback {
        fn paint(
            &self,
            _info: egui::PaintCallbackInfo,
            pass: &mut wgpu::RenderPass<'static>,
            resources: &egui_wgpu::CallbackResources,
        ) {
            let Some(res) = resources.get::<Resources>() else {
                return;
            };
            let Some(t) = &res.tex else {
                return;
            };
            pass.set_pipeline(&res.pipeline);
            pass.set_bind_group(0, &t.bind, &[]);
            pass.draw(0..6, 0..1);
        }
    }
}

/// What the pointer did on the map this frame.
#[derive(Default)]
pub struct MapResponse {
    /// (step index, canvas position) under the pointer.
    pub hovered: Option<(usize, usize)>,
    /// Clicked step index: the cursor should move to just after it.
    pub clicked: Option<usize>,
}

/// Colour of a diff mark: the token differs / only the commit step differs.
pub const DIFF_TOKEN: Color32 = Color32::from_rgb(255, 60, 60);
pub const DIFF_STEP: Color32 = Color32::from_rgb(255, 170, 40);

/// Draws the map with zoom (scroll) and pan (drag); `uv` is the visible window, kept by the caller.
/// `marks` (positions in order) get a tick above their column: where a fork or a second trace
/// differs from this run.
#[allow(clippy::too_many_arguments)]
pub fn show(
    ui: &mut egui::Ui,
    painter: &mut dyn MapPainter,
    raster: &Raster,
    mode: ColorMode,
    uv: &mut Rect,
    cursor: usize,
    hover_pos: Option<usize>,
    marks: &[(usize, crate::fork::Difference)],
) -> MapResponse {
    let size = Vec2::new(ui.available_width(), ui.available_height().max(60.0));
    let (rect, resp) = ui.allocate_exact_size(size, Sense::click_and_drag());
    ui.painter().rect_filled(rect, 0.0, Color32::from_gray(20));
    let mut out = MapResponse::default();
    if raster.is_empty() {
        ui.painter().text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "no steps yet",
            egui::FontId::proportional(13.0),
            Color32::GRAY,
        );
        return out;
    }
    let to_uv = |p: egui::Pos2, uv: &Rect| {
        let t = (p - rect.min) / rect.size();
        egui::pos2(uv.min.x + t.x * uv.width(), uv.min.y + t.y * uv.height())
    };
    if resp.hovered() {
        let (scroll, zoom) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = (-scroll * 0.004).exp() / zoom;
        if (factor - 1.0).abs() > 1e-4 {
            if let Some(p) = resp.hover_pos() {
                let anchor = to_uv(p, uv);
                let w = (uv.width() * factor).clamp(0.01, 1.0);
                let h = (uv.height() * factor).clamp(0.01, 1.0);
                let t = (p - rect.min) / rect.size();
                *uv = Rect::from_min_size(
                    egui::pos2(anchor.x - t.x * w, anchor.y - t.y * h),
                    Vec2::new(w, h),
                );
            }
        }
    }
    if resp.dragged() {
        let d = resp.drag_delta() / rect.size() * uv.size();
        *uv = uv.translate(-d);
    }
    // Keep the window inside the raster.
    let shift = Vec2::new(
        (-uv.min.x).max(0.0) - (uv.max.x - 1.0).max(0.0),
        (-uv.min.y).max(0.0) - (uv.max.y - 1.0).max(0.0),
    );
    *uv = uv.translate(shift);
    painter.paint(ui, rect, raster, *uv, mode);

    let (w, h) = (raster.cols as f32, raster.rows as f32);
    let to_screen = |u: egui::Pos2| rect.min + ((u - uv.min) / uv.size()) * rect.size();
    let p = ui.painter_at(rect);
    if cursor > 0 {
        // The row of the step under the timeline cursor.
        let row = raster.row_of_step(cursor - 1) as f32;
        let y0 = to_screen(egui::pos2(0.0, row / h)).y;
        let y1 = to_screen(egui::pos2(0.0, (row + 1.0) / h)).y;
        p.rect_stroke(
            Rect::from_x_y_ranges(rect.x_range(), y0..=y1.max(y0 + 1.0)),
            0.0,
            Stroke::new(1.0, colors::JUST_COMMITTED),
            egui::StrokeKind::Outside,
        );
    }
    let gen_start = raster.pos_of_col(0);
    if let Some(pos) = hover_pos
        .and_then(|q| q.checked_sub(gen_start))
        .map(|d| d / raster.pos_per_col)
    {
        let x0 = to_screen(egui::pos2(pos as f32 / w, 0.0)).x;
        let x1 = to_screen(egui::pos2((pos + 1) as f32 / w, 0.0)).x;
        p.rect_stroke(
            Rect::from_x_y_ranges(x0..=x1.max(x0 + 1.0), rect.y_range()),
            0.0,
            Stroke::new(1.0, Color32::WHITE),
            egui::StrokeKind::Outside,
        );
    }
    // One tick per column (several positions share a column at a coarse level of detail; a token
    // difference wins over a step one), only for columns in view.
    let mut last_col = None;
    for &(pos, kind) in marks {
        let Some(col) = pos.checked_sub(gen_start).map(|d| d / raster.pos_per_col) else {
            continue;
        };
        let token = kind == crate::fork::Difference::Token;
        if last_col == Some((col, true)) || (last_col == Some((col, false)) && !token) {
            continue;
        }
        last_col = Some((col, token));
        let x0 = to_screen(egui::pos2(col as f32 / w, 0.0)).x;
        let x1 = to_screen(egui::pos2((col + 1) as f32 / w, 0.0))
            .x
            .max(x0 + 2.0);
        if x1 < rect.left() || x0 > rect.right() {
            continue;
        }
        let c = if token { DIFF_TOKEN } else { DIFF_STEP };
        p.rect_filled(
            Rect::from_x_y_ranges(x0..=x1, rect.top()..=rect.top() + 5.0),
            0.0,
            c,
        );
        p.rect_filled(
            Rect::from_x_y_ranges(x0..=x1, rect.bottom() - 5.0..=rect.bottom()),
            0.0,
            c,
        );
    }
    let lod = if raster.pos_per_col > 1 || raster.steps_per_row > 1 {
        format!(
            "{} · 1 texel = {} position(s) × {} step(s)",
            painter.name(),
            raster.pos_per_col,
            raster.steps_per_row
        )
    } else {
        painter.name().to_string()
    };
    p.text(
        rect.right_bottom() - Vec2::splat(4.0),
        egui::Align2::RIGHT_BOTTOM,
        lod,
        egui::FontId::monospace(10.0),
        Color32::from_gray(140),
    );
    if let Some(pt) = resp.hover_pos() {
        let u = to_uv(pt, uv);
        let (x, y) = ((u.x * w).floor(), (u.y * h).floor());
        if (0.0..w).contains(&x) && (0.0..h).contains(&y) {
            out.hovered = Some((
                raster.step_of_row(y as usize),
                raster.pos_of_col(x as usize),
            ));
        }
    }
    if resp.clicked() {
        out.clicked = out.hovered.map(|(s, _)| s);
    }
    if let Some((s, pos)) = out.hovered {
        resp.on_hover_text_at_pointer(format!(
            "step {} · position {pos}\nclick: move the cursor here · scroll: zoom · drag: pan",
            s + 1
        ));
    }
    out
}
