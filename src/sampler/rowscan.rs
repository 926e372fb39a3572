//! The vocabulary-wide passes a decoding step makes over one row of logits: the softmax's
//! statistics ([`row_stats`]: log-sum-exp and Σ p log p), the greedy selection ([`select`]: the
//! argmax without the mask id and the five largest logits) and the finiteness check
//! ([`first_non_finite`]).
//!
//! Why by hand: with a 152k-token vocabulary and up to 256 masked rows a step, four scalar passes
//! per row (max, a scalar `expf` per logit summed in f64, argmax, an insertion top-5) were a
//! quarter of a greedy run's profile (docs/benchmarks.md). Here the selection is one pass that
//! compares whole chunks against the current fifth-best value with vector compares and looks at
//! single entries only in the rare chunks that beat it; the statistics are one pass of 8-wide
//! exponentials (`crate::vmath`'s, a range reduction and a polynomial) with running-max
//! rescaling, so each row is read from memory once per pass.
//!
//! The selection is exact (comparisons only): the same results, ties and NaN included, as the
//! scalar definitions it replaced (kept as references in the tests). The statistics agree with
//! the f64-summed reference to a few f32 ulps. The AVX2/FMA kernels are chosen at run time
//! (as in `model::rows_kernel`); other CPUs get portable code written so that LLVM can
//! vectorise it.

use super::denoiser::RowStats;
#[cfg(target_arch = "x86_64")]
use crate::vmath::avx2_fma;
use crate::vmath::{exp, max_body, EXP_LO};

/// How many of the largest entries a proposal reports.
pub const TOP: usize = 5;

/// What the greedy proposal needs from a row, from one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Index and value of the largest entry other than the skipped one (the lowest index on
    /// ties). With no such entry above −∞: index 0, or 1 where 0 is skipped and the row is
    /// longer, with value −∞.
    pub best: (usize, f32),
    /// The largest entries, by value descending then index ascending (at most the count asked).
    pub top: Vec<(u32, f32)>,
}

/// [`Selection`] of `xs` excluding index `skip` from `best` (not from `top`), with the [`TOP`]
/// largest.
pub fn select(xs: &[f32], skip: usize) -> Selection {
    select_n(xs, skip, TOP)
}

/// The `n` largest entries, by value descending then index ascending.
pub fn top_n(xs: &[f32], n: usize) -> Vec<(u32, f32)> {
    select_n(xs, usize::MAX, n).top
}

/// Index and value of the largest entry other than `skip`; see [`Selection::best`].
pub fn argmax_except(xs: &[f32], skip: usize) -> (usize, f32) {
    select_n(xs, skip, 0).best
}

fn select_n(xs: &[f32], skip: usize, n: usize) -> Selection {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { avx::select(xs, skip, n) };
    }
    select_body(xs, skip, n)
}

/// Entries per chunk of the selection: four AVX vectors, compared with the threshold at once.
const SELECT_CHUNK: usize = 32;

/// The selection, written once and compiled twice (portable, and inside an AVX2 function).
///
/// Per entry the rules are exactly those of the scalar definitions: `best` moves on a strictly
/// greater value; `top` takes an entry while it holds fewer than `n`, else when the entry beats
/// its last, and inserts it after every held value ≥ it. A chunk where no entry is greater than
/// both gates (`top`'s last and `best`) changes neither, so it is skipped after a vector compare;
/// NaN entries are never greater, and a NaN held in `top` only ever disables its gate.
#[inline(always)]
fn select_body(xs: &[f32], skip: usize, n: usize) -> Selection {
    let mut best = (
        if skip == 0 && xs.len() > 1 { 1 } else { 0 },
        f32::NEG_INFINITY,
    );
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    let visit = |i: usize, x: f32, best: &mut (usize, f32), top: &mut Vec<(u32, f32)>| {
        if i != skip && x > best.1 {
            *best = (i, x);
        }
        if n > 0 && (top.len() < n || x > top[top.len() - 1].1) {
            let at = top.partition_point(|&(_, v)| v >= x);
            top.insert(at, (i as u32, x));
            top.truncate(n);
        }
    };
    let chunks = xs.chunks_exact(SELECT_CHUNK);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        let base = c * SELECT_CHUNK;
        if top.len() >= n {
            // `best` is never NaN (it moves only on a greater value); a NaN last of `top`
            // admits nothing, so only `best` gates then.
            let gate = match top.last() {
                Some(&(_, v)) if !v.is_nan() => v.min(best.1),
                _ => best.1,
            };
            let mut any = false;
            for &x in chunk {
                any |= x > gate;
            }
            if !any {
                continue;
            }
        }
        for (j, &x) in chunk.iter().enumerate() {
            visit(base + j, x, &mut best, &mut top);
        }
    }
    let base = xs.len() - tail.len();
    for (j, &x) in tail.iter().enumerate() {
        visit(base + j, x, &mut best, &mut top);
    }
    Selection { best, top }
}

/// Index of the first NaN or infinite entry. Chunks are tested whole with vector compares (an
/// early exit per entry would keep the loop scalar); only a chunk that holds one is searched.
pub fn first_non_finite(xs: &[f32]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { avx::first_non_finite(xs) };
    }
    first_non_finite_body(xs)
}

#[inline(always)]
fn first_non_finite_body(xs: &[f32]) -> Option<usize> {
    // Exponent all ones: ±∞ or NaN.
    let bad = |x: f32| (x.to_bits() & 0x7fff_ffff) >= 0x7f80_0000;
    let mut base = 0;
    for chunk in xs.chunks(SELECT_CHUNK) {
        let mut any = false;
        for &x in chunk {
            any |= bad(x);
        }
        if any {
            return chunk.iter().position(|&x| bad(x)).map(|j| base + j);
        }
        base += chunk.len();
    }
    None
}

/// Entries per chunk of [`row_stats`]: the chunk's max and then its exponentials read it from L1.
const STATS_CHUNK: usize = 512;
/// Entries summed in f32 before a sum moves to f64 (per vector lane: four terms).
const STATS_BLOCK: usize = 32;

/// Log-sum-exp and Σ p log p of one row's softmax, as the reference definition computes them
/// with e = exp(l − max): lse = max + ln Σe, Σ p log p = Σ e·(l − max) / Σe − ln Σe. A row whose
/// max is not finite (empty, all −∞ or NaN, or holding +∞) gives lse = that max and 0; a NaN
/// beside a finite max gives NaN for both.
///
/// One pass: each chunk's max is taken first; where it raises the running max, the sums so far
/// are rescaled (e·c, d + ln c with c = e^(old − new)), then the chunk's exponentials are added.
/// Terms are summed four to a vector lane in f32, then in f64.
pub fn row_stats(row: &[f32]) -> RowStats {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { avx::row_stats(row) };
    }
    stats_with(row, max_body, sums_portable)
}

#[inline(always)]
fn stats_with(
    row: &[f32],
    chunk_max: impl Fn(&[f32]) -> f32,
    sums: impl Fn(&[f32], f32) -> (f64, f64),
) -> RowStats {
    let mut m = f32::NEG_INFINITY;
    let (mut s, mut a) = (0f64, 0f64);
    let mut nan = false;
    for chunk in row.chunks(STATS_CHUNK) {
        let cm = chunk_max(chunk);
        if cm > m {
            if cm == f32::INFINITY {
                return RowStats {
                    lse: cm,
                    neg_entropy: 0.0,
                };
            }
            if m > f32::NEG_INFINITY {
                let k = m as f64 - cm as f64;
                let c = k.exp();
                a = c * (a + k * s);
                s *= c;
            }
            m = cm;
        }
        if m == f32::NEG_INFINITY {
            // Nothing above −∞ yet: only a NaN here would show in the result.
            nan |= chunk.iter().any(|x| x.is_nan());
            continue;
        }
        let (cs, ca) = sums(chunk, m);
        s += cs;
        a += ca;
    }
    if m == f32::NEG_INFINITY {
        return RowStats {
            lse: m,
            neg_entropy: 0.0,
        };
    }
    if nan {
        s = f64::NAN;
    }
    let ln_s = s.ln();
    RowStats {
        lse: (m as f64 + ln_s) as f32,
        neg_entropy: (a / s - ln_s) as f32,
    }
}

/// Σ e and Σ e·d over a chunk, d = max(l − m, EXP_LO) (so −∞ logits add 0·d = 0, not NaN).
#[inline(always)]
fn sums_portable(chunk: &[f32], m: f32) -> (f64, f64) {
    let blocks = chunk.chunks_exact(STATS_BLOCK);
    let tail = blocks.remainder();
    let (mut s, mut a) = ([0f64; 8], [0f64; 8]);
    for b in blocks {
        let mut e = [0f32; STATS_BLOCK];
        let mut ed = [0f32; STATS_BLOCK];
        for ((e, ed), &l) in e.iter_mut().zip(&mut ed).zip(b) {
            let d = clamp_lo(l - m);
            *e = exp(d);
            *ed = *e * d;
        }
        for j in 0..8 {
            s[j] += ((e[j] + e[j + 8]) + (e[j + 16] + e[j + 24])) as f64;
            a[j] += ((ed[j] + ed[j + 8]) + (ed[j + 16] + ed[j + 24])) as f64;
        }
    }
    add_tail(tail, m, (s.iter().sum(), a.iter().sum()))
}

/// The sums with the terms of a chunk's last logits (fewer than a block) added one by one.
#[inline(always)]
fn add_tail(tail: &[f32], m: f32, (mut s, mut a): (f64, f64)) -> (f64, f64) {
    for &l in tail {
        let d = clamp_lo(l - m);
        let e = exp(d);
        s += e as f64;
        a += e as f64 * d as f64;
    }
    (s, a)
}

#[inline(always)]
fn clamp_lo(d: f32) -> f32 {
    if d < EXP_LO {
        EXP_LO
    } else {
        d
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::*;
    use crate::vmath::avx::exp8;
    use std::arch::x86_64::*;

    /// The portable selection, compiled for AVX2 (its chunk compare becomes vector compares).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn select(xs: &[f32], skip: usize, n: usize) -> Selection {
        select_body(xs, skip, n)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn first_non_finite(xs: &[f32]) -> Option<usize> {
        first_non_finite_body(xs)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn row_stats(row: &[f32]) -> RowStats {
        // SAFETY: this function's features are those `sums` needs.
        stats_with(row, max_body, |c, m| unsafe { sums(c, m) })
    }

    /// [`sums_portable`] in AVX2: four vectors of terms per step, added in f32, then into four
    /// f64 accumulators per sum.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sums(chunk: &[f32], m: f32) -> (f64, f64) {
        let mv = _mm256_set1_ps(m);
        let lo = _mm256_set1_ps(EXP_LO);
        let (mut s0, mut s1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let blocks = chunk.chunks_exact(STATS_BLOCK);
        let tail = blocks.remainder();
        for b in blocks {
            let p = b.as_ptr();
            // SAFETY: a block holds 32 floats; AVX2/FMA as this function requires.
            unsafe {
                let d = |k: usize| _mm256_max_ps(lo, _mm256_sub_ps(_mm256_loadu_ps(p.add(k)), mv));
                let (d0, d1, d2, d3) = (d(0), d(8), d(16), d(24));
                let (e0, e1, e2, e3) = (exp8(d0), exp8(d1), exp8(d2), exp8(d3));
                let se = _mm256_add_ps(_mm256_add_ps(e0, e1), _mm256_add_ps(e2, e3));
                let ae = _mm256_add_ps(
                    _mm256_fmadd_ps(e1, d1, _mm256_mul_ps(e0, d0)),
                    _mm256_fmadd_ps(e3, d3, _mm256_mul_ps(e2, d2)),
                );
                s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(se)));
                s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(se)));
                a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(ae)));
                a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(ae)));
            }
        }
        let hsum = |v: __m256d| {
            let mut out = [0f64; 4];
            // SAFETY: `out` holds four f64.
            unsafe { _mm256_storeu_pd(out.as_mut_ptr(), v) };
            (out[0] + out[1]) + (out[2] + out[3])
        };
        add_tail(tail, m, (hsum(s0) + hsum(s1), hsum(a0) + hsum(a1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The scalar definitions the selection replaced.
    fn ref_top_n(xs: &[f32], n: usize) -> Vec<(u32, f32)> {
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

    fn ref_argmax_except(xs: &[f32], skip: usize) -> (usize, f32) {
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

    /// The statistics as they were computed: f32 max, std's expf, sums in f64.
    fn ref_stats(row: &[f32]) -> RowStats {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return RowStats {
                lse: max,
                neg_entropy: 0.0,
            };
        }
        let (mut s, mut a) = (0f64, 0f64);
        for &l in row {
            let d = l - max;
            let e = d.exp() as f64;
            s += e;
            if e > 0.0 {
                a += e * d as f64;
            }
        }
        let ln_s = s.ln();
        RowStats {
            lse: (max as f64 + ln_s) as f32,
            neg_entropy: (a / s - ln_s) as f32,
        }
    }

    /// Bitwise equality, so that NaN = NaN and −0 ≠ +0.
    fn same(a: &[(u32, f32)], b: &[(u32, f32)]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
    }

    fn check_selection(xs: &[f32], what: &str) {
        let mut skips = vec![0, 1, xs.len() / 2, xs.len().saturating_sub(1), usize::MAX];
        skips.push(ref_argmax_except(xs, usize::MAX).0);
        for skip in skips {
            let want_best = ref_argmax_except(xs, skip);
            let want_top = ref_top_n(xs, TOP);
            let mut got = vec![("portable", select_body(xs, skip, TOP))];
            #[cfg(target_arch = "x86_64")]
            if avx2_fma() {
                got.push(("avx2", unsafe { avx::select(xs, skip, TOP) }));
            }
            for (path, g) in got {
                assert_eq!(
                    (g.best.0, g.best.1.to_bits()),
                    (want_best.0, want_best.1.to_bits()),
                    "{what}, skip {skip}, {path}: argmax"
                );
                assert!(
                    same(&g.top, &want_top),
                    "{what}, skip {skip}, {path}: top {:?} vs {:?}",
                    g.top,
                    want_top
                );
            }
            assert_eq!(
                argmax_except(xs, skip).0,
                want_best.0,
                "{what}: argmax_except"
            );
        }
        for n in [1, 2, 7, 40] {
            assert!(same(&top_n(xs, n), &ref_top_n(xs, n)), "{what}: top_n({n})");
        }
        // (The scalar definition indexed out of bounds for n = 0.)
        assert!(top_n(xs, 0).is_empty());
        let want_max = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let got_max = crate::vmath::max(xs);
        assert!(
            got_max == want_max || (got_max.is_nan() && want_max.is_nan()),
            "{what}: max {got_max} vs {want_max}"
        );
        assert_eq!(
            max_body(xs).to_bits() & 0x7fff_ffff,
            want_max.to_bits() & 0x7fff_ffff
        );
    }

    #[test]
    fn selection_equals_the_scalar_definitions() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for len in [0usize, 1, 2, 3, 5, 7, 8, 31, 32, 33, 64, 100, 1000, 5000] {
            // Continuous values, a few distinct values (many ties), and a rising ramp (every
            // chunk beats the threshold).
            let cont: Vec<f32> = (0..len).map(|_| rng.random_range(-5.0..5.0)).collect();
            let ties: Vec<f32> = (0..len).map(|_| rng.random_range(0..4) as f32).collect();
            let ramp: Vec<f32> = (0..len).map(|i| i as f32 * 0.01).collect();
            let falling: Vec<f32> = (0..len).map(|i| -(i as f32)).collect();
            for (name, xs) in [
                ("continuous", &cont),
                ("ties", &ties),
                ("ramp", &ramp),
                ("falling", &falling),
            ] {
                check_selection(xs, &format!("{name} len {len}"));
                // Specials in various places: NaN, ±∞, −0, the max at the mask id.
                for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 99.0] {
                    for at in [0, 1, 3, len / 2, len.saturating_sub(1)] {
                        if at < len {
                            let mut v = xs.clone();
                            v[at] = special;
                            check_selection(&v, &format!("{name} len {len}, {special} at {at}"));
                        }
                    }
                }
            }
            let all_nan = vec![f32::NAN; len];
            check_selection(&all_nan, &format!("all NaN len {len}"));
            let all_ninf = vec![f32::NEG_INFINITY; len];
            check_selection(&all_ninf, &format!("all -inf len {len}"));
            let mut nan_first = cont.clone();
            for x in nan_first.iter_mut().take(3) {
                *x = f32::NAN;
            }
            check_selection(&nan_first, &format!("NaN first len {len}"));
            let mut zeros: Vec<f32> = (0..len)
                .map(|i| if i % 3 == 0 { -0.0 } else { 0.0 })
                .collect();
            check_selection(&zeros, &format!("signed zeros len {len}"));
            if len > 0 {
                zeros[len - 1] = 1.0;
                check_selection(&zeros, &format!("zeros then one len {len}"));
            }
        }
    }

    #[test]
    fn first_non_finite_finds_the_first() {
        for len in [0usize, 1, 5, 31, 32, 33, 100, 1000] {
            let row: Vec<f32> = (0..len).map(|i| i as f32 - 50.0).collect();
            assert_eq!(first_non_finite(&row), None, "len {len}");
            assert_eq!(first_non_finite_body(&row), None, "len {len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                for at in [0, 1, len / 2, len.saturating_sub(1)] {
                    if at >= len {
                        continue;
                    }
                    let mut v = row.clone();
                    v[at] = bad;
                    // A later bad value does not hide the first.
                    v[len - 1] = f32::NAN;
                    let want = v.iter().position(|x| !x.is_finite());
                    assert_eq!(first_non_finite(&v), want, "{bad} at {at}, len {len}");
                    assert_eq!(first_non_finite_body(&v), want, "{bad} at {at}, len {len}");
                }
            }
            // Extremes that are finite.
            let mut v = row.clone();
            if len > 2 {
                v[0] = f32::MAX;
                v[1] = f32::MIN;
                v[2] = -f32::MIN_POSITIVE / 2.0;
            }
            assert_eq!(first_non_finite(&v), None, "extremes, len {len}");
        }
    }

    fn check_stats(row: &[f32], what: &str) {
        let want = ref_stats(row);
        let mut got = vec![("portable", stats_with(row, max_body, sums_portable))];
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            got.push(("avx2", unsafe { avx::row_stats(row) }));
        }
        got.push(("dispatched", row_stats(row)));
        for (path, g) in got {
            for (name, x, y) in [
                ("lse", g.lse, want.lse),
                ("neg_entropy", g.neg_entropy, want.neg_entropy),
            ] {
                let ok = if y.is_finite() {
                    (x - y).abs() <= 4.0 * f32::EPSILON * y.abs().max(1.0)
                } else {
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                };
                assert!(ok, "{what}, {path}: {name} {x} vs reference {y}");
            }
        }
    }

    #[test]
    fn row_stats_match_the_f64_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
        for len in [0usize, 1, 2, 7, 8, 31, 32, 33, 511, 512, 513, 2000, 152_064] {
            for scale in [0.01f32, 1.0, 5.0, 30.0] {
                let row: Vec<f32> = (0..len)
                    .map(|_| rng.random_range(-1.0..1.0) * scale)
                    .collect();
                check_stats(&row, &format!("len {len} scale {scale}"));
                // Rising rows rescale the running sums at every chunk.
                let rising: Vec<f32> = (0..len).map(|i| i as f32 * scale / 100.0).collect();
                check_stats(&rising, &format!("rising len {len} scale {scale}"));
            }
            if len == 0 {
                check_stats(&[], "empty");
                continue;
            }
            let base: Vec<f32> = (0..len).map(|_| rng.random_range(-3.0..3.0)).collect();
            for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1000.0, -1000.0] {
                for at in [0, len / 2, len - 1] {
                    let mut v = base.clone();
                    v[at] = special;
                    check_stats(&v, &format!("len {len}, {special} at {at}"));
                }
            }
            let mut v = vec![f32::NEG_INFINITY; len];
            check_stats(&v, &format!("all -inf len {len}"));
            v[len - 1] = f32::NAN;
            check_stats(&v, &format!("-inf then NaN len {len}"));
            v[len - 1] = 2.0;
            check_stats(&v, &format!("-inf then 2 len {len}"));
            v[0] = f32::NAN;
            check_stats(&v, &format!("NaN, -inf, 2 len {len}"));
            check_stats(&vec![f32::NAN; len], &format!("all NaN len {len}"));
            check_stats(&vec![3.5; len], &format!("constant len {len}"));
            // One dominant logit: Σe ≈ 1, the entropy near 0.
            let mut peak = base.clone();
            peak[len / 3] = 60.0;
            check_stats(&peak, &format!("peak len {len}"));
        }
    }
}
