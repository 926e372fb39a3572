//! Turning one position's logits into a proposed token and the scores every rule ranks on.
//!
//! Filters as the reference of [`Filters`] does (SDAR: temperature → top-k → top-p; Dream:
//! temperature → top-p → top-k; LLaDA: none of its own, scores from the plain softmax). With
//! temperature 0 the token is the argmax (lowest id on ties) and probabilities are the softmax at
//! temperature 1, filtered the same way. Scores come from the filtered distribution, as Dream
//! and SDAR do, except for LLaDA.

use rand::Rng;

use super::params::{Filters, SamplerParams, UnmaskRule};
pub use super::rowscan::top_n;
use super::rowscan::{self, argmax_except};

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

/// Softmax of `logits / t` with top-k then top-p filtering (SDAR's order); probabilities (zeros
/// where filtered) in f32, computed in f64. See [`filtered_probs_with`].
pub fn filtered_probs(logits: &[f32], temperature: f32, top_k: usize, top_p: f32) -> Vec<f32> {
    filtered_probs_with(Filters::TopKThenTopP, logits, temperature, top_k, top_p)
}

/// The distribution a step ranks on and reports p(x̂) from, as the reference of
/// `params.filters` does.
pub fn score_probs(logits: &[f32], params: &SamplerParams) -> Vec<f32> {
    let (f, t, k, p) = (
        params.filters,
        params.temperature,
        params.top_k,
        params.top_p,
    );
    match f {
        Filters::PlainScores => filtered_probs_with(f, logits, 0.0, 0, 1.0),
        _ => filtered_probs_with(f, logits, t, k, p),
    }
}

/// Softmax of `logits / t` (t = 1 at temperature 0) filtered in the references' way: top-k keeps
/// every token tied with the k-th; top-p keeps a token while the (renormalised) mass before it is
/// at most `top_p`, so the first always stays. [`Filters::PlainScores`] filters as
/// [`Filters::TopKThenTopP`]. Computed in f64, returned in f32.
pub fn filtered_probs_with(
    filters: Filters,
    logits: &[f32],
    temperature: f32,
    top_k: usize,
    top_p: f32,
) -> Vec<f32> {
    let t = if temperature > 0.0 {
        temperature as f64
    } else {
        1.0
    };
    let max = crate::vmath::max(logits) as f64;
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
        // Kept tokens are always a prefix of `order`; each filter shortens it.
        let by_k = |n: usize| {
            let kth = p[order[top_k.min(n) - 1]];
            order[..n].iter().take_while(|&&i| p[i] >= kth).count()
        };
        let by_p = |n: usize| {
            let total: f64 = order[..n].iter().map(|&i| p[i]).sum();
            let mut before = 0.0;
            let mut keep = 0;
            for &i in &order[..n] {
                if keep > 0 && before / total > top_p as f64 {
                    break;
                }
                before += p[i];
                keep += 1;
            }
            keep
        };
        let mut keep = p.len();
        if filters == Filters::TopPThenTopK {
            if filter_p {
                keep = by_p(keep);
            }
            if filter_k {
                keep = by_k(keep);
            }
        } else {
            if filter_k {
                keep = by_k(keep);
            }
            if filter_p {
                keep = by_p(keep);
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

/// Index and value of the largest entry; the lowest index wins ties (index 0 where nothing
/// exceeds −∞).
pub fn argmax(xs: &[f32]) -> (usize, f32) {
    argmax_except(xs, usize::MAX)
}

/// Proposes a token for one position. Draws from `rng` only when temperature > 0. The mask id
/// is never proposed (a trained model gives it ~0 probability; random test weights might not),
/// but it stays in the distribution the scores are computed from, as in the references.
///
/// Cost: comparisons over the vocabulary, plus exponentials only where a top-p cut needs the
/// normaliser; the kept tokens are found by partial selection ([`top_m`]) over growing
/// candidate sets, never by sorting the vocabulary. Same result as [`propose_reference`].
pub fn propose(
    logits: &[f32],
    params: &SamplerParams,
    mask: u32,
    stats: Option<super::denoiser::RowStats>,
    rng: &mut impl Rng,
) -> Proposal {
    let uniform = (!logits.is_empty() && params.temperature > 0.0).then(|| rng.random::<f64>());
    propose_drawn(logits, params, mask, stats, uniform)
}

/// Whether a step with `params` reads the per-row softmax statistics of [`BlockLogits`]
/// (greedy proposals without filters, and edit noise's probabilities of committed tokens):
/// where it does not, a CPU model can skip a pass of exponentials over every row. A repair
/// step without them computes its probabilities from the logits ([`prob_with`]).
///
/// [`BlockLogits`]: super::denoiser::BlockLogits
pub fn reads_row_stats(params: &SamplerParams) -> bool {
    let greedy = params.temperature <= 0.0;
    let unfiltered = params.filters == Filters::PlainScores || params.top_p >= 1.0;
    (greedy && unfiltered) || params.edit_noise > 0.0
}

/// The random numbers one row's proposal and score take, in the order [`propose`] then
/// [`score`] draw them: a uniform in [0, 1) for a tempered draw, a uniform f32 for the random
/// rule. Drawing them up front for every row lets rows run in parallel with unchanged results.
#[derive(Clone, Copy, Debug, Default)]
pub struct Draws {
    pub uniform: Option<f64>,
    pub score: Option<f32>,
}

impl Draws {
    /// Takes a row's numbers from `rng`; `row_present`: the row has logits (an empty row
    /// proposes the mask id and draws nothing).
    pub fn take(params: &SamplerParams, row_present: bool, rng: &mut impl Rng) -> Draws {
        // As `propose` draws, then `score`.
        let uniform = (row_present && params.temperature > 0.0).then(|| rng.random::<f64>());
        let score = (params.rule == UnmaskRule::Random).then(|| rng.random::<f32>());
        Draws { uniform, score }
    }
}

/// [`propose`] with its uniform already drawn (`Some` exactly where [`Draws::take`] gives one;
/// a missing one reads as 0).
pub fn propose_drawn(
    logits: &[f32],
    params: &SamplerParams,
    mask: u32,
    stats: Option<super::denoiser::RowStats>,
    uniform: Option<f64>,
) -> Proposal {
    let uniform = uniform.unwrap_or(0.0);
    if logits.is_empty() {
        return Proposal {
            token: mask,
            prob: 0.0,
            margin: 0.0,
            neg_entropy: 0.0,
            top: Vec::new(),
        };
    }
    let v = logits.len();
    let filter_k = params.top_k > 0 && params.top_k < v;
    let filter_p = params.top_p < 1.0;
    let greedy = params.temperature <= 0.0;
    let plain = params.filters == Filters::PlainScores;
    if greedy && (plain || (!filter_k && !filter_p)) {
        if let Some(st) = stats {
            return greedy_from_stats(logits, mask, st);
        }
    }
    if (!filter_k && !filter_p) || plain {
        return reference_drawn(logits, params, mask, uniform);
    }
    let t = if greedy {
        1.0
    } else {
        params.temperature as f64
    };
    let max = crate::vmath::max(logits) as f64;
    // The normaliser over the whole vocabulary, needed only where top-p looks at the whole
    // distribution (Dream's order): one pass of f32 exponentials summed in f64. The device's
    // f32 log-sum-exp is not used: its rounding moves cuts that fall exactly on top_p.
    let whole_p = filter_p && (params.filters == Filters::TopPThenTopK || !filter_k);
    if filter_p && !filter_k && max.is_finite() {
        // Top-p alone: the same pass of exponentials also fills a histogram of the mass by
        // logit, which locates the cut without sorting the nucleus (with a flat distribution
        // that is a quarter of a 152k vocabulary).
        let (m32, t32) = (max as f32, t as f32);
        let nb = NUCLEUS_BUCKETS_PER_NAT as usize * NUCLEUS_NATS;
        let scale = NUCLEUS_BUCKETS_PER_NAT / t32;
        // Monotone in l: equal logits share a bucket, higher ones come no later.
        let bucket = |l: f32| (((m32 - l) * scale) as usize).min(nb - 1);
        let mut hist = vec![0f64; nb];
        let mut z = 0f64;
        for &l in logits {
            if l != f32::NEG_INFINITY {
                // The same terms, summed in the same order, as `log_z` below.
                let e = ((l - m32) / t32).exp() as f64;
                z += e;
                hist[bucket(l)] += e;
            }
        }
        let nucleus = propose_nucleus(
            logits,
            params,
            mask,
            uniform,
            greedy,
            t,
            max,
            z.ln(),
            &hist,
            &bucket,
        );
        if let Some(p) = nucleus {
            return p;
        }
    }
    let log_z = if whole_p {
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
    let kept = kept_tokens(logits, params, filter_k, filter_p, &p_of);
    let mut by_id: Vec<(u32, f64)> = kept
        .iter()
        .map(|&i| (i, p_of(logits[i as usize])))
        .collect();
    by_id.sort_unstable_by_key(|&(i, _)| i);
    let sorted = |n: usize| (kept[..n.min(kept.len())].to_vec(), n >= kept.len());
    finish_filtered(logits, mask, uniform, greedy, &by_id, &sorted)
}

/// The proposal from the kept tokens of a filtered distribution: `by_id` holds each kept id
/// with its probability before renormalising, ascending by id; `sorted(n)` gives the first `n`
/// kept ids most likely first (ties: lower id first) and whether that is all of them.
///
/// Sums run in id order, as the reference sums its array (the mass, the draw, Σ p log p).
fn finish_filtered(
    logits: &[f32],
    mask: u32,
    uniform: f64,
    greedy: bool,
    by_id: &[(u32, f64)],
    sorted: &dyn Fn(usize) -> (Vec<u32>, bool),
) -> Proposal {
    let v = logits.len();
    let mass: f64 = by_id.iter().map(|&(_, q)| q).sum();
    let kept_q = |i: u32| {
        by_id
            .binary_search_by_key(&i, |&(id, _)| id)
            .ok()
            .map(|k| by_id[k].1)
    };
    let prob = |i: u32| kept_q(i).map_or(0.0, |q| (q / mass) as f32);
    let mask_u = mask as usize;
    let token = if !greedy {
        // Draw in index order over the kept tokens, as the reference does over the whole
        // vocabulary (same draws, same token).
        let by_index = || {
            by_id
                .iter()
                .map(|&(i, q)| (i, (q / mass) as f32))
                .filter(|&(i, p)| p > 0.0 && i as usize != mask_u)
        };
        let total: f64 = by_index().map(|(_, p)| p as f64).sum();
        let u: f64 = uniform * total;
        let mut acc = 0.0f64;
        let mut chosen = None;
        for (i, p) in by_index() {
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
    let token_prob = prob(token as u32);
    // Top five by (probability, id) as the reference ranks its f32 array: kept tokens in order
    // (equal f32 values re-ranked by id), then zero-probability ids from 0 up. A run of equal
    // values that reaches the end of the prefix asks for a longer one.
    let mut n = 16;
    let mut top = loop {
        let (kept, complete) = sorted(n);
        if let Some(top) = top_five(&kept, complete, &prob) {
            break top;
        }
        n *= 4;
    };
    let mut id = 0u32;
    while top.len() < 5 && (id as usize) < v {
        let zero = prob(id) == 0.0;
        if zero && !top.iter().any(|&(t, _)| t == id) {
            top.push((id, 0.0));
        }
        id += 1;
    }
    let p1 = top.first().map(|t| t.1).unwrap_or(0.0);
    let p2 = top.get(1).map(|t| t.1).unwrap_or(0.0);
    let neg_entropy: f32 = by_id
        .iter()
        .map(|&(_, q)| (q / mass) as f32)
        .filter(|&p| p > 0.0)
        .map(|p| p * (p + 1e-10).ln())
        .sum();
    Proposal {
        token: token as u32,
        prob: token_prob,
        margin: p1 - p2,
        neg_entropy,
        top,
    }
}

/// The five best of `kept` (most likely first), equal probabilities re-ranked by id, zeros
/// dropped; `None` when a run of equal values reaches the end of an incomplete prefix.
fn top_five(kept: &[u32], complete: bool, prob: &impl Fn(u32) -> f32) -> Option<Vec<(u32, f32)>> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(5);
    let mut i = 0;
    while i < kept.len() && top.len() < 5 {
        let val = prob(kept[i]);
        let mut run = vec![(kept[i], val)];
        i += 1;
        while i < kept.len() && prob(kept[i]) == val {
            run.push((kept[i], val));
            i += 1;
        }
        if i == kept.len() && !complete {
            return None;
        }
        run.sort_unstable_by_key(|&(id, _)| id);
        top.extend(run);
    }
    if top.len() < 5 && !complete {
        return None;
    }
    top.retain(|&(_, p)| p > 0.0);
    top.truncate(5);
    Some(top)
}

/// Histogram resolution of the nucleus search: buckets per nat of (max − l) / t, over this many
/// nats (lower logits share the last bucket).
const NUCLEUS_BUCKETS_PER_NAT: f32 = 256.0;
const NUCLEUS_NATS: usize = 48;
/// How far the histogram's masses (f32 exponentials) may be from the exact f64 ones: the
/// region searched exactly is widened by this much mass on each side of top_p.
const NUCLEUS_SLACK: f64 = 1e-5;

/// Top-p alone over the whole vocabulary (`log_z` its normaliser), without sorting the
/// nucleus: a histogram of the tokens' masses by logit finds the few buckets where the cut can
/// fall; only their tokens are sorted and walked in order, everything above is kept unsorted.
/// Same kept set as [`kept_tokens`], except that the mass before the cut is summed in id order
/// above the boundary buckets rather than in rank order (the last bits of the sum differ,
/// which moves a cut only when the mass before a token equals top_p to within rounding — the
/// reference's own f32 normalisation differs from both at that level). `None` where the
/// histogram's bounds do not hold (never expected), for the general path.
#[allow(clippy::too_many_arguments)]
fn propose_nucleus(
    logits: &[f32],
    params: &SamplerParams,
    mask: u32,
    uniform: f64,
    greedy: bool,
    t: f64,
    max: f64,
    log_z: f64,
    hist: &[f64],
    bucket: &impl Fn(f32) -> usize,
) -> Option<Proposal> {
    let top_p = params.top_p as f64;
    let z = log_z.exp();
    let nb = hist.len();
    // Buckets < lo hold tokens that certainly stay; buckets > hi tokens that certainly go.
    let (mut lo, mut hi) = (0, nb - 1);
    let mut above = 0.0f64;
    for (b, &h) in hist.iter().enumerate() {
        if above <= top_p - NUCLEUS_SLACK {
            lo = b;
        }
        above += h / z;
        if above > top_p + NUCLEUS_SLACK {
            hi = b;
            break;
        }
    }
    let p_of = |l: f32| {
        if l == f32::NEG_INFINITY {
            0.0
        } else {
            ((l as f64 - max) / t - log_z).exp()
        }
    };
    let mut by_id: Vec<(u32, f64)> = Vec::new();
    let mut edge: Vec<(f32, u32)> = Vec::new();
    let mut before = 0.0f64;
    for (i, &l) in logits.iter().enumerate() {
        let b = bucket(l);
        if b < lo {
            let q = p_of(l);
            before += q;
            by_id.push((i as u32, q));
        } else if b <= hi {
            edge.push((l, i as u32));
        }
    }
    if before > top_p && !by_id.is_empty() {
        return None;
    }
    let better = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    edge.sort_unstable_by(better);
    // Keep while the mass before a token is at most top_p (the first always stays).
    let sure = by_id.len();
    let mut keep_edge = 0;
    let mut cut = false;
    for &(l, _) in &edge {
        if sure + keep_edge > 0 && before > top_p {
            cut = true;
            break;
        }
        before += p_of(l);
        keep_edge += 1;
    }
    // Past the last edge bucket the cut must have come (its mass exceeds top_p).
    if !cut && hi < nb - 1 && before <= top_p {
        return None;
    }
    let mut tail: Vec<(u32, f64)> = edge[..keep_edge]
        .iter()
        .map(|&(l, i)| (i, p_of(l)))
        .collect();
    tail.sort_unstable_by_key(|&(i, _)| i);
    by_id = merge_by_id(by_id, tail);
    let keep = sure + keep_edge;
    let sorted = |n: usize| {
        let n = n.min(keep);
        (top_m(logits, n), n >= keep)
    };
    Some(finish_filtered(
        logits, mask, uniform, greedy, &by_id, &sorted,
    ))
}

/// Two id-ascending lists as one.
fn merge_by_id(a: Vec<(u32, f64)>, b: Vec<(u32, f64)>) -> Vec<(u32, f64)> {
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].0 < b[j].0 {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The ids [`filtered_probs_with`] keeps, most likely first (ties: lower id first), found on
/// candidate prefixes of growing length. `p_of` gives a token's probability from its logit,
/// normalised over the whole vocabulary where a whole-vocabulary top-p needs it.
fn kept_tokens(
    logits: &[f32],
    params: &SamplerParams,
    filter_k: bool,
    filter_p: bool,
    p_of: &impl Fn(f32) -> f64,
) -> Vec<u32> {
    let v = logits.len();
    let k = params.top_k;
    let top_p = params.top_p as f64;
    let mut m = if filter_k { (2 * k).max(64) } else { 64 }.min(v);
    loop {
        let cand = top_m(logits, m);
        let complete = m >= v;
        let p: Vec<f64> = cand.iter().map(|&i| p_of(logits[i as usize])).collect();
        // Length of the top-k prefix (ties with the k-th kept) among the first `n`, if the
        // candidates decide it.
        let by_k = |n: usize| -> Option<usize> {
            let kth = *p.get(k.min(n).max(1) - 1)?;
            let run = p[..n.min(p.len())]
                .iter()
                .take_while(|&&x| x >= kth)
                .count();
            (run < n.min(p.len()) || complete || n <= p.len()).then_some(run)
        };
        // Top-p over the first `n` with `total` their mass: keep while the mass before a token
        // is at most top_p of the total (the first always stays).
        let by_p = |n: usize, total: f64| -> Option<usize> {
            let mut before = 0.0;
            for (j, &x) in p.iter().take(n).enumerate() {
                if j > 0 && before / total > top_p {
                    return Some(j);
                }
                before += x;
            }
            (complete || n <= p.len()).then_some(n.min(p.len()))
        };
        let keep = match (params.filters, filter_k, filter_p) {
            (_, true, false) => by_k(v),
            (_, false, true) => by_p(v, 1.0),
            (Filters::TopPThenTopK, true, true) => match by_p(v, 1.0) {
                Some(n) => by_k(n),
                // The cut lies past the candidates, so it keeps all of them: top-k decides if
                // its tie run ends inside them.
                None => by_k(v).filter(|&r| r < p.len()),
            },
            (_, true, true) => by_k(v).and_then(|n| {
                let total: f64 = p[..n].iter().sum();
                by_p(n, total)
            }),
            (_, false, false) => Some(v),
        };
        if let Some(n) = keep {
            let mut cand = cand;
            cand.truncate(n.max(1));
            return cand;
        }
        if complete {
            return cand;
        }
        m = (m * 8).min(v);
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
    let mut buf: Vec<(f32, u32)> = Vec::with_capacity(2 * m.max(16) + 1);
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
/// for top-k / top-p. [`propose`] must agree with it; it stays the path for unfiltered
/// sampling, where every probability is needed anyway, and for LLaDA's tempered draws.
pub fn propose_reference(
    logits: &[f32],
    params: &SamplerParams,
    mask: u32,
    rng: &mut impl Rng,
) -> Proposal {
    let uniform = if params.temperature > 0.0 {
        rng.random::<f64>()
    } else {
        0.0
    };
    reference_drawn(logits, params, mask, uniform)
}

fn reference_drawn(logits: &[f32], params: &SamplerParams, mask: u32, uniform: f64) -> Proposal {
    let (t, k, p) = (params.temperature, params.top_k, params.top_p);
    let probs = score_probs(logits, params);
    // LLaDA draws at the temperature but ranks on the plain softmax.
    let tempered = (params.filters == Filters::PlainScores && t > 0.0)
        .then(|| filtered_probs_with(params.filters, logits, t, k, p));
    let draw_from = tempered.as_deref().unwrap_or(&probs);
    let mask = mask as usize;
    let allowed = |i: usize| i != mask;
    let token = if params.temperature > 0.0 {
        let total: f64 = draw_from
            .iter()
            .enumerate()
            .filter(|&(i, _)| allowed(i))
            .map(|(_, &p)| p as f64)
            .sum();
        let u: f64 = uniform * total;
        let mut acc = 0.0f64;
        let mut chosen = None;
        for (i, &q) in draw_from.iter().enumerate() {
            if q <= 0.0 || !allowed(i) {
                continue;
            }
            acc += q as f64;
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
    // One pass for the argmax without the mask id and the five largest logits.
    let sel = rowscan::select(logits, mask as usize);
    let token = sel.best.0;
    let p = |l: f32| ((l as f64) - (st.lse as f64)).exp() as f32;
    let top: Vec<(u32, f32)> = sel.top.into_iter().map(|(t, l)| (t, p(l))).collect();
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

/// The score a rule ranks a proposal at `pos` on (higher commits first).
pub fn score(rule: UnmaskRule, p: &Proposal, pos: usize, rng: &mut impl Rng) -> f32 {
    let drawn = (rule == UnmaskRule::Random).then(|| rng.random::<f32>());
    score_drawn(rule, p, pos, drawn)
}

/// [`score`] with the random rule's number already drawn ([`Draws::score`]).
pub fn score_drawn(rule: UnmaskRule, p: &Proposal, pos: usize, drawn: Option<f32>) -> f32 {
    match rule {
        UnmaskRule::LowConfidence | UnmaskRule::Threshold => p.prob,
        UnmaskRule::Margin => p.margin,
        UnmaskRule::Entropy => p.neg_entropy,
        UnmaskRule::Random => drawn.unwrap_or(0.0),
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
    let max = crate::vmath::max(logits) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    ((logits[token as usize] as f64 - max).exp() / sum) as f32
}
