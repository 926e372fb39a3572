//! Vectorised f32 math shared by the model's host kernels and the sampler's row passes: an
//! exponential of our own (glibc's `expf` is scalar, and a 152k-token vocabulary or a SwiGLU
//! layer asks for it millions of times per step), a slice max, and the two loops built on them
//! that the host forward runs (SwiGLU's gate, attention's softmax).
//!
//! The AVX2/FMA kernels are chosen at run time (as in `model::rows_kernel`); other CPUs get
//! portable code written so that LLVM can vectorise it. Results differ from glibc's by at most a
//! couple of ulps (tested), so a forward's logits move at that level, far inside the parity
//! tests' tolerance.

/// Largest entry, NaN ignored (−∞ for an empty or all-NaN row): `fold(−∞, f32::max)`, up to
/// the sign of a zero maximum.
pub fn max(xs: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { avx::max(xs) };
    }
    max_body(xs)
}

#[inline(always)]
pub(crate) fn max_body(xs: &[f32]) -> f32 {
    // Eight running maxima, one per vector lane; `x > m` is false for NaN, as f32::max ignores it.
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (mj, &x) in m.iter_mut().zip(c) {
            *mj = if x > *mj { x } else { *mj };
        }
    }
    m.iter()
        .chain(tail)
        .cloned()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `out[i] = g[i] · σ(g[i]) · u[i]` (SwiGLU's gated product), over the shortest of the three.
pub fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { avx::silu_mul(g, u, out) };
    }
    silu_mul_portable(g, u, out);
}

#[inline(always)]
fn silu_mul_portable(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + exp(-g)) * u;
    }
}

/// `xs[i] = e^(xs[i] − m)` in place; returns their sum (f32, summed per vector lane).
pub fn exp_sub_sum(xs: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { avx::exp_sub_sum(xs, m) };
    }
    exp_sub_sum_portable(xs, m)
}

#[inline(always)]
fn exp_sub_sum_portable(xs: &mut [f32], m: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        for (x, lane) in c.iter_mut().zip(&mut lanes) {
            *x = exp(*x - m);
            *lane += *x;
        }
    }
    let mut sum = lanes.iter().sum::<f32>();
    for x in chunks.into_remainder() {
        *x = exp(*x - m);
        sum += *x;
    }
    sum
}

/// e^x in f32, within 2 ulps of a correctly rounded result over the whole range: subnormal
/// results as such, 0 below about −103.97, +∞ above about 88.72, NaN for NaN. The portable
/// version of the AVX2 kernel's lanes (used for slices' tails and on other CPUs).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // clamp keeps a NaN, which passes through to the result.
    let x = x.clamp(EXP_LO, EXP_HI);
    // n = round(x / ln 2) by the add-1.5·2²³ trick: t's low mantissa bits hold n.
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    // x − n·ln 2 in two parts (n·LN2_HI is exact), so r keeps its low bits.
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5;
    let y = p * (r * r) + r + 1.0;
    let (s1, s2) = scales((t.to_bits() as i32).wrapping_sub(ROUND_BITS));
    y * s1 * s2
}

/// 2^n as two factors 2^a · 2^b (a + b = n, both within the normal range for every n the
/// clamped input gives), so that a product y·2^a·2^b rounds once even where it is subnormal.
#[inline(always)]
fn scales(n: i32) -> (f32, f32) {
    let a = n >> 1;
    let b = n.wrapping_sub(a);
    let bits = |k: i32| f32::from_bits((k.wrapping_add(127) as u32) << 23);
    (bits(a), bits(b))
}

/// Inputs are clamped to [EXP_LO, EXP_HI]: e^EXP_LO rounds to 0 and e^EXP_HI overflows to +∞.
pub(crate) const EXP_LO: f32 = -110.0;
const EXP_HI: f32 = 89.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³
const ROUND_BITS: i32 = 0x4B40_0000; // ROUND.to_bits()
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with 9 significant bits (n·LN2_HI exact for |n| < 2¹⁵).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Minimax coefficients for (e^r − 1 − r) / r² on |r| ≤ ln 2 / 2 (Cephes' expf).
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
// Cephes writes 5.0000001e-1, which is 0.5 in f32.
const P5: f32 = 0.5;

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max(xs: &[f32]) -> f32 {
        max_body(xs)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
        let n = out.len().min(g.len()).min(u.len());
        let full = n - n % 8;
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 ≤ n, inside all three slices; AVX2/FMA as this function requires.
            unsafe {
                let gv = _mm256_loadu_ps(g.as_ptr().add(i));
                let e = exp8(_mm256_xor_ps(gv, sign));
                let s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
                let r = _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(i)));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), r);
            }
        }
        silu_mul_portable(&g[full..n], &u[full..n], &mut out[full..n]);
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_sub_sum(xs: &mut [f32], m: f32) -> f32 {
        let full = xs.len() - xs.len() % 8;
        let mv = _mm256_set1_ps(m);
        let mut acc = _mm256_setzero_ps();
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 ≤ len; AVX2/FMA as this function requires.
            unsafe {
                let p = xs.as_mut_ptr().add(i);
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), mv));
                _mm256_storeu_ps(p, e);
                acc = _mm256_add_ps(acc, e);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes.iter().sum::<f32>() + exp_sub_sum_portable(&mut xs[full..], m)
    }

    /// [`exp`](super::exp) on eight lanes, with fused multiply-adds.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        // min/max return their second operand when either is NaN: NaN passes through.
        let x = _mm256_max_ps(
            _mm256_set1_ps(EXP_LO),
            _mm256_min_ps(_mm256_set1_ps(EXP_HI), x),
        );
        let t = _mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), _mm256_set1_ps(ROUND));
        let n = _mm256_sub_ps(t, _mm256_set1_ps(ROUND));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P0);
        for c in [P1, P2, P3, P4, P5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(ROUND_BITS));
        let a = _mm256_srai_epi32::<1>(ni);
        let b = _mm256_sub_epi32(ni, a);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(a, bias)));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(b, bias)));
        _mm256_mul_ps(_mm256_mul_ps(y, s1), s2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        // Both results here are ≥ 0, where the bit patterns are ordered.
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulps_of_std() {
        let mut xs: Vec<f32> = (0..=2_300_000).map(|i| -120.0 + i as f32 * 1e-4).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            88.72,
            88.7228,
            88.73,
            1e30,
            -87.33,
            -103.97,
            -103.98,
            -104.0,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ]);
        let check = |path: &str, got: &[f32]| {
            let mut worst = (0, 0.0f32);
            for (&x, &g) in xs.iter().zip(got) {
                let u = ulps(g, x.exp());
                if u > worst.0 {
                    worst = (u, x);
                }
            }
            assert!(
                worst.0 <= 2,
                "{path}: {} ulps at x = {} ({} vs std {})",
                worst.0,
                worst.1,
                got[xs.iter().position(|&x| x == worst.1).unwrap()],
                worst.1.exp()
            );
        };
        let portable: Vec<f32> = xs.iter().map(|&x| exp(x)).collect();
        check("portable", &portable);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            use std::arch::x86_64::*;
            let mut got = vec![0f32; xs.len().next_multiple_of(8)];
            let mut padded = xs.clone();
            padded.resize(got.len(), 0.0);
            for (i, o) in padded.chunks_exact(8).zip(got.chunks_exact_mut(8)) {
                // SAFETY: AVX2/FMA checked; eight floats each.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), avx::exp8(_mm256_loadu_ps(i.as_ptr()))) };
            }
            check("avx2", &got[..xs.len()]);
            let mut nan = [0f32; 8];
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(nan.as_mut_ptr(), avx::exp8(_mm256_set1_ps(f32::NAN))) };
            assert!(nan.iter().all(|x| x.is_nan()));
        }
    }

    #[test]
    fn silu_and_softmax_loops_match_std() {
        let g: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.37).collect();
        let u: Vec<f32> = (0..1003).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let mut out = vec![0f32; g.len()];
        let mut portable = out.clone();
        silu_mul(&g, &u, &mut out);
        silu_mul_portable(&g, &u, &mut portable);
        for i in 0..g.len() {
            let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
            for (path, got) in [("dispatched", out[i]), ("portable", portable[i])] {
                assert!(
                    (got - want).abs() <= 4.0 * f32::EPSILON * want.abs(),
                    "{path} silu at {}: {got} vs {want}",
                    g[i]
                );
            }
        }
        for len in [0usize, 1, 7, 8, 9, 100] {
            let row: Vec<f32> = (0..len).map(|i| (i as f32 * 0.9).sin() * 20.0).collect();
            let m = max(&row);
            let mut a = row.clone();
            let mut b = row.clone();
            let sa = exp_sub_sum(&mut a, m);
            let sb = exp_sub_sum_portable(&mut b, m);
            let want: Vec<f32> = row.iter().map(|&x| (x - m).exp()).collect();
            let ws: f32 = want.iter().sum();
            for (path, got, s) in [("dispatched", &a, sa), ("portable", &b, sb)] {
                for (x, y) in got.iter().zip(&want) {
                    assert!(ulps(*x, *y) <= 2, "{path}, len {len}: {x} vs {y}");
                }
                assert!(
                    (s - ws).abs() <= 1e-5 * ws.max(1.0),
                    "{path} sum {s} vs {ws}"
                );
            }
        }
    }
}
