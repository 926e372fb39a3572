//! Explain: what the sampler did at the step under the cursor, and why, in plain words.

use egui::Color32;
use egui_plot::{uniform_grid_spacer, Bar, BarChart, Corner, GridMark, Legend, Plot};

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

/// One step of the block under the cursor, as the chart draws it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepBar {
    /// Step within the block, 1-based (the chart's x).
    pub step: usize,
    /// Commits the schedule planned.
    pub planned: usize,
    /// Commits made (the threshold rule and revisions can exceed the plan).
    pub committed: usize,
    /// The step under the cursor.
    pub current: bool,
}

/// Planned and made commits of every step of `e`'s block that the trace holds.
pub fn block_bars(t: &Trace, e: &StepEvent) -> Vec<StepBar> {
    t.events
        .iter()
        .filter(|x| x.block == e.block)
        .map(|x| StepBar {
            step: x.step + 1,
            planned: x.planned,
            committed: x.commits.len(),
            current: x.index == e.index,
        })
        .collect()
}

/// The chart's caption (also what a test or screen reader finds it by).
pub fn chart_title(e: &StepEvent) -> String {
    format!("Block {}: commits per step, planned vs made", e.block + 1)
}

/// Planned vs actual commits per step of the block under the cursor, with egui_plot: a small,
/// fixed chart (no zoom or drag, so the side panel keeps its scrolling).
fn plot(ui: &mut egui::Ui, t: &Trace, e: &StepEvent) {
    let bars = block_bars(t, e);
    ui.label(egui::RichText::new(chart_title(e)).small().weak());
    let chart = |name: &str, color: Color32, x: f64, pick: &dyn Fn(&StepBar) -> Option<usize>| {
        let v: Vec<Bar> = bars
            .iter()
            .filter_map(|b| {
                pick(b).map(|n| Bar::new(b.step as f64 + x, n as f64).width(0.4).fill(color))
            })
            .collect();
        BarChart::new(name, v).color(color)
    };
    let planned = chart("planned", Color32::from_gray(110), -0.2, &|b| {
        Some(b.planned)
    });
    let made = chart("committed", Color32::from_rgb(90, 160, 255), 0.2, &|b| {
        (!b.current).then_some(b.committed)
    });
    let current = chart("this step", Color32::from_rgb(255, 214, 10), 0.2, &|b| {
        b.current.then_some(b.committed)
    });
    let max = bars
        .iter()
        .map(|b| b.planned.max(b.committed))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    // Only whole steps and whole commits are meaningful on the axes; the headroom above `max`
    // holds the legend, so it gets no labels.
    let n = bars.len() as f64;
    let whole = |lo: f64, hi: f64| {
        move |m: GridMark, _: &std::ops::RangeInclusive<f64>| {
            if m.value.fract() == 0.0 && (lo..=hi).contains(&m.value) {
                format!("{}", m.value)
            } else {
                String::new()
            }
        }
    };
    let width = ui.available_width().min(320.0);
    Plot::new("explain_commits")
        .width(width)
        .height(130.0)
        .legend(
            Legend::default()
                .position(Corner::LeftTop)
                .text_style(egui::TextStyle::Small)
                .follow_insertion_order(true),
        )
        .include_y(0.0)
        .include_y(2.0 * max + 1.0)
        .include_x(0.4)
        .include_x(n + 0.6)
        .auto_bounds(true)
        .allow_zoom(false)
        .allow_drag(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .show_grid(false)
        .x_axis_label("step")
        // Ticks every k whole units, k chosen so that labels keep egui_plot's minimum spacing
        // (60 points across, 20 up) inside the axes (about 40 points wide, 35 high).
        .x_grid_spacer(uniform_grid_spacer(move |_| {
            let k = (60.0 * (n + 0.2) / f64::from(width - 40.0).max(60.0))
                .ceil()
                .max(1.0);
            [k, 2.0 * k, 4.0 * k]
        }))
        .y_grid_spacer(uniform_grid_spacer(move |_| {
            let k = (24.0 * (2.0 * max + 1.0) / 95.0).ceil().max(1.0);
            [k, 2.0 * k, 4.0 * k]
        }))
        .x_axis_formatter(whole(1.0, n))
        .y_axis_formatter(whole(0.0, max))
        .show(ui, |p| {
            p.bar_chart(planned);
            p.bar_chart(made);
            p.bar_chart(current);
        });
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
