//! The race: the same prompt decoded autoregressively and with the current diffusion settings,
//! replayed side by side on one clock taken from each step's `elapsed_ms`.

use super::canvas::{self, CanvasView};
use super::colors::ColorMode;
use super::store::{self, LaneRun, RunStatus, Store};

/// Total-time ratio AR / diffusion, once both have finished.
pub fn speedup(store: &Store) -> Option<f64> {
    let done = |l: &LaneRun| matches!(l.status, RunStatus::Finished(_));
    if !done(&store.race_ar) || !done(&store.race_diffusion) {
        return None;
    }
    let (a, d) = (
        store::race_end_ms(&store.race_ar),
        store::race_end_ms(&store.race_diffusion),
    );
    (d > 0.0).then(|| a / d)
}

fn lane(ui: &mut egui::Ui, title: &str, l: &LaneRun, clock_ms: f64, mode: ColorMode) {
    ui.heading(title);
    let Some(t) = &l.trace else {
        ui.weak(match &l.status {
            RunStatus::Queued => "waiting for the engine…".to_string(),
            RunStatus::Failed(e) => format!("failed: {e}"),
            _ => "not started".to_string(),
        });
        return;
    };
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
    if let RunStatus::Failed(e) = &l.status {
        ui.colored_label(egui::Color32::RED, e);
    }
    let cells = t.cells_at(k);
    let v = CanvasView {
        trace: t,
        cells: &cells,
        cursor: k,
        mode,
        hover: None,
        font_size: 11.0,
    };
    egui::ScrollArea::vertical().id_salt(title).show(ui, |ui| {
        canvas::show(ui, &v);
    });
}

/// The race view; the Race button in the controls starts a race.
pub fn show(ui: &mut egui::Ui, store: &mut Store, mode: ColorMode) {
    ui.horizontal(|ui| {
        let end = store::race_end_ms(&store.race_ar).max(store::race_end_ms(&store.race_diffusion));
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
        match speedup(store) {
            Some(s) => ui.strong(format!("diffusion speedup ×{s:.2}")),
            None => ui.weak("speedup: when both have finished"),
        };
    });
    ui.separator();
    let clock = store.race_clock_ms;
    ui.columns(2, |cols| {
        lane(
            &mut cols[0],
            "autoregressive (block 1, 1 step)",
            &store.race_ar,
            clock,
            mode,
        );
        lane(
            &mut cols[1],
            "diffusion (current settings)",
            &store.race_diffusion,
            clock,
            mode,
        );
    });
}
