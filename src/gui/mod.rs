//! The playground window: an eframe app, one file per panel or view. Views draw what the store
//! holds at the timeline cursor; the engine feeds the store through a channel.

mod app;
pub mod canvas;
pub mod colors;
pub mod commit_map;
mod controls;
mod explain;
mod files;
mod highlight;
mod metrics;
mod output;
mod race;
pub mod settings;
pub mod store;
mod timeline;

pub use app::PlaygroundApp;

/// Opens the window on `model` (a folder or `embedded`), optionally with a trace loaded.
pub fn run(model: String, trace: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("unmask")
            .with_inner_size([1500.0, 920.0])
            .with_min_inner_size([900.0, 560.0]),
        ..Default::default()
    };
    eframe::run_native(
        "unmask",
        options,
        Box::new(move |cc| Ok(Box::new(PlaygroundApp::new(cc, &model, trace)))),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}
