//! The canvas: the generated region as token tiles laid out like code.

use std::collections::HashMap;

use egui::{Color32, FontId, Rect, Sense, Stroke, StrokeKind, Vec2};

use super::colors::{self, ColorMode, Scale};
use crate::trace::{Cell, Trace};

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

/// What the canvas shows about the run besides the cells.
pub struct CanvasView<'a> {
    pub trace: &'a Trace,
    pub cells: &'a [Cell],
    pub cursor: usize,
    pub mode: ColorMode,
    /// Position hovered here or in the commit map.
    pub hover: Option<usize>,
    pub font_size: f32,
}

/// Text each re-opened position held, as of `cursor` (for strike-through and tooltips).
fn reopened_text(trace: &Trace, cursor: usize) -> HashMap<usize, String> {
    let mut m = HashMap::new();
    for e in trace.events.iter().take(cursor) {
        for r in &e.reopened {
            m.insert(r.pos, r.text.clone());
        }
    }
    m
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

/// Draws the tiles; returns the hovered position.
pub fn show(ui: &mut egui::Ui, v: &CanvasView) -> Option<usize> {
    let h = &v.trace.header;
    let tiles = layout(v.cells, h.gen_start..h.gen_end);
    let font = FontId::monospace(v.font_size);
    let cw = ui.ctx().fonts_mut(|f| f.glyph_width(&font, 'M')).max(1.0);
    let rh = v.font_size + 8.0;
    let rows = tiles.last().map_or(1, |t| t.row + 1);
    let cols = tiles.iter().map(|t| t.col + t.width).max().unwrap_or(1);
    let size = Vec2::new(
        (cols as f32 * cw + 8.0).max(ui.available_width()),
        rows as f32 * rh + 8.0,
    );
    let (resp, painter) = ui.allocate_painter(size, Sense::hover());
    let origin = resp.rect.min + Vec2::splat(4.0);
    let scale = Scale::new(v.cells, v.trace.len());
    let just = v.cursor.checked_sub(1);
    let active = active_block(v.trace, v.cursor);
    let reopened = reopened_text(v.trace, v.cursor);
    // Block-causal models align blocks to absolute positions, so take the boundaries from the
    // steps rather than from the block size.
    let block_starts: std::collections::HashSet<usize> =
        v.trace.events.iter().map(|e| e.block_start).collect();
    let pointer = resp.hover_pos();
    let mut hovered = None;
    let mut rects: Vec<(usize, Rect)> = Vec::with_capacity(tiles.len());
    for t in &tiles {
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
        let Some(cell) = v.cells.get(pos) else {
            continue;
        };
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
            if let Some(old) = reopened.get(&pos) {
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
        if first_piece && pos > h.gen_start && block_starts.contains(&pos) {
            let x = rect.left() - 0.5;
            painter.vline(
                x,
                rect.y_range().expand(2.0),
                Stroke::new(2.0, Color32::from_gray(160)),
            );
        }
    }
    if let Some(pos) = hovered {
        if let Some(cell) = v.cells.get(pos) {
            let heal = h.heal.as_ref().filter(|_| pos == h.gen_start);
            resp.on_hover_ui_at_pointer(|ui| {
                tooltip(ui, pos, cell, reopened.get(&pos));
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
    hovered
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

/// Tiles of the canvas as a picture, `cell_px` pixels per character, for the PNG export.
pub fn render_png(
    trace: &Trace,
    cells: &[Cell],
    mode: ColorMode,
    cell_px: u32,
) -> image::RgbaImage {
    let h = &trace.header;
    let tiles = layout(cells, h.gen_start..h.gen_end);
    let (cw, rh) = (cell_px.max(2), cell_px.max(2) * 2);
    let cols = tiles.iter().map(|t| t.col + t.width).max().unwrap_or(1) as u32;
    let rows = tiles.last().map_or(1, |t| t.row + 1) as u32;
    let mut img =
        image::RgbaImage::from_pixel(cols * cw + 4, rows * rh + 4, image::Rgba([24, 24, 28, 255]));
    let scale = Scale::new(cells, trace.len());
    for t in &tiles {
        let Some(cell) = cells.get(t.pos) else {
            continue;
        };
        let c = colors::cell_color(cell, mode, &scale);
        let (x0, y0) = (2 + t.col as u32 * cw, 2 + t.row as u32 * rh);
        for y in y0 + 1..y0 + rh - 1 {
            for x in x0 + 1..x0 + t.width as u32 * cw - 1 {
                img.put_pixel(x, y, image::Rgba([c.r(), c.g(), c.b(), 255]));
            }
        }
    }
    img
}
