//! The timeline: play, pause, step, scrub and playback speed over the main trace.

use super::store::Store;

/// Applies the timeline's keys (Space, ←/→, Home/End) unless a text field has the keyboard.
pub fn keys(ctx: &egui::Context, store: &mut Store) {
    if ctx.text_edit_focused() {
        return;
    }
    let (space, left, right, home, end) = ctx.input_mut(|i| {
        let none = egui::Modifiers::NONE;
        (
            i.consume_key(none, egui::Key::Space),
            i.consume_key(none, egui::Key::ArrowLeft),
            i.consume_key(none, egui::Key::ArrowRight),
            i.consume_key(none, egui::Key::Home),
            i.consume_key(none, egui::Key::End),
        )
    });
    if space {
        store.toggle_play();
    }
    if left {
        store.playing = false;
        store.set_cursor(store.cursor.saturating_sub(1));
    }
    if right {
        store.playing = false;
        store.set_cursor(store.cursor + 1);
    }
    if home {
        store.playing = false;
        store.set_cursor(0);
    }
    if end {
        store.playing = false;
        store.set_cursor(store.len());
    }
}

pub fn show(ui: &mut egui::Ui, store: &mut Store) {
    let len = store.len();
    ui.horizontal(|ui| {
        if ui.button("|<").on_hover_text("first step (Home)").clicked() {
            store.set_cursor(0);
        }
        if ui
            .button("<")
            .on_hover_text("step back (left arrow)")
            .clicked()
        {
            store.playing = false;
            store.set_cursor(store.cursor.saturating_sub(1));
        }
        let label = if store.playing { "Pause" } else { "Play" };
        if ui
            .button(label)
            .on_hover_text("play / pause (Space)")
            .clicked()
        {
            store.toggle_play();
        }
        if ui
            .button(">")
            .on_hover_text("step forward (right arrow)")
            .clicked()
        {
            store.playing = false;
            store.set_cursor(store.cursor + 1);
        }
        if ui.button(">|").on_hover_text("last step (End)").clicked() {
            store.set_cursor(len);
            store.follow = store.main.status.is_active();
        }
        let mut k = store.cursor.min(len);
        let slider = egui::Slider::new(&mut k, 0..=len.max(1))
            .text(format!("step of {len}"))
            .integer();
        let width = (ui.available_width() - 220.0).max(120.0);
        ui.spacing_mut().slider_width = width;
        if ui.add_enabled(len > 0, slider).changed() {
            store.playing = false;
            store.set_cursor(k);
        }
        ui.add(
            egui::DragValue::new(&mut store.speed)
                .range(0.5..=120.0)
                .speed(0.2)
                .suffix(" steps/s"),
        )
        .on_hover_text("playback speed");
        if store.follow && store.main.status.is_active() {
            ui.label(egui::RichText::new("LIVE").color(egui::Color32::from_rgb(230, 80, 80)));
        }
    });
}
