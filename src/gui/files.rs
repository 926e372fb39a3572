//! Reading and writing what the window shows: traces and PNG exports. Every write goes through
//! [`crate::atomic`], so a crash never leaves half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::trace::Trace;

/// Reads a trace for the window; the message names the file and the line that failed.
pub fn open_trace(path: &Path) -> Result<Trace, String> {
    Trace::load(path).map_err(|e| format!("Could not open trace: {e}"))
}

/// Reads two traces to diff; the error names the file that failed, or both files when they are
/// runs of different prompts.
pub fn open_pair(a: &Path, b: &Path) -> Result<(Trace, Trace), String> {
    let (ta, tb) = (open_trace(a)?, open_trace(b)?);
    crate::fork::comparable(&ta, &a.display().to_string(), &tb, &b.display().to_string())?;
    Ok((ta, tb))
}

pub fn save_trace(trace: &Trace, path: &Path) -> Result<(), String> {
    trace
        .save(path)
        .map_err(|e| format!("Could not save trace: {e}"))
}

/// Writes a PNG atomically.
pub fn save_png(img: &image::RgbaImage, path: &Path) -> Result<(), String> {
    crate::atomic::write(path, |f| {
        let mut w = std::io::BufWriter::new(f.as_file_mut());
        img.write_to(&mut w, image::ImageFormat::Png)
            .map_err(std::io::Error::other)?;
        w.flush()
    })
    .map_err(|e| format!("Could not write {e}"))
}

/// Writes the decoding as an animated PNG, atomically like the other exports.
pub fn save_apng(
    sheet: &super::canvas::GlyphSheet,
    trace: &Trace,
    mode: super::colors::ColorMode,
    steps_per_second: f32,
    path: &Path,
) -> Result<(), String> {
    crate::atomic::write(path, |f| {
        let mut w = std::io::BufWriter::new(f.as_file_mut());
        super::canvas::write_apng(sheet, trace, mode, steps_per_second, &mut w)
            .map_err(std::io::Error::other)?;
        w.flush()
    })
    .map_err(|e| format!("Could not write {e}"))
}

/// Native dialogs; `None` when the user cancels.
pub fn pick_open_trace() -> Option<PathBuf> {
    rfd::FileDialog::new()
        .add_filter("unmask trace", &["jsonl", "json"])
        .pick_file()
}

/// The dialog for one of the two traces to diff.
pub fn pick_trace_titled(title: &str) -> Option<PathBuf> {
    rfd::FileDialog::new()
        .set_title(title)
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
