//! Speed figures of the main run.

use super::store::Store;

pub fn show(ui: &mut egui::Ui, store: &Store) {
    let Some(m) = store.metrics() else {
        ui.weak("no run yet");
        return;
    };
    let masks_left = store.trace().and_then(|t| {
        let last = t.events.get(store.cursor.checked_sub(1)?)?;
        Some(last.masks_left)
    });
    let masks_left = masks_left
        .or_else(|| store.trace().map(|t| t.header.gen_end - t.header.gen_start))
        .unwrap_or(0);
    // Columns at least as wide as their widest value: a grid whose column widths change asks for
    // another frame at once, and live figures change width at every step (a second frame per
    // frame, at lavapipe's cost, while the decoder runs).
    egui::Grid::new("metrics")
        .num_columns(2)
        .min_col_width(110.0)
        .striped(true)
        .show(ui, |ui| {
            let mut row = |k: &str, v: String| {
                ui.label(k);
                ui.monospace(v);
                ui.end_row();
            };
            row("tokens/s", format!("{:.1}", m.tokens_per_second()));
            row("forwards (NFE)", m.forwards.to_string());
            row(
                "tokens per forward",
                format!("{:.2}", m.tokens_per_forward()),
            );
            row("time per step", format!("{:.1} ms", m.ms_per_step()));
            row(
                "time to first block",
                if m.first_block_ms > 0.0 {
                    format!("{:.0} ms", m.first_block_ms)
                } else {
                    "–".into()
                },
            );
            row("total time", format!("{:.0} ms", m.total_ms));
            row("tokens", m.tokens.to_string());
            row("masks left", masks_left.to_string());
        });
}
