//! The one way this program writes a file it may be asked to read back: into a temporary file
//! beside the target, flushed to disk, renamed over the target, and the folder flushed too. A
//! crash or a full disk leaves either the old file or the new one, never half of one.

use std::io::Write;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// Writes `path` atomically (a regular file, or a new one); `fill` writes the contents into the temporary file (through
/// `as_file_mut()`, or by its `path()` for writers that only take a path). On any error the
/// temporary file is removed and `path` is left as it was.
pub fn write(
    path: &Path,
    fill: impl FnOnce(&mut NamedTempFile) -> std::io::Result<()>,
) -> Result<()> {
    let dir = folder_of(path);
    let io = |e: std::io::Error| Error::io(path, e);
    // The rename would replace a symlink, FIFO or device with a plain file: refuse instead.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_file() {
            return Err(io(std::io::Error::other(format!(
                "is {}, not a regular file; refusing to replace it (give another path)",
                crate::input::kind(&meta)
            ))));
        }
    }
    let mut builder = tempfile::Builder::new();
    // A temporary file is private (0600) by default; the file it becomes gets the permissions a
    // plain `File::create` would give (0666 less the umask), so a checkpoint or report written
    // here reads like any other file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    fill(&mut tmp).map_err(io)?;
    // Writers that went by path wrote through another handle; sync_all reaches the same inode.
    tmp.as_file_mut().flush().map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    sync_folder(dir).map_err(io)
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write(path, |f| f.write_all(bytes))
}

/// Writes `value` to `path` atomically as pretty JSON with a final newline (the reports of
/// `bench --json`, `eval --json`, `gui --report`, and checkpoint side files).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| Error::Parse {
        file: path.to_path_buf(),
        problem: format!("cannot be written as JSON: {e}"),
    })?;
    text.push('\n');
    write_bytes(path, text.as_bytes())
}

/// The folder a file lives in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Makes a rename in `dir` durable: the new name is in the folder's own data only once the
/// folder is flushed. Windows has no handle on a folder to flush; its rename is durable enough.
#[cfg(unix)]
fn sync_folder(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_folder(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes(&p, b"first").unwrap();
        // A reader that opened the old file keeps reading it whole: the new one is renamed in,
        // never written over the old one in place.
        let mut reader = std::fs::File::open(&p).unwrap();
        write_bytes(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let mut old = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut old).unwrap();
        assert_eq!(old, b"first");
        let err = write(&p, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("a.txt") && err.contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn permissions_as_a_plain_create_gives() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let p = dir.path().join("atomic");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&plain));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}\n");
    }

    #[test]
    fn path_writers_land_too() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.bin");
        write(&p, |f| std::fs::write(f.path(), b"by path")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"by path");
    }
}
