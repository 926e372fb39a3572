//! On a CPU-rendered display the window's drawing yields to the decoding the user is watching.
//!
//! With no GPU, wgpu runs on Mesa's lavapipe, whose llvmpipe rasterizer threads (named
//! `llvmpipe-N`) live inside this process and shade every pixel of every frame on the same cores
//! as the decoder. Measured on a 2-core machine, they took about as much CPU as the decoder's own
//! threads and the live run fell to 30–65% of headless speed. Giving those threads a higher nice
//! value lets the decoder take the CPUs first; frames are still drawn, in the time the decoder
//! leaves (between forwards, and on every core it does not use).
//!
//! Only the rasterizer threads are lowered. The UI thread keeps its priority: it is cheap (a few
//! percent of a run), and every thread it creates later (model loads, the decoder and its thread
//! pool) inherits its nice value, which an unprivileged process could not lower again. On a GPU
//! the adapter is not a CPU one and no thread of this name exists, so nothing changes there.

/// Nice value given to the software rasterizer's threads. Measured with nice 10, 19 and
/// `SCHED_IDLE` (docs/benchmarks.md, "The window"): 10 let the decoder run at headless speed while
/// still drawing frames during the run.
pub const RENDER_NICE: i32 = 10;

/// Whether a thread of this name is one of Mesa's software rasterizer threads.
pub fn is_software_rasterizer(name: &str) -> bool {
    name.strip_prefix("llvmpipe-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Thread ids and names of this process's threads whose name passes `keep`.
#[cfg(target_os = "linux")]
pub fn own_threads(keep: impl Fn(&str) -> bool) -> std::io::Result<Vec<(i32, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A thread may end between the listing and the read; it no longer matters then.
        let Ok(name) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let name = name.trim_end_matches('\n');
        if keep(name) {
            out.push((tid, name.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// Nice value of one thread of this process.
#[cfg(target_os = "linux")]
pub fn thread_nice(tid: i32) -> std::io::Result<i32> {
    // getpriority may return -1 as a value, so errno tells an error apart.
    // SAFETY: plain syscalls on integers; errno is this thread's own.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if n == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n)
    }
}

/// Raises the nice value of the software rasterizer's threads to at least `nice` (never lowers
/// one that is already higher). Returns the ids of the threads now at or above it.
#[cfg(target_os = "linux")]
pub fn lower_rasterizer_threads(nice: i32) -> std::io::Result<Vec<i32>> {
    let mut lowered = Vec::new();
    for (tid, _) in own_threads(is_software_rasterizer)? {
        let Ok(now) = thread_nice(tid) else { continue };
        if now >= nice {
            lowered.push(tid);
            continue;
        }
        // On Linux PRIO_PROCESS with a thread id sets that one thread's nice value. Raising it
        // needs no privilege.
        // SAFETY: a syscall on integers.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } == 0 {
            lowered.push(tid);
        } else {
            let e = std::io::Error::last_os_error();
            // ESRCH: the thread ended in between.
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
    }
    Ok(lowered)
}

/// CPU time (user + system) the software rasterizer's threads have used so far: what the window's
/// drawing costs on a CPU-rendered display, beyond the UI thread's own time. Zero on a GPU.
#[cfg(target_os = "linux")]
pub fn rasterizer_cpu() -> std::time::Duration {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return std::time::Duration::ZERO;
    }
    let Ok(threads) = own_threads(is_software_rasterizer) else {
        return std::time::Duration::ZERO;
    };
    let total: u64 = threads
        .iter()
        .filter_map(|(tid, _)| std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok())
        .filter_map(|s| stat_cpu_ticks(&s))
        .sum();
    std::time::Duration::from_secs_f64(total as f64 / ticks as f64)
}

/// Elsewhere there is no lavapipe thread to find.
#[cfg(not(target_os = "linux"))]
pub fn rasterizer_cpu() -> std::time::Duration {
    std::time::Duration::ZERO
}

/// utime + stime (clock ticks) from a `/proc/…/stat` line. The name field may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // After the name: state is field 3 of the line; utime and stime are fields 14 and 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Elsewhere there is no lavapipe thread to find.
#[cfg(not(target_os = "linux"))]
pub fn lower_rasterizer_threads(_nice: i32) -> std::io::Result<Vec<i32>> {
    Ok(Vec::new())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn cpu_ticks_from_a_stat_line() {
        // A name with a space and a parenthesis, as a thread may have.
        let line = "4242 (llvm pipe) x) S 1 2 3 4 5 6 7 8 9 10 125 17 0 0 20 0 9 0 100";
        assert_eq!(stat_cpu_ticks(line), Some(142));
        assert_eq!(stat_cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("no name field"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(stat_cpu_ticks(&own).is_some(), "{own}");
    }

    #[test]
    fn names_of_the_rasterizer_threads() {
        assert!(is_software_rasterizer("llvmpipe-0"));
        assert!(is_software_rasterizer("llvmpipe-15"));
        assert!(!is_software_rasterizer("llvmpipe-"));
        assert!(!is_software_rasterizer("llvmpipe-x"));
        assert!(!is_software_rasterizer("unmask-forward-"));
        assert!(!is_software_rasterizer("unmask-engine"));
    }

    #[test]
    fn only_the_rasterizer_threads_are_lowered() {
        let me = thread_nice(0).unwrap();
        // A stand-in rasterizer thread (Mesa's name) and a decoder-like thread: each reports its
        // id, waits until the helper has run, then reports its own nice value.
        let spawn = |name: &str| {
            let (id_tx, id_rx) = mpsc::channel::<i32>();
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let h = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    // SAFETY: gettid has no arguments and cannot fail.
                    id_tx.send(unsafe { libc::gettid() }).unwrap();
                    go_rx.recv().unwrap();
                    thread_nice(0).unwrap()
                })
                .unwrap();
            (id_rx.recv().unwrap(), go_tx, h)
        };
        let (rast_id, rast_go, rast) = spawn("llvmpipe-7");
        let (other_id, other_go, other) = spawn("unmask-forward-0");
        // Under `nice -n 19` every thread is already at the ceiling; the selection is still checked.
        let target = (me + 5).min(19);
        let lowered = lower_rasterizer_threads(target).unwrap();
        assert!(lowered.contains(&rast_id), "{lowered:?} lacks {rast_id}");
        assert!(
            !lowered.contains(&other_id),
            "{lowered:?} has the other thread"
        );
        rast_go.send(()).unwrap();
        other_go.send(()).unwrap();
        assert_eq!(rast.join().unwrap(), target);
        assert_eq!(
            other.join().unwrap(),
            me,
            "other threads keep their priority"
        );
        assert_eq!(
            thread_nice(0).unwrap(),
            me,
            "the calling thread keeps its priority"
        );
    }
}
