//! Turning one position's logits into a proposed token and the scores every rule ranks on.
//!
//! Filter order: temperature → top-k → top-p (SDAR's order). With temperature 0 the token is the
//! argmax (lowest id on ties) and probabilities are the plain softmax, filtered the same way.
//! Scores come from the filtered distribution (as Dream and SDAR do).

use rand::Rng;

use super::params::{SamplerParams, UnmaskRule};

/// A proposal for one masked position.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub token: u32,
    /// p(x̂) under the filtered distribution.
    pub prob: f32,
    /// p₁ − p₂.
    pub margin: f32,
    /// Σ p log p (≤ 0; higher = more confident).
    pub neg_entropy: f32,
    /// The five most likely tokens and their probabilities.
    pub top: Vec<(u32, f32)>,
}

/// Softmax of `logits / t` with top-k / top-p filtering; returns probabilities (zeros where
/// filtered) in f32, computed in f64 for stability.
pub fn filtered_probs(logits: &[f32], temperature: f32, top_k: usize, top_p: f32) -> Vec<f32> {
    let t = if temperature > 0.0 {
        temperature as f64
    } else {
        1.0
    };
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<f64> = logits
        .iter()
        .map(|&l| {
            if l == f32::NEG_INFINITY {
                0.0
            } else {
                ((l as f64 - max) / t).exp()
            }
        })
        .collect();
    let sum: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= sum);
    let filter_k = top_k > 0 && top_k < p.len();
    let filter_p = top_p < 1.0;
    if filter_k || filter_p {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let mut keep = if filter_k { top_k } else { p.len() };
        if filter_p {
            // Keep the smallest prefix whose mass reaches top_p (the first token always stays).
            let mut acc = 0.0;
            for (i, &idx) in order.iter().enumerate().take(keep) {
                acc += p[idx];
                if acc >= top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        let mut kept = vec![0.0; p.len()];
        for &idx in &order[..keep] {
            kept[idx] = p[idx];
        }
        let s: f64 = kept.iter().sum();
        kept.iter_mut().for_each(|x| *x /= s);
        p = kept;
    }
    p.into_iter().map(|x| x as f32).collect()
}

/// Index and value of the largest entry; the lowest index wins ties.
pub fn argmax(xs: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &x) in xs.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

/// The `n` largest entries, by value descending then index ascending.
pub fn top_n(xs: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    for (i, &x) in xs.iter().enumerate() {
        if top.len() < n || x > top[top.len() - 1].1 {
            let at = top.partition_point(|&(_, v)| v >= x);
            top.insert(at, (i as u32, x));
            top.truncate(n);
        }
    }
    top
}

/// Proposes a token for one position. Draws from `rng` only when temperature > 0. The mask id
/// is never proposed (a trained model gives it ~0 probability; random test weights might not),
/// but it stays in the distribution the scores are computed from, as in the references.
///
/// Cost: comparisons over the vocabulary plus exponentials only for the tokens that survive
/// top-k / top-p (found by partial selection, see [`nucleus`]); no sort and no f64 pass over the
/// vocabulary unless sampling without filters. Same result as [`propose_reference`].
pub fn propose(
    logits: &[f32],
    params: &SamplerParams,
    mask: u32,
    stats: Option<super::denoiser::RowStats>,
    rng: &mut impl Rng,
) -> Proposal {
    if logits.is_empty() {
        return Proposal {
            token: mask,
            prob: 0.0,
            margin: 0.0,
            neg_entropy: 0.0,
            top: Vec::new(),
        };
    }
    let filter_k = params.top_k > 0 && params.top_k < logits.len();
    let filter_p = params.top_p < 1.0;
    if params.temperature <= 0.0 && !filter_k && !filter_p {
        if let Some(st) = stats {
            return greedy_from_stats(logits, mask, st);
        }
    }
    if !filter_k && !filter_p {
        return propose_reference(logits, params, mask, rng);
    }
    let t = if params.temperature > 0.0 {
        params.temperature as f64
    } else {
        1.0
    };
    // The normaliser over the whole vocabulary, needed only to place the top-p cut (top-k alone
    // renormalises over the kept tokens): one pass of f32 exponentials summed in f64. The
    // device's f32 log-sum-exp is not used here: its rounding moves cuts that fall exactly on
    // top_p (e.g. two equal logits and top_p 0.5).
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_z = if filter_p {
        let (m32, t32) = (max as f32, t as f32);
        logits
            .iter()
            .filter(|&&l| l != f32::NEG_INFINITY)
            .map(|&l| ((l - m32) / t32).exp() as f64)
            .sum::<f64>()
            .ln()
    } else {
        0.0
    };
    let p_of = |l: f32| {
        if l == f32::NEG_INFINITY {
            0.0
        } else {
            ((l as f64 - max) / t - log_z).exp()
        }
    };
    let kept = nucleus(
        logits,
        filter_k.then_some(params.top_k),
        params.top_p,
        &p_of,
    );
    let mass: f64 = kept.iter().map(|&i| p_of(logits[i as usize])).sum();
    let prob = |i: u32| (p_of(logits[i as usize]) / mass) as f32;
    let mask_u = mask as usize;
    let token = if params.temperature > 0.0 {
        // Draw in index order over the kept tokens, as the reference does over the whole
        // vocabulary (same draws, same token).
        let mut by_index: Vec<(u32, f32)> = kept
            .iter()
            .map(|&i| (i, prob(i)))
            .filter(|&(i, p)| p > 0.0 && i as usize != mask_u)
            .collect();
        by_index.sort_unstable_by_key(|&(i, _)| i);
        let total: f64 = by_index.iter().map(|&(_, p)| p as f64).sum();
        let u: f64 = rng.random::<f64>() * total;
        let mut acc = 0.0f64;
        let mut chosen = None;
        for &(i, p) in &by_index {
            acc += p as f64;
            chosen = Some(i as usize);
            if u < acc {
                break;
            }
        }
        chosen.unwrap_or_else(|| argmax_except(logits, mask_u).0)
    } else {
        argmax_except(logits, mask_u).0
    };
    let in_kept = |i: usize| kept.contains(&(i as u32));
    let token_prob = if in_kept(token) {
        prob(token as u32)
    } else {
        0.0
    };
    // Top five by (probability, index) as the reference ranks its f32 array: the kept tokens
    // in order (equal f32 values re-ranked by index), then zero-probability ids from 0 up.
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(5);
    let mut i = 0;
    while i < kept.len() && top.len() < 5 {
        let v = prob(kept[i]);
        let mut run = vec![(kept[i], v)];
        i += 1;
        while i < kept.len() && prob(kept[i]) == v {
            run.push((kept[i], v));
            i += 1;
        }
        run.sort_unstable_by_key(|&(id, _)| id);
        top.extend(run);
    }
    top.retain(|&(_, p)| p > 0.0);
    top.truncate(5);
    let mut id = 0u32;
    while top.len() < 5 && (id as usize) < logits.len() {
        if !top.iter().any(|&(t, _)| t == id) && (prob_zero(&kept, id, &prob)) {
            top.push((id, 0.0));
        }
        id += 1;
    }
    let p1 = top.first().map(|t| t.1).unwrap_or(0.0);
    let p2 = top.get(1).map(|t| t.1).unwrap_or(0.0);
    // Σ p log p over the kept tokens, summed in index order like the reference when few.
    let mut probs: Vec<(u32, f32)> = kept.iter().map(|&i| (i, prob(i))).collect();
    if probs.len() <= 4096 {
        probs.sort_unstable_by_key(|&(i, _)| i);
    }
    let neg_entropy: f32 = probs
        .iter()
        .filter(|&&(_, p)| p > 0.0)
        .map(|&(_, p)| p * (p + 1e-10).ln())
        .sum();
    Proposal {
        token: token as u32,
        prob: token_prob,
        margin: p1 - p2,
        neg_entropy,
        top,
    }
}

/// Whether `id` has probability 0 after filtering (outside the kept set, or kept with 0).
fn prob_zero(kept: &[u32], id: u32, prob: &impl Fn(u32) -> f32) -> bool {
    !kept.contains(&id) || prob(id) == 0.0
}

/// The tokens top-k / top-p keep, most likely first (ties: lower id first): the `k` best, then
/// the shortest prefix whose probability (under `p_of`) reaches `top_p` (the first token always
/// stays). Found by partial selection over growing candidate sets, so a peaked distribution
/// costs one pass of comparisons over the vocabulary.
pub fn nucleus(
    logits: &[f32],
    top_k: Option<usize>,
    top_p: f32,
    p_of: &impl Fn(f32) -> f64,
) -> Vec<u32> {
    let v = logits.len();
    let cap = top_k.unwrap_or(v).min(v).max(1);
    if top_p >= 1.0 {
        return top_m(logits, cap);
    }
    let mut m = cap.min(64);
    loop {
        let cand = top_m(logits, m);
        let mut acc = 0.0f64;
        for (j, &i) in cand.iter().enumerate() {
            acc += p_of(logits[i as usize]);
            if acc >= top_p as f64 {
                let mut cand = cand;
                cand.truncate(j + 1);
                return cand;
            }
        }
        if m >= cap {
            return cand;
        }
        m = (m * 8).min(cap);
    }
}

/// The `m` largest logits' ids, by value descending then id ascending: one pass that keeps a
/// buffer of at most 2m candidates above a rising threshold.
pub fn top_m(logits: &[f32], m: usize) -> Vec<u32> {
    let m = m.min(logits.len());
    if m == 0 {
        return Vec::new();
    }
    let better = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut buf: Vec<(f32, u32)> = Vec::with_capacity(2 * m + 1);
    let mut thr = f32::NEG_INFINITY;
    let mut have_thr = false;
    for (i, &l) in logits.iter().enumerate() {
        if !have_thr || l >= thr {
            buf.push((l, i as u32));
            if buf.len() >= 2 * m.max(16) {
                buf.select_nth_unstable_by(m - 1, better);
                buf.truncate(m);
                thr = buf.iter().map(|x| x.0).fold(f32::INFINITY, f32::min);
                have_thr = true;
            }
        }
    }
    buf.sort_unstable_by(better);
    buf.truncate(m);
    buf.into_iter().map(|(_, i)| i).collect()
}

/// The straightforward definition of a proposal: the full filtered distribution in f64, sorted
/// for top-k / top-p. [`propose`] must agree with it; it remains the path for unfiltered
/// sampling, where every probability is needed anyway.
pub fn propose_reference(
    logits: &[f32],
    params: &SamplerParams,
    mask: u32,
    rng: &mut impl Rng,
) -> Proposal {
    let probs = filtered_probs(logits, params.temperature, params.top_k, params.top_p);
    let mask = mask as usize;
    let allowed = |i: usize| i != mask;
    let token = if params.temperature > 0.0 {
        let total: f64 = probs
            .iter()
            .enumerate()
            .filter(|&(i, _)| allowed(i))
            .map(|(_, &p)| p as f64)
            .sum();
        let u: f64 = rng.random::<f64>() * total;
        let mut acc = 0.0f64;
        let mut chosen = None;
        for (i, &p) in probs.iter().enumerate() {
            if p <= 0.0 || !allowed(i) {
                continue;
            }
            acc += p as f64;
            chosen = Some(i);
            if u < acc {
                break;
            }
        }
        chosen.unwrap_or_else(|| argmax_except(logits, mask).0)
    } else {
        argmax_except(logits, mask).0
    };
    let top = top_n(&probs, 5);
    let p1 = top.first().map(|t| t.1).unwrap_or(0.0);
    let p2 = top.get(1).map(|t| t.1).unwrap_or(0.0);
    let neg_entropy: f32 = probs
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p * (p + 1e-10).ln())
        .sum();
    Proposal {
        token: token as u32,
        prob: probs[token],
        margin: p1 - p2,
        neg_entropy,
        top,
    }
}

/// The greedy proposal with the softmax's normaliser and entropy precomputed: only comparisons
/// over the vocabulary, and a handful of exponentials. Same values as the full path.
fn greedy_from_stats(logits: &[f32], mask: u32, st: super::denoiser::RowStats) -> Proposal {
    let token = argmax_except(logits, mask as usize).0;
    let p = |l: f32| ((l as f64) - (st.lse as f64)).exp() as f32;
    let top: Vec<(u32, f32)> = top_n(logits, 5)
        .into_iter()
        .map(|(t, l)| (t, p(l)))
        .collect();
    let p1 = top.first().map(|t| t.1).unwrap_or(0.0);
    let p2 = top.get(1).map(|t| t.1).unwrap_or(0.0);
    Proposal {
        token: token as u32,
        prob: p(logits[token]),
        margin: p1 - p2,
        neg_entropy: st.neg_entropy,
        top,
    }
}

fn argmax_except(xs: &[f32], skip: usize) -> (usize, f32) {
    let mut best = (
        if skip == 0 && xs.len() > 1 { 1 } else { 0 },
        f32::NEG_INFINITY,
    );
    for (i, &x) in xs.iter().enumerate() {
        if i != skip && x > best.1 {
            best = (i, x);
        }
    }
    best
}

/// The score a rule ranks a proposal at `pos` on (higher commits first).
pub fn score(rule: UnmaskRule, p: &Proposal, pos: usize, rng: &mut impl Rng) -> f32 {
    match rule {
        UnmaskRule::LowConfidence | UnmaskRule::Threshold => p.prob,
        UnmaskRule::Margin => p.margin,
        UnmaskRule::Entropy => p.neg_entropy,
        UnmaskRule::Random => rng.random::<f32>(),
        UnmaskRule::LeftToRight => -(pos as f32),
    }
}

/// Probability of an existing token under the plain softmax, from the row's log-sum-exp when
/// the model supplied it (no pass over the vocabulary), else computed.
pub fn prob_with(logits: &[f32], token: u32, stats: Option<super::denoiser::RowStats>) -> f32 {
    match (stats, logits.get(token as usize)) {
        (Some(st), Some(&l)) => ((l as f64) - (st.lse as f64)).exp() as f32,
        (None, Some(_)) => prob_of(logits, token),
        (_, None) => 0.0,
    }
}

/// Probability of an existing token under the plain (unfiltered, temperature-1) softmax.
pub fn prob_of(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    ((logits[token as usize] as f64 - max).exp() / sum) as f32
}
