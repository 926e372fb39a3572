//! A fixed team of threads for the parallel parts of one forward (the products' panels, the
//! attention's heads), handed out with atomics instead of a work-stealing pool's sleep and wake.
//!
//! Why: a forward of the embedded model is 1.5–5 ms made of ~30 parallel regions of 20–300 µs.
//! Under rayon, a worker that finds no work yields and then sleeps on a futex; waking it for the
//! next region costs a context switch (and, in a VM, an inter-processor interrupt). A profile of
//! block-8 decoding had 17% of its samples in the scheduler and the forward used 1.66 of 2 CPUs.
//! Here the helpers spin between regions for a short while ([`SPIN`]) and park only when no work
//! comes, so consecutive regions of a forward start without a system call.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks: longer than the gaps inside a forward, shorter
/// than a window frame (a decoder between runs must not hold a core).
const SPIN: Duration = Duration::from_micros(200);

/// The job of one region: `f(part)` for every part.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per region; helpers wait for it to change.
    epoch: AtomicU64,
    /// The region's job (a pointer to the caller's `Job`, valid while the region runs).
    job: UnsafeCell<*const Job<'static>>,
    /// Next part to hand out, tagged with the region's epoch in the high 32 bits, so that a
    /// helper that wakes late can never take a part of a later region with an earlier job.
    claim: AtomicU64,
    parts: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Per helper: parked (or about to park), so the caller must unpark it.
    asleep: Vec<AtomicBool>,
}

// SAFETY: `job` is written only by the caller between regions, when no helper can claim a part
// (see `Team::run`), and read by helpers only after a successful claim of the current region.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A caller thread plus `threads − 1` helpers.
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<(Thread, JoinHandle<()>)>,
    /// One region at a time (the caller's thread runs parts too).
    busy: std::sync::Mutex<()>,
}

const INDEX_BITS: u32 = 32;

fn tag(epoch: u64, index: usize) -> u64 {
    (epoch << INDEX_BITS) | index as u64
}

impl Team {
    /// A team of `threads` (at least 1: the caller alone).
    pub fn new(threads: usize, name: &str) -> std::io::Result<Self> {
        let helpers_n = threads.max(1) - 1;
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: UnsafeCell::new(std::ptr::null()),
            claim: AtomicU64::new(0),
            parts: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            asleep: (0..helpers_n).map(|_| AtomicBool::new(false)).collect(),
        });
        let mut helpers = Vec::with_capacity(helpers_n);
        for h in 0..helpers_n {
            let s = Arc::clone(&shared);
            let handle = thread::Builder::new()
                .name(format!("{name}-{}", h + 1))
                .spawn(move || helper(&s, h))?;
            helpers.push((handle.thread().clone(), handle));
        }
        Ok(Team {
            shared,
            helpers,
            busy: std::sync::Mutex::new(()),
        })
    }

    /// Threads, the caller included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(part)` for every part in `0..parts` on the team, the calling thread included, and
    /// returns when all are done. A part that panics makes this panic after the others finish.
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        if parts == 0 {
            return;
        }
        if parts == 1 || self.helpers.is_empty() {
            (0..parts).for_each(f);
            return;
        }
        let _one = self
            .busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let s = &*self.shared;
        let job: Job<'_> = f;
        let epoch = s.epoch.load(SeqCst) + 1;
        // SAFETY: the previous region is complete (every claimed part finished before `run`
        // returned) and its claim counter is exhausted, so no helper reads `job` now; the
        // lifetime is erased only for the duration of this region, which ends before `f` does.
        unsafe {
            *s.job.get() = &job as *const Job<'_> as *const Job<'static>;
        }
        s.parts.store(parts, SeqCst);
        s.done.store(0, SeqCst);
        s.claim.store(tag(epoch, 0), SeqCst);
        s.epoch.store(epoch, SeqCst);
        for (h, (thread, _)) in self.helpers.iter().enumerate() {
            if s.asleep[h].load(SeqCst) {
                thread.unpark();
            }
        }
        work(s, epoch);
        while s.done.load(SeqCst) < parts {
            std::hint::spin_loop();
        }
        if s.panicked.swap(false, SeqCst) {
            panic!("a part of a parallel region panicked");
        }
    }
}

/// Claims and runs parts of region `epoch` until none are left.
fn work(s: &Shared, epoch: u64) {
    let parts = s.parts.load(SeqCst);
    loop {
        let cur = s.claim.load(SeqCst);
        let index = (cur & ((1 << INDEX_BITS) - 1)) as usize;
        if cur >> INDEX_BITS != epoch || index >= parts {
            return;
        }
        if s.claim
            .compare_exchange(cur, cur + 1, SeqCst, SeqCst)
            .is_err()
        {
            continue;
        }
        // SAFETY: the claim succeeded, so region `epoch` is still running and `job` is its
        // job, alive until every part (this one included) is done.
        let job: Job<'_> = unsafe { **s.job.get() };
        if catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
            s.panicked.store(true, SeqCst);
        }
        s.done.fetch_add(1, SeqCst);
    }
}

fn helper(s: &Shared, h: usize) {
    let mut seen = s.epoch.load(SeqCst);
    loop {
        let idle = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(SeqCst) {
                return;
            }
            let e = s.epoch.load(SeqCst);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && idle.elapsed() > SPIN {
                // Park; the caller unparks us after publishing the next region. Checking the
                // epoch again after announcing sleep closes the window in between.
                s.asleep[h].store(true, SeqCst);
                if s.epoch.load(SeqCst) == seen && !s.stop.load(SeqCst) {
                    thread::park();
                }
                s.asleep[h].store(false, SeqCst);
            } else {
                std::hint::spin_loop();
            }
        }
        work(s, seen);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        for (thread, handle) in self.helpers.drain(..) {
            thread.unpark();
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_once_in_every_region() {
        for threads in [1, 2, 3] {
            let team = Team::new(threads, "test-team").unwrap();
            for parts in [0usize, 1, 2, 5, 64] {
                for _ in 0..200 {
                    let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                    team.run(parts, &|i| {
                        hits[i].fetch_add(1, SeqCst);
                    });
                    assert!(hits.iter().all(|h| h.load(SeqCst) == 1));
                }
            }
        }
    }

    #[test]
    fn helpers_wake_after_parking() {
        let team = Team::new(2, "test-team").unwrap();
        let sum = AtomicUsize::new(0);
        for round in 0..3 {
            // Longer than the spin budget: the helper parks between regions.
            thread::sleep(SPIN * 3);
            team.run(4, &|i| {
                sum.fetch_add(i + round, SeqCst);
            });
        }
        assert_eq!(sum.load(SeqCst), 3 * 6 + 4 * 3);
    }

    #[test]
    fn a_panicking_part_is_reported_and_the_team_still_works() {
        let team = Team::new(2, "test-team").unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.run(8, &|i| assert!(i != 5, "part five"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        team.run(8, &|_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 8);
    }
}
