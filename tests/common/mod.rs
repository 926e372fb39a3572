//! Helpers the integration tests share: the fixtures folder and the built binary.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The built `unmask` binary, ready for arguments.
pub fn unmask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_unmask"))
}

/// Runs `cmd` to the end: whether it succeeded, its stdout and its stderr.
pub fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("running unmask");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
