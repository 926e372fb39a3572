//! Device memory while a benchmark runs: GPU memory sampled from `nvidia-smi` on a thread (it
//! has no peak counter), or the process's peak resident set on CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// GPU memory in use on device `ordinal` per `nvidia-smi` (whole device, all processes).
pub(super) fn gpu_memory_mib(ordinal: usize) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            "-i",
            &ordinal.to_string(),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The process's peak resident set (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples GPU memory every 100 ms on a thread while a run goes (nvidia-smi has no peak counter).
pub(super) struct MemoryWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Option<f64>>>,
}

impl MemoryWatcher {
    pub(super) fn start(gpu: Option<usize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = gpu.map(|ordinal| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak: Option<f64> = None;
                loop {
                    if let Some(m) = gpu_memory_mib(ordinal) {
                        peak = Some(peak.map_or(m, |p: f64| p.max(m)));
                    }
                    if stop.load(Ordering::Relaxed) {
                        return peak;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        });
        MemoryWatcher { stop, handle }
    }

    pub(super) fn stop(self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle {
            Some(h) => h.join().ok().flatten(),
            None => peak_rss_mib(),
        }
    }
}
