//! Products of a few activation rows with a weight matrix in its checkpoint layout (`[n, k]`:
//! each output's weights contiguous), with f32, f16 or bf16 weights widened to f32 in registers.
//!
//! Why by hand: decoding multiplies 1–64 rows by every weight. `gemm`'s path for such shapes was
//! 70% of an autoregressive forward's profile (its matrix-vector code is not register-blocked),
//! and no CPU crate multiplies f32 activations by half-precision weights. Half-precision
//! checkpoints (the embedded model is f16) are held as stored: widening f16/bf16 to f32 is exact,
//! so the results are those of the f32 weights, read from half the memory.
//!
//! The AVX2/FMA/F16C kernel is chosen at run time; other CPUs get the portable loop, which
//! computes the same sums.

use half::{bf16, f16};

/// A weight matrix `[n, k]`, row-major, in the precision it was stored in.
pub enum Mat {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Mat {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Mat::F32(v) => v.len(),
            Mat::F16(v) => v.len(),
            Mat::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `j` of a `[_, k]` matrix, widened into `out` (`k` long).
    pub fn row_into(&self, j: usize, out: &mut [f32]) {
        let k = out.len();
        let r = j * k..(j + 1) * k;
        match self {
            Mat::F32(v) => out.copy_from_slice(&v[r]),
            Mat::F16(v) => out.iter_mut().zip(&v[r]).for_each(|(o, w)| *o = w.to_f32()),
            Mat::Bf16(v) => out.iter_mut().zip(&v[r]).for_each(|(o, w)| *o = w.to_f32()),
        }
    }

    /// The stored precision's name.
    pub fn precision(&self) -> &'static str {
        match self {
            Mat::F32(_) => "f32",
            Mat::F16(_) => "f16",
            Mat::Bf16(_) => "bf16",
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Mat::F32(v) => v.len() * 4,
            Mat::F16(v) => v.len() * 2,
            Mat::Bf16(v) => v.len() * 2,
        }
    }
}

/// Weight bytes per column block: a quarter of a 512 KiB per-core L2 (this machine's `lscpu`
/// "1 MiB (2 instances)" is two 512 KiB caches), so the block being multiplied, the next one
/// being prefetched and the rows fit together.
const L2_BLOCK_BYTES: usize = 128 * 1024;

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// `dst [m, n] = x [m, k] · wᵀ` for `w [n, k]`; output columns split across the current rayon
/// pool.
pub fn matmul_rows(x: &[f32], m: usize, k: usize, w: &Mat, n: usize, dst: &mut [f32]) {
    assert!(
        x.len() >= m * k && w.len() >= n * k && dst.len() >= m * n,
        "matmul_rows: short slices"
    );
    if m == 0 || n == 0 {
        return;
    }
    let (ptr, kind) = match w {
        Mat::F32(v) => (v.as_ptr() as *const u8, F32),
        Mat::F16(v) => (v.as_ptr() as *const u8, F16),
        Mat::Bf16(v) => (v.as_ptr() as *const u8, BF16),
    };
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads).next_multiple_of(4).max(16);
    let w = SendConst(ptr);
    let d = SendMut(dst.as_mut_ptr());
    let (w, d) = (&w, &d);
    let part = move |j0: usize| {
        let j1 = (j0 + chunk).min(n);
        // SAFETY: `x` holds m·k floats, the weights n·k elements of `kind`, `dst` m·n floats
        // (asserted above); this part writes columns j0..j1 of `dst` only.
        unsafe { rows_part(x.as_ptr(), m, k, w.0, kind, j0, j1, d.0, n) }
    };
    if chunk >= n {
        part(0);
        return;
    }
    rayon::scope(|s| {
        let mut starts = (0..n).step_by(chunk);
        let first = starts.next().expect("n > 0");
        for j0 in starts {
            s.spawn(move |_| part(j0));
        }
        part(first);
    });
}

struct SendConst(*const u8);
struct SendMut(*mut f32);
// SAFETY: the weights are only read; each part writes its own columns of the destination.
unsafe impl Sync for SendConst {}
unsafe impl Sync for SendMut {}

/// Columns `j0..j1` of `dst` (row stride `n`) for every row of `x`.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_part(
    x: *const f32,
    m: usize,
    k: usize,
    w: *const u8,
    kind: u8,
    j0: usize,
    j1: usize,
    dst: *mut f32,
    n: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked); extents as documented by the caller.
        return unsafe { avx::part(x, m, k, w, kind, j0, j1, dst, n) };
    }
    for i in 0..m {
        for j in j0..j1 {
            let mut s = 0f32;
            for c in 0..k {
                // SAFETY: i < m, j < n, c < k inside the caller's extents.
                s += unsafe { widen(w, kind, j * k + c) * *x.add(i * k + c) };
            }
            // SAFETY: as above.
            unsafe { *dst.add(i * n + j) = s };
        }
    }
}

/// Element `idx` of the weights, as f32.
#[inline]
unsafe fn widen(w: *const u8, kind: u8, idx: usize) -> f32 {
    // SAFETY: the caller keeps idx inside the matrix.
    unsafe {
        match kind {
            F32 => *(w as *const f32).add(idx),
            F16 => f16::from_bits(*(w as *const u16).add(idx)).to_f32(),
            _ => bf16::from_bits(*(w as *const u16).add(idx)).to_f32(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    })
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{widen, BF16, F16, F32};
    use std::arch::x86_64::*;

    /// Prefetch the next column block into L2 while the first row group multiplies the current
    /// one. A model's weights (22 MB for the embedded f16 model) do not stay in this VM's share
    /// of L3, so every forward streams them from memory; with the block's lines requested ahead,
    /// that streaming overlaps the arithmetic instead of stalling it (interleaved medians on the
    /// embedded model: 1–4 rows 25–35 % faster, 16–32 rows 10 %; docs/benchmarks.md).
    const PREFETCH: bool = true;
    const PF_HINT: i32 = _MM_HINT_T1;

    /// Eight weights from `idx` on, widened.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load<const KIND: u8>(w: *const u8, idx: usize) -> __m256 {
        // SAFETY: the caller keeps idx..idx+8 inside the matrix.
        unsafe {
            match KIND {
                F32 => _mm256_loadu_ps((w as *const f32).add(idx)),
                F16 => {
                    _mm256_cvtph_ps(_mm_loadu_si128((w as *const u16).add(idx) as *const __m128i))
                }
                _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                    _mm_loadu_si128((w as *const u16).add(idx) as *const __m128i),
                ))),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// `M` rows of `x` against `R` weight rows from `j` on: M·R independent accumulators keep
    /// the FMA units busy, and each widened weight vector serves M rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const KIND: u8, const M: usize, const R: usize>(
        x: *const f32,
        k: usize,
        w: *const u8,
        j: usize,
        dst: *mut f32,
        n: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); M]; R];
        let body = k / 8 * 8;
        let mut c = 0;
        // SAFETY (whole function): rows x[0..M], weight rows j..j+R and dst entries are inside
        // the extents `part` was given.
        unsafe {
            while c < body {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let wv = load::<KIND>(w, (j + r) * k + c);
                    for (i, a) in acc_r.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(i * k + c)), *a);
                    }
                }
                c += 8;
            }
            for (r, acc_r) in acc.iter().enumerate() {
                for (i, a) in acc_r.iter().enumerate() {
                    let mut s = hsum(*a);
                    for t in body..k {
                        s += widen(w, KIND, (j + r) * k + t) * *x.add(i * k + t);
                    }
                    *dst.add(i * n + j + r) = s;
                }
            }
        }
    }

    /// Columns j0..j1 for rows of `x` in groups of up to `M`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn columns<const KIND: u8, const M: usize, const R: usize>(
        x: *const f32,
        k: usize,
        w: *const u8,
        j0: usize,
        j1: usize,
        dst: *mut f32,
        n: usize,
        ahead: (*const u8, usize),
    ) {
        let mut j = j0;
        let (ahead_ptr, ahead_len) = ahead;
        let tiles = ((j1 - j0) / R).max(1);
        let per_tile = ahead_len.div_ceil(tiles).next_multiple_of(64);
        let mut fetched = 0;
        // SAFETY: as in `tile`; prefetches are hints and stay inside the next block's weights.
        unsafe {
            while j + R <= j1 {
                let end = (fetched + per_tile).min(ahead_len);
                while fetched < end {
                    _mm_prefetch::<PF_HINT>(ahead_ptr.add(fetched) as *const i8);
                    fetched += 64;
                }
                tile::<KIND, M, R>(x, k, w, j, dst, n);
                j += R;
            }
            while j < j1 {
                tile::<KIND, M, 1>(x, k, w, j, dst, n);
                j += 1;
            }
        }
    }

    /// Columns j0..j1 for every row, in column blocks whose weights stay in the core's L2
    /// cache while all row groups pass over them (a vocabulary-sized head is otherwise streamed
    /// from memory once per group of rows).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn by_kind<const KIND: u8>(
        x: *const f32,
        m: usize,
        k: usize,
        w: *const u8,
        j0: usize,
        j1: usize,
        dst: *mut f32,
        n: usize,
    ) {
        let elem = if KIND == F32 { 4 } else { 2 };
        let block = (super::L2_BLOCK_BYTES / (k * elem).max(1)).max(4) / 4 * 4;
        let mut b0 = j0;
        while b0 < j1 {
            let b1 = (b0 + block).min(j1);
            let b2 = (b1 + block).min(j1);
            let next = (unsafe { w.add(b1 * k * elem) }, (b2 - b1) * k * elem);
            let none = (w, 0usize);
            let mut i = 0;
            // SAFETY: every group's rows i..i+g are inside x and dst; columns b0..b1 inside
            // the caller's j0..j1.
            unsafe {
                while i < m {
                    let (xi, di) = (x.add(i * k), dst.add(i * n));
                    let g = (m - i).min(4);
                    let ahead = if i == 0 && PREFETCH { next } else { none };
                    match g {
                        1 => columns::<KIND, 1, 4>(xi, k, w, b0, b1, di, n, ahead),
                        2 => columns::<KIND, 2, 4>(xi, k, w, b0, b1, di, n, ahead),
                        3 => columns::<KIND, 3, 2>(xi, k, w, b0, b1, di, n, ahead),
                        _ => columns::<KIND, 4, 2>(xi, k, w, b0, b1, di, n, ahead),
                    }
                    i += g;
                }
            }
            b0 = b1;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn part(
        x: *const f32,
        m: usize,
        k: usize,
        w: *const u8,
        kind: u8,
        j0: usize,
        j1: usize,
        dst: *mut f32,
        n: usize,
    ) {
        // SAFETY: the caller checked the CPU features and the extents.
        unsafe {
            match kind {
                F32 => by_kind::<F32>(x, m, k, w, j0, j1, dst, n),
                F16 => by_kind::<F16>(x, m, k, w, j0, j1, dst, n),
                _ => by_kind::<BF16>(x, m, k, w, j0, j1, dst, n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    /// Every precision, row count 1–13 (all group sizes and a remainder), odd widths (the
    /// scalar tail), column counts that leave partial tiles and parts, and a width whose
    /// weights span several L2 column blocks.
    #[test]
    fn matches_a_plain_product_for_every_shape_and_precision() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(k, n) in &[
            (8usize, 1usize),
            (19, 7),
            (64, 33),
            (384, 130),
            (7, 70),
            (4100, 70),
        ] {
            // Weights exactly representable in every precision, so one reference serves all.
            let w: Vec<f32> = (0..n * k)
                .map(|_| bf16::from_f32(next()).to_f32())
                .collect();
            let mats = [
                Mat::F32(w.clone()),
                Mat::F16(w.iter().map(|&v| f16::from_f32(v)).collect()),
                Mat::Bf16(w.iter().map(|&v| bf16::from_f32(v)).collect()),
            ];
            for m in 1..=13 {
                let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let want = reference(&x, m, k, &w, n);
                for mat in &mats {
                    let mut got = vec![f32::NAN; m * n];
                    matmul_rows(&x, m, k, mat, n, &mut got);
                    for (g, e) in got.iter().zip(&want) {
                        assert!(
                            (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                            "k {k} n {n} m {m}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }
}
