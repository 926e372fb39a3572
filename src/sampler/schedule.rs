//! How many positions a step commits, and which.

use super::params::{Schedule, UnmaskRule};

/// Planned commits for step `step` (0-based) of `steps` in a block that has `masked` masks now.
///
/// Uniform: ⌈masked / steps_left⌉, which reproduces LLaDA's split (remainder first) when nothing
/// is re-opened and spreads re-opened positions over the remaining steps when something is.
/// Timestep: Dream's ⌊n·(1 − s/t)⌋ with t = linspace(1, 1e-3, steps+1); the last step takes all.
pub fn planned(schedule: Schedule, masked: usize, step: usize, steps: usize) -> usize {
    if masked == 0 {
        return 0;
    }
    if step + 1 >= steps {
        return masked;
    }
    match schedule {
        Schedule::Uniform => masked.div_ceil(steps - step),
        Schedule::Timestep => {
            let eps = 1e-3f64;
            let t_at = |j: usize| 1.0 - (1.0 - eps) * j as f64 / steps as f64;
            let (t, s) = (t_at(step), t_at(step + 1));
            ((masked as f64) * (1.0 - s / t)).floor() as usize
        }
    }
}

/// A masked position as the rule sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub pos: usize,
    pub score: f32,
    pub prob: f32,
}

/// Positions to commit: the `k` best by score (ties: lower position first), or for the threshold
/// rule every candidate with p(x̂) > τ and at least the best one. Never more than there are.
pub fn select(rule: UnmaskRule, candidates: &[Candidate], k: usize, threshold: f32) -> Vec<usize> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.pos.cmp(&b.pos)));
    let chosen: Vec<usize> = match rule {
        UnmaskRule::Threshold => {
            let mut v: Vec<usize> = order
                .iter()
                .filter(|c| c.prob > threshold)
                .map(|c| c.pos)
                .collect();
            if v.is_empty() {
                v.extend(order.first().map(|c| c.pos));
            }
            v
        }
        _ => order
            .iter()
            .take(k.min(candidates.len()))
            .map(|c| c.pos)
            .collect(),
    };
    let mut chosen = chosen;
    chosen.sort_unstable();
    chosen
}

/// [`select`] with `forced` positions committed whatever their score (an intervention's "commit
/// this next"): they take slots of the `k` planned and the rule fills the rest; for the threshold
/// rule they stand in for the one commit a step always makes. Forced positions that are not
/// candidates are ignored (the caller checks them).
pub fn select_forced(
    rule: UnmaskRule,
    candidates: &[Candidate],
    k: usize,
    threshold: f32,
    forced: &[usize],
) -> Vec<usize> {
    let forced: Vec<usize> = forced
        .iter()
        .copied()
        .filter(|p| candidates.iter().any(|c| c.pos == *p))
        .collect();
    if forced.is_empty() {
        return select(rule, candidates, k, threshold);
    }
    let rest: Vec<Candidate> = candidates
        .iter()
        .filter(|c| !forced.contains(&c.pos))
        .copied()
        .collect();
    let mut chosen = match rule {
        UnmaskRule::Threshold => rest
            .iter()
            .filter(|c| c.prob > threshold)
            .map(|c| c.pos)
            .collect(),
        _ => select(rule, &rest, k.saturating_sub(forced.len()), threshold),
    };
    chosen.extend(forced);
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}
