//! The playground window.

/// Opens the window on `model` (a folder or `embedded`), optionally with a trace loaded.
pub fn run(model: String, trace: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let _ = (model, trace);
    anyhow::bail!("the window is not built yet")
}
