//! The canvas: the generated region as token tiles laid out like code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use egui::{Color32, FontId, Rect, Sense, Stroke, StrokeKind, Vec2};

use super::colors::{self, ColorMode, Scale};
use crate::trace::{Canvas, Cell, Trace};

/// One tile of the laid-out canvas, in character units. A token containing newlines gives
/// several tiles (one per line piece) that share a position.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub pos: usize,
    pub row: usize,
    pub col: usize,
    /// Width in characters (at least 1).
    pub width: usize,
    /// What the tile shows: whitespace made visible, masks as `░`.
    pub text: String,
}

/// Masked tiles show this.
pub const MASK_GLYPH: &str = "░░";

/// Shows whitespace: spaces as `·`, tabs as `→`, the end of a line as `↵`.
fn visible(piece: &str) -> String {
    piece
        .chars()
        .map(|c| match c {
            ' ' => '·',
            '\t' => '→',
            '\r' => '^',
            c if c.is_control() || c == '\u{FFFD}' => '?',
            c => c,
        })
        .collect()
}

/// Lays out `cells[range]` as code: newlines start a new row, indentation keeps its width.
pub fn layout(cells: &[Cell], range: std::ops::Range<usize>) -> Vec<Tile> {
    let mut tiles = Vec::new();
    let (mut row, mut col) = (0usize, 0usize);
    for pos in range {
        let Some(cell) = cells.get(pos) else { break };
        if cell.masked {
            tiles.push(Tile {
                pos,
                row,
                col,
                width: 2,
                text: MASK_GLYPH.into(),
            });
            col += 2;
            continue;
        }
        let pieces: Vec<&str> = cell.text.split('\n').collect();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let mut text = visible(piece);
            if i < last {
                text.push('↵');
            }
            // The piece after the last newline is often empty: the next token starts the row.
            if text.is_empty() && i == last && last > 0 {
                break;
            }
            if text.is_empty() {
                text.push('∅');
            }
            let width = text.chars().count().max(1);
            tiles.push(Tile {
                pos,
                row,
                col,
                width,
                text,
            });
            col += width;
            if i < last {
                row += 1;
                col = 0;
            }
        }
    }
    tiles
}

/// Everything the canvas draws at one cursor that does not change between frames: the cells,
/// their tiles, re-opened texts and block starts. Built once per step and moved forward step by
/// step while a run streams in, so a frame never replays the trace.
#[derive(Clone, Debug, Default)]
pub struct CanvasModel {
    pub cells: Vec<Cell>,
    pub tiles: Vec<Tile>,
    /// Text each re-opened position held, as of the cursor (for strike-through and tooltips).
    pub reopened: HashMap<usize, String>,
    /// Canvas positions where a block starts, over the whole trace so far.
    pub block_starts: HashSet<usize>,
    pub rows: usize,
    pub cols: usize,
    /// Score range of the committed cells (the steps part is filled in when drawing).
    pub scale: Scale,
}

/// How much work the cache did, for tests that count work rather than time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheWork {
    /// Canvases rebuilt by replaying from step 0.
    pub replays: usize,
    /// Steps applied to a cached canvas.
    pub steps_applied: usize,
    /// Times the tiles were laid out.
    pub layouts: usize,
}

/// The canvas of one lane at one cursor, cached until the run or the cursor changes.
#[derive(Default)]
pub struct CanvasCache {
    key: Option<(u64, usize)>,
    block_events: usize,
    model: CanvasModel,
    pub work: CacheWork,
}

impl CanvasCache {
    /// The canvas of `trace` (run `run`) after `cursor` steps. Moving forward applies only the
    /// new steps; moving back replays from the start.
    pub fn get(&mut self, run: u64, trace: &Trace, cursor: usize) -> &CanvasModel {
        let cursor = cursor.min(trace.len());
        let h = &trace.header;
        let same_run =
            self.key.is_some_and(|(r, _)| r == run) && self.model.cells.len() == h.initial.len();
        if !same_run {
            self.block_events = 0;
            self.model.block_starts.clear();
        }
        // Block starts cover the whole trace so far, whatever the cursor.
        for e in trace.events.iter().skip(self.block_events) {
            self.model.block_starts.insert(e.block_start);
        }
        self.block_events = trace.len();
        let from = match self.key {
            Some((r, k)) if same_run && r == run && k == cursor => return &self.model,
            Some((_, k)) if same_run && k <= cursor => k,
            _ => {
                self.work.replays += 1;
                self.model.cells = trace.cells_at(0);
                self.model.reopened.clear();
                0
            }
        };
        for e in &trace.events[from..cursor] {
            Canvas::apply_to(&mut self.model.cells, h.mask_id, e);
            for r in &e.reopened {
                self.model.reopened.insert(r.pos, r.text.clone());
            }
            self.work.steps_applied += 1;
        }
        let m = &mut self.model;
        m.tiles = layout(&m.cells, h.gen_start..h.gen_end);
        m.rows = m.tiles.last().map_or(1, |t| t.row + 1);
        m.cols = m.tiles.iter().map(|t| t.col + t.width).max().unwrap_or(1);
        m.scale = Scale::new(&m.cells, 1);
        self.work.layouts += 1;
        self.key = Some((run, cursor));
        &self.model
    }
}

/// What the canvas shows about the run besides the cells.
pub struct CanvasView<'a> {
    pub trace: &'a Trace,
    pub model: &'a CanvasModel,
    pub cursor: usize,
    pub mode: ColorMode,
    /// Position hovered here or in the commit map.
    pub hover: Option<usize>,
    pub font_size: f32,
    /// Positions to outline as different (the fork's diff).
    pub marked: Option<&'a HashSet<usize>>,
    /// Position chosen for an intervention.
    pub selected: Option<usize>,
}

/// What the pointer did on the canvas this frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct CanvasResponse {
    pub hovered: Option<usize>,
    pub clicked: Option<usize>,
}

/// The block the cursor is in: that of the last applied step, else of the next one.
pub fn active_block(trace: &Trace, cursor: usize) -> Option<(usize, usize)> {
    let e = if cursor > 0 {
        trace.events.get(cursor - 1)
    } else {
        trace.events.first()
    };
    e.map(|e| (e.block_start, e.block_end))
}

/// Draws the tiles that fall inside the clip rectangle; says which one is hovered or clicked.
pub fn show(ui: &mut egui::Ui, v: &CanvasView) -> CanvasResponse {
    let h = &v.trace.header;
    let m = v.model;
    let tiles = &m.tiles;
    let font = FontId::monospace(v.font_size);
    let cw = ui.ctx().fonts_mut(|f| f.glyph_width(&font, 'M')).max(1.0);
    let rh = v.font_size + 8.0;
    let size = Vec2::new(
        (m.cols as f32 * cw + 8.0).max(ui.available_width()),
        m.rows as f32 * rh + 8.0,
    );
    let (resp, painter) = ui.allocate_painter(size, Sense::click());
    let origin = resp.rect.min + Vec2::splat(4.0);
    let scale = Scale {
        steps: v.trace.len().max(1),
        ..m.scale
    };
    let just = v.cursor.checked_sub(1);
    let active = active_block(v.trace, v.cursor);
    // Only the rows inside the clip rectangle are drawn: tiles are in row order, so two binary
    // searches find them, and a long canvas costs what the screen shows.
    let clip = ui.clip_rect();
    let row_lo = ((clip.top() - origin.y) / rh).floor().max(0.0) as usize;
    let row_hi = ((clip.bottom() - origin.y) / rh).ceil().max(0.0) as usize + 1;
    let first = tiles.partition_point(|t| t.row < row_lo);
    let last = tiles.partition_point(|t| t.row < row_hi);
    let tiles = &tiles[first..last.max(first)];
    let pointer = resp.hover_pos();
    let mut hovered = None;
    let mut rects: Vec<(usize, Rect)> = Vec::with_capacity(tiles.len());
    for t in tiles {
        let min = origin + Vec2::new(t.col as f32 * cw, t.row as f32 * rh);
        let rect = Rect::from_min_size(min, Vec2::new(t.width as f32 * cw, rh - 2.0))
            .shrink2(Vec2::new(0.5, 0.0));
        rects.push((t.pos, rect));
        if pointer.is_some_and(|p| rect.contains(p)) {
            hovered = Some(t.pos);
        }
    }
    let hover = hovered.or(v.hover);
    for (t, &(pos, rect)) in tiles.iter().zip(&rects) {
        let Some(cell) = m.cells.get(pos) else {
            continue;
        };
        if !clip.intersects(rect) {
            continue;
        }
        let in_active = active.is_some_and(|(a, b)| (a..b).contains(&pos));
        let future = active.is_some_and(|(_, b)| pos >= b);
        let mut fill = colors::cell_color(cell, v.mode, &scale);
        if future && cell.masked {
            fill = fill.gamma_multiply(0.6);
        }
        let is_just = cell.committed_at.is_some() && cell.committed_at == just;
        painter.rect_filled(rect, 3.0, fill);
        if is_just {
            painter.rect_stroke(
                rect,
                3.0,
                Stroke::new(2.0, colors::JUST_COMMITTED),
                StrokeKind::Inside,
            );
        } else if in_active {
            painter.rect_stroke(
                rect,
                3.0,
                Stroke::new(1.0, colors::ACTIVE_BLOCK),
                StrokeKind::Inside,
            );
        }
        if v.marked.is_some_and(|m| m.contains(&pos)) {
            painter.rect_stroke(
                rect.expand(1.5),
                3.0,
                Stroke::new(2.0, colors::REVISED),
                StrokeKind::Outside,
            );
        }
        if v.selected == Some(pos) {
            painter.rect_stroke(
                rect.expand(2.5),
                3.0,
                Stroke::new(2.5, colors::JUST_COMMITTED),
                StrokeKind::Outside,
            );
        }
        if hover == Some(pos) {
            painter.rect_stroke(
                rect.expand(1.0),
                3.0,
                Stroke::new(2.0, Color32::WHITE),
                StrokeKind::Outside,
            );
        }
        let text_color = if cell.masked {
            Color32::from_gray(120)
        } else {
            colors::text_on(fill)
        };
        if cell.masked {
            if let Some(old) = m.reopened.get(&pos) {
                // A re-opened token: its old text struck through, so the revision is visible.
                let g = painter.text(
                    rect.left_center() + Vec2::new(2.0, 0.0),
                    egui::Align2::LEFT_CENTER,
                    visible(old),
                    FontId::monospace(v.font_size * 0.8),
                    colors::REVISED,
                );
                painter.hline(g.x_range(), g.center().y, Stroke::new(1.5, colors::REVISED));
                continue;
            }
        }
        painter.text(
            rect.left_center(),
            egui::Align2::LEFT_CENTER,
            &t.text,
            font.clone(),
            text_color,
        );
        if pos == h.gen_start && h.heal.is_some() {
            // The healed position: a corner mark at the bottom left (its tooltip says why).
            let c = rect.left_bottom();
            painter.add(egui::Shape::convex_polygon(
                vec![c, c + Vec2::new(0.0, -6.0), c + Vec2::new(6.0, 0.0)],
                colors::ACTIVE_BLOCK,
                Stroke::NONE,
            ));
        }
        if cell.revisions > 0 && !cell.masked {
            let c = rect.right_top();
            painter.add(egui::Shape::convex_polygon(
                vec![c, c + Vec2::new(-6.0, 0.0), c + Vec2::new(0.0, 6.0)],
                colors::REVISED,
                Stroke::NONE,
            ));
        }
    }
    // Block boundaries: a bar before the first tile of every block after the first.
    let mut prev = None;
    for &(pos, rect) in &rects {
        let first_piece = prev != Some(pos);
        prev = Some(pos);
        if first_piece && pos > h.gen_start && m.block_starts.contains(&pos) {
            let x = rect.left() - 0.5;
            painter.vline(
                x,
                rect.y_range().expand(2.0),
                Stroke::new(2.0, Color32::from_gray(160)),
            );
        }
    }
    let clicked = if resp.clicked() { hovered } else { None };
    if let Some(pos) = hovered {
        if let Some(cell) = m.cells.get(pos) {
            let heal = h.heal.as_ref().filter(|_| pos == h.gen_start);
            resp.on_hover_ui_at_pointer(|ui| {
                tooltip(ui, pos, cell, m.reopened.get(&pos));
                if let Some(hl) = heal {
                    ui.separator();
                    ui.label(format!(
                        "healed prompt end: the prompt's last {:?} was backed off; this token must start with it",
                        hl.text
                    ));
                }
            });
        }
    }
    CanvasResponse { hovered, clicked }
}

fn tooltip(ui: &mut egui::Ui, pos: usize, c: &Cell, old: Option<&String>) {
    ui.label(
        egui::RichText::new(format!("{:?}", c.text))
            .monospace()
            .strong(),
    );
    ui.label(format!("position {pos} · token id {}", c.token));
    if c.masked {
        ui.label("still masked");
    } else if let Some(s) = c.committed_at {
        ui.label(format!("committed at step {}", s + 1));
        ui.label(format!("probability {:.3} · score {:.3}", c.prob, c.score));
    } else {
        ui.label("given (prompt or fixed text)");
    }
    if c.revisions > 0 {
        ui.label(
            egui::RichText::new(format!("revised {} time(s)", c.revisions)).color(colors::REVISED),
        );
    }
    if let Some(o) = old {
        ui.label(egui::RichText::new(format!("re-opened: was {o:?}")).color(colors::REVISED));
    }
    if !c.top.is_empty() {
        ui.separator();
        ui.label("top alternatives:");
        egui::Grid::new("top5").num_columns(3).show(ui, |ui| {
            for (id, text, p) in c.top.iter().take(5) {
                ui.monospace(format!("{text:?}"));
                ui.label(format!("#{id}"));
                ui.label(format!("{p:.3}"));
                ui.end_row();
            }
        });
    }
}

/// One glyph of a laid-out text: where it goes (points, relative to the text's top left) and
/// where its coverage lies in the font atlas (texels).
#[derive(Clone, Copy, Debug)]
struct GlyphQuad {
    at: egui::Pos2,
    size: Vec2,
    uv: [[u16; 2]; 2],
}

/// The texts a picture needs, laid out once with the window's fonts, plus a copy of the atlas
/// holding their glyphs. Made on the UI thread (it needs the fonts); pictures are then drawn from
/// it on any thread, so exports never hold up a frame.
#[derive(Clone)]
pub struct GlyphSheet {
    ppp: f32,
    font_size: f32,
    cw: f32,
    texts: HashMap<String, (Vec<GlyphQuad>, f32)>,
    atlas: Arc<egui::ColorImage>,
}

impl GlyphSheet {
    pub fn new<'a>(
        ctx: &egui::Context,
        font_size: f32,
        texts: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let font = FontId::monospace(font_size);
        let cw = ctx.fonts_mut(|f| f.glyph_width(&font, 'M')).max(1.0);
        let mut out = HashMap::new();
        for t in texts {
            if out.contains_key(t) {
                continue;
            }
            let galley =
                ctx.fonts_mut(|f| f.layout_no_wrap(t.to_string(), font.clone(), Color32::WHITE));
            let mut quads = Vec::new();
            for placed in &galley.rows {
                for g in &placed.row.glyphs {
                    let uv = g.uv_rect;
                    if uv.is_nothing() {
                        continue;
                    }
                    quads.push(GlyphQuad {
                        at: placed.pos + g.pos.to_vec2() + uv.offset,
                        size: uv.size,
                        uv: [uv.min, uv.max],
                    });
                }
            }
            out.insert(t.to_string(), (quads, galley.size().y));
        }
        // Read after every text has been laid out: laying out may add glyphs to the atlas.
        let atlas = Arc::new(ctx.fonts(|f| f.image()));
        GlyphSheet {
            ppp: ctx.pixels_per_point().max(0.5),
            font_size,
            cw,
            texts: out,
            atlas,
        }
    }

    /// A sheet for the canvases of every step of `trace` (for pictures and animations).
    pub fn for_trace(ctx: &egui::Context, trace: &Trace, font_size: f32) -> Self {
        let mut texts: HashSet<String> = [MASK_GLYPH.to_string()].into();
        let mut add = |text: &str| {
            let pieces: Vec<&str> = text.split('\n').collect();
            let last = pieces.len() - 1;
            for (i, p) in pieces.iter().enumerate() {
                let mut v = visible(p);
                if i < last {
                    v.push('↵');
                }
                if v.is_empty() {
                    v.push('∅');
                }
                texts.insert(v);
            }
        };
        for t in &trace.header.initial_text {
            add(t);
        }
        for e in &trace.events {
            for c in &e.commits {
                add(&c.text);
            }
        }
        GlyphSheet::new(ctx, font_size, texts.iter().map(String::as_str))
    }

    /// Picture size in pixels of a canvas `cols` × `rows` characters.
    pub fn size_px(&self, cols: usize, rows: usize) -> (u32, u32) {
        // Bounded: a huge canvas is cut rather than allocating gigabytes.
        let max_px = 16384.0;
        let rh = self.font_size + 8.0;
        (
            ((cols.max(1) as f32 * self.cw + 8.0) * self.ppp).min(max_px) as u32,
            ((rows.max(1) as f32 * rh + 8.0) * self.ppp).min(max_px) as u32,
        )
    }
}

/// The canvas as a picture with its token text, `size` pixels (`None`: just big enough).
pub fn render_picture(
    sheet: &GlyphSheet,
    trace: &Trace,
    model: &CanvasModel,
    mode: ColorMode,
    size: Option<(u32, u32)>,
) -> image::RgbaImage {
    let (w, h) = size.unwrap_or_else(|| sheet.size_px(m_cols(model), model.rows));
    let ppp = sheet.ppp;
    let (cw, rh) = (sheet.cw, sheet.font_size + 8.0);
    let mut img = image::RgbaImage::from_pixel(w.max(1), h.max(1), image::Rgba([24, 24, 28, 255]));
    let scale = Scale {
        steps: trace.len().max(1),
        ..model.scale
    };
    for t in &model.tiles {
        let Some(cell) = model.cells.get(t.pos) else {
            continue;
        };
        let fill = colors::cell_color(cell, mode, &scale);
        let (x0, y0) = (4.0 + t.col as f32 * cw, 4.0 + t.row as f32 * rh);
        let (x1, y1) = (x0 + t.width as f32 * cw - 1.0, y0 + rh - 2.0);
        if x0 * ppp >= w as f32 || y0 * ppp >= h as f32 {
            continue;
        }
        fill_rect(&mut img, [x0 * ppp, y0 * ppp, x1 * ppp, y1 * ppp], fill);
        let color = if cell.masked {
            Color32::from_gray(120)
        } else {
            colors::text_on(fill)
        };
        let Some((quads, text_h)) = sheet.texts.get(&t.text) else {
            continue;
        };
        let top = y0 + (rh - 2.0 - text_h) / 2.0;
        for q in quads {
            let p = egui::pos2(x0, top) + q.at.to_vec2();
            blit_glyph(
                &mut img,
                &sheet.atlas,
                q.uv,
                [p.x * ppp, p.y * ppp],
                q.size * ppp,
                color,
            );
        }
    }
    img
}

/// The canvas at the cursor as a picture (UI thread: lays out its texts first).
pub fn render_png(
    ctx: &egui::Context,
    trace: &Trace,
    model: &CanvasModel,
    mode: ColorMode,
    font_size: f32,
) -> image::RgbaImage {
    let sheet = GlyphSheet::new(ctx, font_size, model.tiles.iter().map(|t| t.text.as_str()));
    render_picture(&sheet, trace, model, mode, None)
}

/// Writes the decoding as an animated PNG, one frame per step (plus the start), `fps` frames
/// per second; every frame has the size of the largest canvas. Frames are drawn and written one
/// at a time, so memory stays that of one picture.
pub fn write_apng(
    sheet: &GlyphSheet,
    trace: &Trace,
    mode: ColorMode,
    steps_per_second: f32,
    out: impl std::io::Write,
) -> Result<(), String> {
    // First pass: the largest layout, so every frame has one size.
    let mut cache = CanvasCache::default();
    let (mut cols, mut rows) = (1, 1);
    for k in 0..=trace.len() {
        let m = cache.get(0, trace, k);
        cols = cols.max(m.cols);
        rows = rows.max(m.rows);
    }
    let (w, hgt) = sheet.size_px(cols, rows);
    let frames = trace.len() as u32 + 1;
    let err = |e: png::EncodingError| format!("APNG: {e}");
    let mut enc = png::Encoder::new(out, w, hgt);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_animated(frames, 0).map_err(err)?;
    // Each frame shows for 1 / steps_per_second s, as a fraction in hundredths (APNG stores
    // a u16 numerator and denominator), so the timeline's 0.5–120 steps/s all fit.
    let per_100s = (steps_per_second * 100.0)
        .round()
        .clamp(1.0, u16::MAX as f32) as u16;
    enc.set_frame_delay(100, per_100s).map_err(err)?;
    let mut writer = enc.write_header().map_err(err)?;
    let mut cache = CanvasCache::default();
    for k in 0..=trace.len() {
        let m = cache.get(0, trace, k);
        let img = render_picture(sheet, trace, m, mode, Some((w, hgt)));
        writer.write_image_data(img.as_raw()).map_err(err)?;
    }
    writer.finish().map_err(err)
}

fn m_cols(m: &CanvasModel) -> usize {
    m.cols.max(1)
}

fn fill_rect(img: &mut image::RgbaImage, r: [f32; 4], c: Color32) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (x0, y0) = (r[0].clamp(0.0, w) as u32, r[1].clamp(0.0, h) as u32);
    let (x1, y1) = (r[2].clamp(0.0, w) as u32, r[3].clamp(0.0, h) as u32);
    for y in y0..y1 {
        for x in x0..x1 {
            img.put_pixel(x, y, image::Rgba([c.r(), c.g(), c.b(), 255]));
        }
    }
}

/// Draws one glyph from the atlas, its coverage as alpha over what is there.
fn blit_glyph(
    img: &mut image::RgbaImage,
    atlas: &egui::ColorImage,
    uv: [[u16; 2]; 2],
    at: [f32; 2],
    size: Vec2,
    color: Color32,
) {
    let [min, max] = uv;
    let (tw, th) = (
        f32::from(max[0].saturating_sub(min[0])),
        f32::from(max[1].saturating_sub(min[1])),
    );
    let (dw, dh) = (
        size.x.round().max(1.0) as i64,
        size.y.round().max(1.0) as i64,
    );
    let (ox, oy) = (at[0].round() as i64, at[1].round() as i64);
    for dy in 0..dh {
        for dx in 0..dw {
            let (x, y) = (ox + dx, oy + dy);
            if x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height()) {
                continue;
            }
            let sx = usize::from(min[0]) + ((dx as f32 + 0.5) * tw / dw as f32) as usize;
            let sy = usize::from(min[1]) + ((dy as f32 + 0.5) * th / dh as f32) as usize;
            let Some(src) = atlas.pixels.get(sy * atlas.size[0] + sx) else {
                continue;
            };
            let a = f32::from(src.a()) / 255.0;
            if a <= 0.0 {
                continue;
            }
            let d = img.get_pixel_mut(x as u32, y as u32);
            let mix = |bg: u8, fg: u8| (f32::from(bg) * (1.0 - a) + f32::from(fg) * a) as u8;
            *d = image::Rgba([
                mix(d[0], color.r()),
                mix(d[1], color.g()),
                mix(d[2], color.b()),
                255,
            ]);
        }
    }
}
