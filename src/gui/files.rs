//! Reading and writing what the window shows: traces and PNG exports. Every write goes to a
//! temporary file beside the target and is renamed over it, so a crash never leaves half a file.

use std::path::{Path, PathBuf};

use crate::trace::Trace;

/// Reads a trace for the window; the message names the file and the line that failed.
pub fn open_trace(path: &Path) -> Result<Trace, String> {
    Trace::load(path).map_err(|e| format!("Could not open trace: {e}"))
}

pub fn save_trace(trace: &Trace, path: &Path) -> Result<(), String> {
    trace
        .save(path)
        .map_err(|e| format!("Could not save trace: {e}"))
}

/// Writes a PNG atomically.
pub fn save_png(img: &image::RgbaImage, path: &Path) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("export.png");
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}.png", std::process::id()));
    let fail = |e: String| {
        let _ = std::fs::remove_file(&tmp);
        format!("Could not write {}: {e}", path.display())
    };
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Writes the decoding as an animated PNG, atomically like the other exports.
pub fn save_apng(
    sheet: &super::canvas::GlyphSheet,
    trace: &Trace,
    mode: super::colors::ColorMode,
    fps: u16,
    path: &Path,
) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("decoding.png");
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}.png", std::process::id()));
    let fail = |e: String| {
        let _ = std::fs::remove_file(&tmp);
        format!("Could not write {}: {e}", path.display())
    };
    let f = std::fs::File::create(&tmp).map_err(|e| fail(e.to_string()))?;
    let mut w = std::io::BufWriter::new(f);
    super::canvas::write_apng(sheet, trace, mode, fps, &mut w).map_err(fail)?;
    let f = w.into_inner().map_err(|e| fail(e.to_string()))?;
    f.sync_all().map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Native dialogs; `None` when the user cancels.
pub fn pick_open_trace() -> Option<PathBuf> {
    rfd::FileDialog::new()
        .add_filter("unmask trace", &["jsonl", "json"])
        .pick_file()
}

pub fn pick_save(default_name: &str, ext: &str) -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_file_name(default_name)
        .add_filter(ext, &[ext])
        .save_file()
}

pub fn pick_model_folder() -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_title("Open a checkpoint folder")
        .pick_folder()
}
