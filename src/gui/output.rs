//! The code written so far (or the final text), highlighted, with a Copy button.

use super::highlight;
use super::store::Store;

/// The text to show: the finish record's at the end of a finished run, else the canvas so far
/// with masks as `░`.
pub fn text(store: &mut Store) -> String {
    let at_end = store.cursor >= store.len();
    if let Some(f) = store.trace().and_then(|t| t.finish.as_ref()) {
        if at_end {
            return f.text.clone();
        }
    }
    let Some((a, b)) = store
        .trace()
        .map(|t| (t.header.gen_start, t.header.gen_end))
    else {
        return String::new();
    };
    store
        .cells()
        .get(a..b)
        .unwrap_or(&[])
        .iter()
        .map(|c| if c.masked { "░" } else { c.text.as_str() })
        .collect()
}

pub fn show(ui: &mut egui::Ui, store: &mut Store, lang: &str) {
    let code = text(store);
    ui.horizontal(|ui| {
        if ui.button("Copy").clicked() {
            ui.ctx().copy_text(code.clone());
        }
        ui.weak(format!("{} characters", code.chars().count()));
    });
    let font = egui::TextStyle::Monospace.resolve(ui.style());
    let job = highlight::cached_job(&code, lang, ui.visuals().dark_mode, font);
    egui::ScrollArea::vertical()
        .id_salt("output")
        .max_height(260.0)
        .show(ui, |ui| {
            ui.add(egui::Label::new(job).selectable(true));
        });
}
