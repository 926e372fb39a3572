//! The race: the same prompt decoded autoregressively and with the current diffusion settings.
//! The lanes decode one after the other while the window stays nearly still (it repaints twice a
//! second and draws no canvases), so each lane's clock is its decoder's own time rather than the
//! window's load; afterwards both are replayed side by side on one clock taken from each step's
//! `elapsed_ms`.

use super::canvas::{self, CanvasView};
use super::colors::ColorMode;
use super::store::{self, LaneRun, RunStatus, Store};
use crate::trace::Metrics;

/// A lane's figures once it has finished.
fn finished(l: &LaneRun) -> Option<&Metrics> {
    if !matches!(l.status, RunStatus::Finished(_)) {
        return None;
    }
    l.trace.as_ref()?.finish.as_ref().map(|f| &f.metrics)
}

/// Diffusion tokens/s over autoregressive tokens/s, as `unmask bench` compares settings.
pub fn speedup(store: &Store) -> Option<f64> {
    let a = finished(&store.race_ar)?.tokens_per_second();
    let d = finished(&store.race_diffusion)?.tokens_per_second();
    (a > 0.0).then(|| d / a)
}

/// Levenshtein distance between two token sequences (two rows of the table at a time).
pub fn edit_distance(a: &[u32], b: &[u32]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Whether a lane's output parses as Python, judged as `unmask eval` judges a completion (prompt +
/// output cut at its last complete line, see [`crate::pycheck::judge`]).
fn parses(t: &crate::trace::Trace) -> Option<bool> {
    let f = t.finish.as_ref()?;
    let stopped = matches!(f.reason, crate::trace::FinishReason::Eos { .. });
    Some(crate::pycheck::judge(&t.header.prompt, &f.text, stopped))
}

/// The quality line: whether each output parses as Python, and how far apart they are in tokens.
fn quality(store: &mut Store) -> Option<String> {
    let key = (store.race_ar.run, store.race_diffusion.run);
    if let Some((k, line)) = &store.race_quality {
        if *k == key {
            return Some(line.clone());
        }
    }
    finished(&store.race_ar)?;
    finished(&store.race_diffusion)?;
    let (ta, td) = (
        store.race_ar.trace.as_ref()?,
        store.race_diffusion.trace.as_ref()?,
    );
    let (a, d) = (ta.finish.as_ref()?, td.finish.as_ref()?);
    let dist = edit_distance(&a.tokens, &d.tokens);
    let yes = |t: &crate::trace::Trace| match parses(t) {
        Some(true) => "yes",
        _ => "no",
    };
    let line = format!(
        "quality: parses as Python: autoregressive {}, diffusion {} · token edit distance {dist} \
         between the outputs ({} and {} tokens){}",
        yes(ta),
        yes(td),
        a.tokens.len(),
        d.tokens.len(),
        if dist == 0 { " · identical" } else { "" }
    );
    store.race_quality = Some((key, line.clone()));
    Some(line)
}

/// A lane's trace, or, while it has none, a line saying why (queued, failed, or `idle`); a run
/// that failed after it started shows its error above its partial trace.
pub(super) fn trace_or_status<'a>(
    ui: &mut egui::Ui,
    l: &'a LaneRun,
    idle: &str,
) -> Option<&'a std::sync::Arc<crate::trace::Trace>> {
    if l.trace.is_none() {
        ui.weak(match &l.status {
            RunStatus::Queued => "waiting for the engine…".to_string(),
            RunStatus::Failed(e) => format!("failed: {e}"),
            _ => idle.to_string(),
        });
    } else if let RunStatus::Failed(e) = &l.status {
        ui.colored_label(egui::Color32::RED, e);
    }
    l.trace.as_ref()
}

fn lane(
    ui: &mut egui::Ui,
    title: &str,
    l: &LaneRun,
    cache: &mut canvas::CanvasCache,
    clock_ms: f64,
    mode: ColorMode,
) {
    ui.heading(title);
    let Some(t) = trace_or_status(ui, l, "not started") else {
        return;
    };
    if l.status.is_active() {
        ui.horizontal(|ui| {
            // No spinner: it animates, so it would repaint every frame and take the CPU from the
            // decoder being timed (the window repaints every QUIET_INTERVAL_MS instead).
            ui.label(format!(
                "decoding… step {} (the window stays still so it does not slow the decoder)",
                t.len()
            ));
        });
        return;
    }
    if let Some(m) = finished(l) {
        ui.label(format!(
            "{:.1} tokens/s · {} forwards · {:.2} tokens per forward · {} tokens in {:.0} ms",
            m.tokens_per_second(),
            m.forwards,
            m.tokens_per_forward(),
            m.tokens,
            m.total_ms
        ));
    }
    let k = store::steps_by(t, clock_ms);
    let end = store::race_end_ms(l);
    let masks = k
        .checked_sub(1)
        .and_then(|i| t.events.get(i))
        .map_or(t.header.gen_end - t.header.gen_start, |e| e.masks_left);
    ui.label(format!(
        "{:.0} ms · step {k} of {} · {masks} masks left",
        clock_ms.min(end),
        t.len()
    ));
    let model = cache.get(l.run, t, k);
    let v = CanvasView {
        trace: t,
        model,
        cursor: k,
        mode,
        hover: None,
        font_size: 11.0,
        marked: None,
        selected: None,
    };
    egui::ScrollArea::vertical().id_salt(title).show(ui, |ui| {
        canvas::show(ui, &v);
    });
}

/// The race view; the Race button in the controls starts a race.
pub fn show(ui: &mut egui::Ui, store: &mut Store, mode: ColorMode) {
    let measuring = store.race_ar.status.is_active() || store.race_diffusion.status.is_active();
    ui.horizontal(|ui| {
        let end = store::race_end_ms(&store.race_ar).max(store::race_end_ms(&store.race_diffusion));
        if measuring {
            // No spinner here either (see `lane`).
            ui.label(
                "timing the decoders one after the other; the replay starts when both are done",
            );
        } else {
            if ui
                .button(if store.race_playing {
                    "Pause"
                } else {
                    "Replay"
                })
                .clicked()
            {
                if !store.race_playing && store.race_clock_ms >= end {
                    store.race_clock_ms = 0.0;
                }
                store.race_playing = !store.race_playing;
            }
            let mut ms = store.race_clock_ms;
            if ui
                .add(egui::Slider::new(&mut ms, 0.0..=end.max(1.0)).text("ms (shared clock)"))
                .changed()
            {
                store.race_clock_ms = ms;
                store.race_playing = false;
            }
        }
        match speedup(store) {
            Some(s) => ui.strong(format!("diffusion speedup ×{s:.2} (tokens/s)")),
            None => ui.weak("speedup: when both have finished"),
        };
    });
    if let Some(q) = quality(store) {
        ui.label(q);
    }
    ui.separator();
    let clock = store.race_clock_ms;
    let [ar_cache, diff_cache] = &mut store.race_canvas;
    ui.columns(2, |cols| {
        lane(
            &mut cols[0],
            "autoregressive (block 1, 1 step)",
            &store.race_ar,
            ar_cache,
            clock,
            mode,
        );
        lane(
            &mut cols[1],
            "diffusion (current settings)",
            &store.race_diffusion,
            diff_cache,
            clock,
            mode,
        );
    });
}
