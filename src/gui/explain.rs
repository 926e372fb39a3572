//! Explain: what the sampler did at the step under the cursor, and why, in plain words.

use egui::{Color32, Rect, Sense, Stroke, Vec2};

use crate::sampler::UnmaskRule;
use crate::trace::{StepEvent, Trace};

/// The explanation of step `k` (1-based cursor: the step that produced the canvas shown).
pub fn describe(t: &Trace, cursor: usize) -> Vec<String> {
    let p = &t.header.params;
    let healed = t.header.heal.as_ref().map(|h| {
        format!(
            "Prompt healed: its last {} token(s) {:?} were backed off; position {} may only take one of the {} tokens that start with that text, so the model picks the token boundary itself.",
            h.removed.len(),
            h.text,
            t.header.gen_start,
            h.allowed.len()
        )
    });
    let Some(e) = cursor.checked_sub(1).and_then(|i| t.events.get(i)) else {
        let mut out = vec![format!(
            "Before the first step: {} masked positions in blocks of {}, up to {} steps per block. Press the right arrow key to apply the first step.",
            t.header.gen_end - t.header.gen_start,
            p.block_size,
            p.steps
        )];
        out.extend(healed);
        return out;
    };
    let mut out = Vec::new();
    out.push(format!(
        "Step {} of {}: block {} (positions {}–{}), step {} of at most {} in this block.",
        e.index + 1,
        t.len(),
        e.block + 1,
        e.block_start,
        e.block_end.saturating_sub(1),
        e.step + 1,
        p.steps
    ));
    let rule = p.rule;
    if rule == UnmaskRule::Threshold {
        out.push(format!(
            "Rule threshold: every masked position whose most likely token has p > {:.2} is committed, and at least the best one. {} position(s) passed.",
            p.threshold,
            e.commits.len()
        ));
    } else {
        out.push(format!(
            "Rule {}: masked positions are ranked by {}; the {} schedule planned {} commit(s) and {} were made.",
            rule.name(),
            rule.score_name(),
            p.schedule.name(),
            e.planned,
            e.commits.len()
        ));
    }
    if !e.commits.is_empty() {
        let list: Vec<String> = e
            .commits
            .iter()
            .take(8)
            .map(|c| format!("{:?}@{} ({:.3})", c.text, c.pos, c.score))
            .collect();
        let more = if e.commits.len() > 8 {
            format!(" and {} more", e.commits.len() - 8)
        } else {
            String::new()
        };
        out.push(format!("Committed with scores: {}{more}.", list.join(", ")));
    }
    if let Some(h) = healed.filter(|_| e.commits.iter().any(|c| c.pos == t.header.gen_start)) {
        out.push(h);
    }
    let lowest = e
        .commits
        .iter()
        .map(|c| c.score)
        .fold(f32::INFINITY, f32::min);
    match e.best_left {
        Some((pos, s)) if lowest.is_finite() => out.push(format!(
            "Best position left masked: {pos} with score {s:.3} (lowest committed: {lowest:.3}), so it waits for a later step."
        )),
        Some((pos, s)) => out.push(format!("Best position left masked: {pos} with score {s:.3}.")),
        None => out.push("No masked position is left in this block: it is finished.".into()),
    }
    let revisions: Vec<&crate::trace::Commit> =
        e.commits.iter().filter(|c| c.previous.is_some()).collect();
    if !e.reopened.is_empty() {
        let list: Vec<String> = e
            .reopened
            .iter()
            .take(6)
            .map(|r| format!("{:?}@{} (p {:.2})", r.text, r.pos, r.prob))
            .collect();
        out.push(format!(
            "Edit noise re-opened {} committed token(s): {}.",
            e.reopened.len(),
            list.join(", ")
        ));
    }
    if !revisions.is_empty() {
        out.push(format!(
            "{} commit(s) revise a token that had been re-opened.",
            revisions.len()
        ));
    }
    out.push(format!(
        "{} mask(s) left in the generated region · forward {:.1} ms over {} tokens · {} forwards so far.",
        e.masks_left, e.forward_ms, e.in_flight, e.nfe
    ));
    out
}

/// Planned vs actual commits per step of the block under the cursor.
fn plot(ui: &mut egui::Ui, t: &Trace, e: &StepEvent) {
    let steps: Vec<&StepEvent> = t.events.iter().filter(|x| x.block == e.block).collect();
    let max = steps
        .iter()
        .map(|s| s.planned.max(s.commits.len()))
        .max()
        .unwrap_or(1)
        .max(1);
    let (rect, _) = ui.allocate_exact_size(
        Vec2::new(ui.available_width().min(320.0), 90.0),
        Sense::hover(),
    );
    let p = ui.painter_at(rect);
    p.rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
    let plot = rect.shrink2(Vec2::new(6.0, 14.0));
    let n = steps.len().max(1) as f32;
    let bw = plot.width() / n;
    for (i, s) in steps.iter().enumerate() {
        let x0 = plot.left() + i as f32 * bw;
        let hp = plot.height() * s.planned as f32 / max as f32;
        let ha = plot.height() * s.commits.len() as f32 / max as f32;
        let planned = Rect::from_min_max(
            egui::pos2(x0 + bw * 0.1, plot.bottom() - hp),
            egui::pos2(x0 + bw * 0.5, plot.bottom()),
        );
        let actual = Rect::from_min_max(
            egui::pos2(x0 + bw * 0.5, plot.bottom() - ha),
            egui::pos2(x0 + bw * 0.9, plot.bottom()),
        );
        p.rect_filled(planned, 1.0, Color32::from_gray(110));
        let c = if s.index == e.index {
            Color32::from_rgb(255, 214, 10)
        } else {
            Color32::from_rgb(90, 160, 255)
        };
        p.rect_filled(actual, 1.0, c);
    }
    p.hline(
        plot.x_range(),
        plot.bottom(),
        Stroke::new(1.0, Color32::GRAY),
    );
    let font = egui::FontId::proportional(10.0);
    p.text(
        rect.left_top() + Vec2::new(4.0, 1.0),
        egui::Align2::LEFT_TOP,
        format!(
            "block {}: planned (grey) vs committed (blue), max {max}",
            e.block + 1
        ),
        font,
        ui.visuals().weak_text_color(),
    );
}

pub fn show(ui: &mut egui::Ui, t: Option<&Trace>, cursor: usize) {
    let Some(t) = t else {
        ui.weak("Generate or open a trace to see what the sampler does at each step.");
        return;
    };
    for line in describe(t, cursor) {
        ui.label(line);
    }
    if let Some(e) = cursor.checked_sub(1).and_then(|i| t.events.get(i)) {
        plot(ui, t, e);
    }
}
