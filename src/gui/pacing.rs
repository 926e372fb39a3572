//! While a decoder runs on the CPU, the window draws within a CPU budget.
//!
//! Every frame costs CPU: the UI thread lays it out, tessellates and submits it, and on a display
//! without a GPU (lavapipe) the rasterizer threads shade every pixel in software — measured on the
//! 2-core test machine at 15–50 ms of CPU for one frame of the full window, against a decoder that
//! needs both cores. Frames at the display rate would take a large part of the machine from the
//! decoding the user is watching. So the window measures what its frames cost (the UI thread's
//! and the rasterizer's CPU time from one frame's start to the next) and, while a decoder runs on
//! the CPU, spaces its frames so that drawing uses at most [`DRAW_SHARE`] of the machine. On a
//! GPU display a frame costs the UI thread's few milliseconds and the interval stays near the
//! display rate; when nothing decodes on the CPU (idle, replay, a CUDA model) it is the display
//! rate.

use std::time::Duration;

/// Share of the machine's CPU time the window may spend drawing while a decoder runs on the CPU.
/// Chosen by measurement (docs/benchmarks.md, "The window"): the decoder loses more than the
/// frames' own CPU time, because a frame that preempts one of the forward's threads stalls its
/// partner at the next barrier too.
pub const DRAW_SHARE: f64 = 0.03;
/// The display rate: the shortest interval between frames.
pub const MIN_INTERVAL: Duration = Duration::from_millis(16);
/// However costly a frame, a live run still moves on screen at least this often.
pub const MAX_INTERVAL: Duration = Duration::from_millis(750);
/// Weight of the newest frame in the running cost estimate.
const NEW_WEIGHT: f64 = 0.3;

/// The interval between frames that keeps drawing at `share` of `cores` CPUs when one frame
/// costs `cost` of CPU time, between [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
pub fn interval_for(cost: Duration, cores: usize, share: f64) -> Duration {
    let budget = share * cores.max(1) as f64;
    if budget <= 0.0 || !budget.is_finite() {
        return MAX_INTERVAL;
    }
    Duration::from_secs_f64(cost.as_secs_f64() / budget).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Running estimate of one frame's CPU cost, from the CPU clocks read at each frame's start.
#[derive(Debug, Default)]
pub struct Pacer {
    last: Option<Duration>,
    cost: Option<f64>,
}

impl Pacer {
    /// A frame starts; `cpu` is the drawing's CPU time so far (UI thread plus rasterizer
    /// threads). The time since the previous frame's start is that frame's cost.
    pub fn frame_started(&mut self, cpu: Duration) {
        if let Some(last) = self.last {
            let spent = cpu.saturating_sub(last).as_secs_f64();
            self.cost = Some(match self.cost {
                Some(c) => c + NEW_WEIGHT * (spent - c),
                None => spent,
            });
        }
        self.last = Some(cpu);
    }

    /// CPU time one frame costs, as estimated so far.
    pub fn frame_cost(&self) -> Duration {
        Duration::from_secs_f64(self.cost.unwrap_or(0.0).max(0.0))
    }

    /// The interval between frames: the budgeted one while a decoder runs on the CPU, else the
    /// display rate.
    pub fn interval(&self, cpu_decoding: bool, cores: usize) -> Duration {
        if cpu_decoding {
            interval_for(self.frame_cost(), cores, DRAW_SHARE)
        } else {
            MIN_INTERVAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_interval_keeps_drawing_within_its_share() {
        // 50 ms frames, 2 cores, 5 %: 0.1 CPU-second per second buys a frame every 500 ms.
        assert_eq!(interval_for(ms(50), 2, 0.05), ms(500));
        // Cheap frames are drawn at the display rate, never faster.
        assert_eq!(interval_for(ms(1), 2, 0.05), MIN_INTERVAL);
        assert_eq!(interval_for(Duration::ZERO, 8, 0.05), MIN_INTERVAL);
        // Very costly frames still come at least every MAX_INTERVAL.
        assert_eq!(interval_for(ms(400), 2, 0.05), MAX_INTERVAL);
        // More cores, more frames for the same cost.
        assert!(interval_for(ms(50), 16, 0.05) < interval_for(ms(50), 2, 0.05));
        // No cores counts as one; a nonsensical share does not divide by zero.
        assert_eq!(interval_for(ms(20), 0, 0.05), ms(400));
        assert_eq!(interval_for(ms(50), 2, 0.0), MAX_INTERVAL);
        assert_eq!(interval_for(ms(50), 2, f64::NAN), MAX_INTERVAL);
    }

    #[test]
    fn the_pacer_follows_what_frames_cost() {
        let mut p = Pacer::default();
        assert_eq!(p.frame_cost(), Duration::ZERO);
        assert_eq!(p.interval(true, 2), MIN_INTERVAL, "nothing measured yet");
        p.frame_started(ms(1000));
        p.frame_started(ms(1012));
        assert_eq!(p.frame_cost(), ms(12));
        assert_eq!(p.interval(true, 2), interval_for(ms(12), 2, DRAW_SHARE));
        assert!(p.interval(true, 2) > MIN_INTERVAL);
        assert_eq!(
            p.interval(false, 2),
            MIN_INTERVAL,
            "no CPU decoder: display rate"
        );
        // Cheaper frames pull the estimate down gradually, not at once.
        p.frame_started(ms(1014));
        let c = p.frame_cost();
        assert!(c < ms(12) && c > ms(2), "{c:?}");
        for i in 0..40 {
            p.frame_started(ms(1014 + 4 * (i + 1)));
        }
        let c = p.frame_cost().as_secs_f64();
        assert!((c - 0.004).abs() < 1e-4, "{c}");
        // A clock that goes backwards (threads ended) counts as a free frame, not a negative one.
        p.frame_started(ms(5));
        assert!(p.frame_cost() <= ms(4));
    }
}
