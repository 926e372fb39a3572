//! The playground window: an eframe app, one file per panel or view. Views draw what the store
//! holds at the timeline cursor; the engine feeds the store through a channel.

mod app;
pub mod canvas;
pub mod colors;
pub mod commit_map;
mod compare;
mod controls;
pub mod explain;
mod files;
pub mod highlight;
mod jobs;
mod metrics;
mod output;
pub mod pacing;
pub mod race;
pub mod render_priority;
pub mod report;
pub mod settings;
pub mod store;
mod timeline;

pub use app::{apply_args, Launch, PlaygroundApp};

/// Opens the window with the command line's model, settings and launch actions.
pub fn run(mut args: crate::cli::GuiArgs) -> anyhow::Result<()> {
    if args.model != "embedded" {
        // Presets and hub ids are fetched here, with progress on the terminal, not in a frame.
        let folder = crate::cli::download::resolve(&args.model, crate::hub::Need::Weights)?;
        args.model = folder.display().to_string();
    }
    if let Some(t) = &args.trace {
        if !t.exists() {
            anyhow::bail!("--trace {}: no such file", t.display());
        }
    }
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
        Box::new(move |cc| Ok(Box::new(PlaygroundApp::new(cc, &args)))),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))?;
    if app::LAUNCH_FAILED.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!("the --run decoding failed (see above)");
    }
    Ok(())
}
