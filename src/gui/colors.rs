//! Colour scales shared by the canvas, the commit map and the PNG exports, so every view of a
//! trace agrees on what a colour means.

use egui::Color32;
use serde::{Deserialize, Serialize};

use crate::trace::Cell;

/// What a tile's colour encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColorMode {
    CommitStep,
    Probability,
    Score,
    Revisions,
}

impl ColorMode {
    pub const ALL: [ColorMode; 4] = [
        ColorMode::CommitStep,
        ColorMode::Probability,
        ColorMode::Score,
        ColorMode::Revisions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ColorMode::CommitStep => "commit step",
            ColorMode::Probability => "probability",
            ColorMode::Score => "score",
            ColorMode::Revisions => "revisions",
        }
    }
}

/// Colour of a masked position.
pub const MASKED: Color32 = Color32::from_rgb(58, 60, 66);
/// Colour of a position that was given (prompt, suffix), not generated.
pub const GIVEN: Color32 = Color32::from_rgb(90, 90, 96);
/// Outline of the block being denoised.
pub const ACTIVE_BLOCK: Color32 = Color32::from_rgb(90, 160, 255);
/// Fill/outline of tokens committed by the step under the cursor.
pub const JUST_COMMITTED: Color32 = Color32::from_rgb(255, 214, 10);
pub const REVISED: Color32 = Color32::from_rgb(255, 90, 80);

fn lerp(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// A perceptually ordered ramp (dark purple → teal → yellow, like viridis) for `t` in [0, 1].
pub fn ramp(t: f32) -> Color32 {
    const STOPS: [[f32; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let c = lerp(STOPS[i], STOPS[i + 1], x - i as f32);
    Color32::from_rgb(c[0] as u8, c[1] as u8, c[2] as u8)
}

/// Red (unsure) → amber → green (sure) for a probability.
pub fn confidence(p: f32) -> Color32 {
    let p = if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let c = if p < 0.5 {
        lerp([200.0, 60.0, 60.0], [220.0, 170.0, 50.0], p * 2.0)
    } else {
        lerp([220.0, 170.0, 50.0], [60.0, 170.0, 90.0], (p - 0.5) * 2.0)
    };
    Color32::from_rgb(c[0] as u8, c[1] as u8, c[2] as u8)
}

/// The range of values a colour mode normalises over, taken from the visible canvas.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scale {
    pub steps: usize,
    pub score_min: f32,
    pub score_max: f32,
}

impl Scale {
    pub fn new(cells: &[Cell], steps: usize) -> Self {
        let scores = cells
            .iter()
            .filter(|c| c.committed_at.is_some())
            .map(|c| c.score)
            .filter(|s| s.is_finite());
        let (lo, hi) = scores.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), s| {
            (lo.min(s), hi.max(s))
        });
        Scale {
            steps: steps.max(1),
            score_min: lo,
            score_max: hi,
        }
    }

    fn score01(&self, s: f32) -> f32 {
        if self.score_max > self.score_min {
            (s - self.score_min) / (self.score_max - self.score_min)
        } else {
            1.0
        }
    }
}

/// Fill colour of a cell in `mode`.
pub fn cell_color(cell: &Cell, mode: ColorMode, scale: &Scale) -> Color32 {
    if cell.masked {
        return MASKED;
    }
    let Some(step) = cell.committed_at else {
        return GIVEN;
    };
    match mode {
        ColorMode::CommitStep => ramp(step as f32 / (scale.steps.saturating_sub(1)).max(1) as f32),
        ColorMode::Probability => confidence(cell.prob),
        ColorMode::Score => ramp(scale.score01(cell.score)),
        ColorMode::Revisions => match cell.revisions {
            0 => Color32::from_rgb(70, 110, 150),
            1 => Color32::from_rgb(230, 140, 40),
            _ => REVISED,
        },
    }
}

/// Readable text colour on top of `fill`.
pub fn text_on(fill: Color32) -> Color32 {
    let l = 0.299 * f32::from(fill.r()) + 0.587 * f32::from(fill.g()) + 0.114 * f32::from(fill.b());
    if l > 140.0 {
        Color32::from_rgb(20, 20, 20)
    } else {
        Color32::from_rgb(235, 235, 235)
    }
}
