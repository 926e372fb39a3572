//! The commit map: a steps × positions raster of the whole run. Row `s` is the generated region
//! after step `s + 1`; a texel is dark while its position is masked, then coloured by the colour
//! mode. Drawn by a WGSL shader when wgpu is there, else by an egui texture of the same raster.

use std::sync::Arc;

use egui::{Color32, Rect, Sense, Stroke, Vec2};

use super::colors::{self, ColorMode, Scale};
use crate::trace::{Canvas, Cell, Trace};

/// What a raster was built from; a painter re-uploads only when this changes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RasterKey {
    pub run: u64,
    pub steps: usize,
    pub mode: ColorMode,
}

/// RGBA8 texels, `width` positions × `height` steps, row-major.
#[derive(Clone, Debug)]
pub struct Raster {
    pub key: RasterKey,
    pub width: usize,
    pub height: usize,
    pub rgba: Arc<Vec<u8>>,
}

impl Raster {
    /// Builds the raster by replaying the trace once.
    pub fn build(trace: &Trace, run: u64, mode: ColorMode) -> Raster {
        let h = &trace.header;
        let width = h.gen_end - h.gen_start;
        let height = trace.len();
        let mut rgba = Vec::with_capacity(width * height * 4);
        let mut canvas = Canvas::initial(h);
        // The score scale spans the whole run so a position keeps its colour across rows.
        let all: Vec<Cell> = trace
            .events
            .iter()
            .flat_map(|e| e.commits.iter())
            .map(|c| Cell {
                token: c.token,
                text: String::new(),
                masked: false,
                committed_at: Some(0),
                prob: c.prob,
                score: c.score,
                revisions: 0,
                previous: None,
                top: Vec::new(),
            })
            .collect();
        let scale = Scale::new(&all, height);
        for e in &trace.events {
            canvas.apply(e);
            for c in canvas.cells.get(h.gen_start..h.gen_end).unwrap_or_default() {
                let col = colors::cell_color(c, mode, &scale);
                rgba.extend_from_slice(&[col.r(), col.g(), col.b(), 255]);
            }
        }
        Raster {
            key: RasterKey {
                run,
                steps: height,
                mode,
            },
            width,
            height,
            rgba: Arc::new(rgba),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The raster scaled up `px` times, for the PNG export.
    pub fn to_image(&self, px: u32) -> image::RgbaImage {
        let px = px.max(1);
        let (w, h) = (self.width.max(1) as u32, self.height.max(1) as u32);
        image::RgbaImage::from_fn(w * px, h * px, |x, y| {
            let i = ((y / px) as usize * self.width + (x / px) as usize) * 4;
            match self.rgba.get(i..i + 4) {
                Some(p) => image::Rgba([p[0], p[1], p[2], p[3]]),
                None => image::Rgba([0, 0, 0, 255]),
            }
        })
    }
}

/// Paints a raster's uv window into a rectangle. Two implementations paint the same picture.
pub trait MapPainter {
    fn paint(&mut self, ui: &mut egui::Ui, rect: Rect, raster: &Raster, uv: Rect);
    /// Shown in the view's corner, so a screenshot says which path drew it.
    fn name(&self) -> &'static str;
}

/// CPU fallback: the raster as a nearest-filtered egui texture.
#[derive(Default)]
pub struct CpuMapPainter {
    texture: Option<(RasterKey, egui::TextureHandle)>,
}

impl MapPainter for CpuMapPainter {
    fn paint(&mut self, ui: &mut egui::Ui, rect: Rect, raster: &Raster, uv: Rect) {
        if raster.is_empty() {
            return;
        }
        let stale = self.texture.as_ref().is_none_or(|(k, _)| *k != raster.key);
        if stale {
            let img = egui::ColorImage::from_rgba_unmultiplied(
                [raster.width, raster.height],
                &raster.rgba,
            );
            let tex = ui
                .ctx()
                .load_texture("commit-map", img, egui::TextureOptions::NEAREST);
            self.texture = Some((raster.key, tex));
        }
        if let Some((_, tex)) = &self.texture {
            ui.painter().image(tex.id(), rect, uv, Color32::WHITE);
        }
    }

    fn name(&self) -> &'static str {
        "cpu"
    }
}

/// GPU path: `shaders/commit_map.wgsl` through an egui-wgpu paint callback.
pub struct GpuMapPainter;

impl GpuMapPainter {
    /// Creates the pipeline once and stores it in the renderer's callback resources.
    pub fn new(rs: &egui_wgpu::RenderState) -> Self {
        let resources = gpu::Resources::new(&rs.device, rs.target_format);
        rs.renderer.write().callback_resources.insert(resources);
        GpuMapPainter
    }
}

impl MapPainter for GpuMapPainter {
    fn paint(&mut self, ui: &mut egui::Ui, rect: Rect, raster: &Raster, uv: Rect) {
        if raster.is_empty() {
            return;
        }
        let cb = gpu::MapCallback {
            raster: raster.clone(),
            uv,
        };
        ui.painter()
            .add(egui_wgpu::Callback::new_paint_callback(rect, cb));
    }

    fn name(&self) -> &'static str {
        "wgpu"
    }
}

mod gpu {
    use egui_wgpu::wgpu;

    use super::{Raster, RasterKey};

    #[repr(C)]
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    struct ViewUniform {
        uv_min: [f32; 2],
        uv_max: [f32; 2],
        flags: [u32; 4],
    }

    pub struct Resources {
        pipeline: wgpu::RenderPipeline,
        layout: wgpu::BindGroupLayout,
        uniform: wgpu::Buffer,
        srgb_target: bool,
        texture: Option<(RasterKey, wgpu::BindGroup)>,
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
                            sample_type: wgpu::TextureSampleType::Float { filterable: false },
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
                texture: None,
            }
        }

        fn upload(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, r: &Raster) {
            let size = wgpu::Extent3d {
                width: r.width as u32,
                height: r.height as u32,
                depth_or_array_layers: 1,
            };
            let texture = device.create_texture(&wgpu::TextureDescriptor {
                label: Some("commit_map_raster"),
                size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba8Unorm,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                &r.rgba,
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(4 * r.width as u32),
                    rows_per_image: Some(r.height as u32),
                },
                size,
            );
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
            self.texture = Some((r.key, bind));
        }
    }

    pub struct MapCallback {
        pub raster: Raster,
        pub uv: egui::Rect,
    }

    impl egui_wgpu::CallbackTrait for MapCallback {
        fn prepare(
            &self,
            device: &wgpu::Device,
            queue: &wgpu::Queue,
            _screen: &egui_wgpu::ScreenDescriptor,
            _encoder: &mut wgpu::CommandEncoder,
            resources: &mut egui_wgpu::CallbackResources,
        ) -> Vec<wgpu::CommandBuffer> {
            let Some(res) = resources.get_mut::<Resources>() else {
                return Vec::new();
            };
            if res
                .texture
                .as_ref()
                .is_none_or(|(k, _)| *k != self.raster.key)
            {
                res.upload(device, queue, &self.raster);
            }
            let u = ViewUniform {
                uv_min: [self.uv.min.x, self.uv.min.y],
                uv_max: [self.uv.max.x, self.uv.max.y],
                flags: [u32::from(res.srgb_target), 0, 0, 0],
            };
            queue.write_buffer(&res.uniform, 0, bytemuck::bytes_of(&u));
            Vec::new()
        }

        fn paint(
            &self,
            _info: egui::PaintCallbackInfo,
            pass: &mut wgpu::RenderPass<'static>,
            resources: &egui_wgpu::CallbackResources,
        ) {
            let Some(res) = resources.get::<Resources>() else {
                return;
            };
            let Some((_, bind)) = &res.texture else {
                return;
            };
            pass.set_pipeline(&res.pipeline);
            pass.set_bind_group(0, bind, &[]);
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

/// Draws the map with zoom (scroll) and pan (drag); `uv` is the visible window, kept by the caller.
pub fn show(
    ui: &mut egui::Ui,
    painter: &mut dyn MapPainter,
    raster: &Raster,
    gen_start: usize,
    uv: &mut Rect,
    cursor: usize,
    hover_pos: Option<usize>,
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
    painter.paint(ui, rect, raster, *uv);

    let (w, h) = (raster.width as f32, raster.height as f32);
    let to_screen = |u: egui::Pos2| rect.min + ((u - uv.min) / uv.size()) * rect.size();
    let p = ui.painter_at(rect);
    if cursor > 0 {
        // The row of the step under the timeline cursor.
        let y0 = to_screen(egui::pos2(0.0, (cursor - 1) as f32 / h)).y;
        let y1 = to_screen(egui::pos2(0.0, cursor as f32 / h)).y;
        p.rect_stroke(
            Rect::from_x_y_ranges(rect.x_range(), y0..=y1.max(y0 + 1.0)),
            0.0,
            Stroke::new(1.0, colors::JUST_COMMITTED),
            egui::StrokeKind::Outside,
        );
    }
    if let Some(pos) = hover_pos.and_then(|q| q.checked_sub(gen_start)) {
        let x0 = to_screen(egui::pos2(pos as f32 / w, 0.0)).x;
        let x1 = to_screen(egui::pos2((pos + 1) as f32 / w, 0.0)).x;
        p.rect_stroke(
            Rect::from_x_y_ranges(x0..=x1.max(x0 + 1.0), rect.y_range()),
            0.0,
            Stroke::new(1.0, Color32::WHITE),
            egui::StrokeKind::Outside,
        );
    }
    p.text(
        rect.right_bottom() - Vec2::splat(4.0),
        egui::Align2::RIGHT_BOTTOM,
        painter.name(),
        egui::FontId::monospace(10.0),
        Color32::from_gray(140),
    );
    if let Some(pt) = resp.hover_pos() {
        let u = to_uv(pt, uv);
        let (x, y) = ((u.x * w).floor(), (u.y * h).floor());
        if (0.0..w).contains(&x) && (0.0..h).contains(&y) {
            out.hovered = Some((y as usize, gen_start + x as usize));
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
