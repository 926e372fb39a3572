//! SIGINT / SIGTERM for the headless commands: the first sets the cancel flag the sampler checks
//! before every step, so the run ends within one step and its trace is saved, complete, with the
//! finish reason `cancelled`; a second ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

static CANCEL: AtomicBool = AtomicBool::new(false);

/// Exit status after a cancelled run (128 + SIGINT, the shell's convention).
pub const CANCELLED_EXIT: i32 = 130;

/// The flag the signal handler sets; installs the handler on first use.
pub fn cancel_flag() -> &'static AtomicBool {
    install();
    &CANCEL
}

#[cfg(unix)]
fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn on_signal(_: libc::c_int) {
        // Only async-signal-safe work here: an atomic swap, and _exit on the second signal.
        if CANCEL.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit is async-signal-safe and takes no pointers.
            unsafe { libc::_exit(CANCELLED_EXIT) };
        }
    }
    ONCE.call_once(|| {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        // SAFETY: the handler touches only an atomic and calls _exit; both are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
            libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
        }
    });
}

#[cfg(not(unix))]
fn install() {}

/// Whether a signal asked the run to stop.
pub fn cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed)
}
