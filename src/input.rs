//! Opening files a user names: regular files only, so a FIFO, a device (`/dev/zero`) or a
//! folder is a clear error instead of a hang or an endless read.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// What kind of file system object `meta` describes, for messages.
pub fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading after checking (without opening, which blocks on a FIFO) that it is
/// a regular file; symlinks to regular files are followed.
pub fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::other(format!("is {}, expected a regular file", kind(&meta))),
        ));
    }
    File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads a regular text file of at most `max` bytes.
pub fn read_text(path: &Path, max: u64) -> Result<String> {
    let f = open_regular(path)?;
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > max {
        return Err(Error::io(
            path,
            std::io::Error::other(format!("larger than {} MiB", max >> 20)),
        ));
    }
    Ok(text)
}
