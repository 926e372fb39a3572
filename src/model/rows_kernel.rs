//! Products of a few activation rows with a weight matrix (`[n, k]` in the checkpoint: `n`
//! outputs of `k` inputs), with f32, f16 or bf16 weights widened to f32 in registers.
//!
//! Why by hand: decoding multiplies 1–64 rows by every weight. `gemm`'s path for such shapes was
//! 70% of an autoregressive forward's profile (its matrix-vector code is not register-blocked),
//! and no CPU crate multiplies f32 activations by half-precision weights. Half-precision
//! checkpoints (the embedded model is f16) are held as stored: widening f16/bf16 to f32 is exact,
//! so the results are those of the f32 weights, read from half the memory.
//!
//! Layout: the weights are repacked once, at load, into panels of [`LANES`] outputs, input-major
//! inside a panel (`panel[c][lane]`). A product then broadcasts one activation and multiplies it
//! by a whole panel row: each output's sum stays in one vector lane, up to six activation rows
//! share every weight load, and no horizontal sums are needed. (The checkpoint's own layout asks
//! for a dot product per output, which reloads the activations for every weight row: load-bound
//! at about 75% of the FMA units' rate.) Each output is the sum over `c` in order, the same in
//! the AVX2 kernel and the portable loop.
//!
//! The AVX2/FMA/F16C kernel is chosen at run time; other CPUs get the portable loop.

use half::{bf16, f16};

use super::team::Team;

/// Outputs per panel: two AVX vectors.
pub const LANES: usize = 16;

/// A weight matrix of `n` outputs × `k` inputs, in the precision it was stored in, packed in
/// panels of [`LANES`] outputs (the last panel zero-padded).
pub struct Mat {
    n: usize,
    k: usize,
    data: Data,
}

enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

/// Panels of `w [n, k]` (row-major): element (j, c) at `(j / LANES) · k · LANES + c · LANES +
/// j % LANES`. Reads 16 rows side by side, each sequentially.
fn pack<T: Copy>(w: &[T], n: usize, k: usize, zero: T) -> Vec<T> {
    assert_eq!(
        w.len(),
        n * k,
        "weights: {} values for a {n}×{k} matrix",
        w.len()
    );
    let panels = n.div_ceil(LANES);
    let mut out = vec![zero; panels * k * LANES];
    for p in 0..panels {
        let base = p * k * LANES;
        for lane in 0..LANES.min(n - p * LANES) {
            let row = &w[(p * LANES + lane) * k..(p * LANES + lane + 1) * k];
            for (c, &v) in row.iter().enumerate() {
                out[base + c * LANES + lane] = v;
            }
        }
    }
    out
}

impl Mat {
    /// From row-major `[n, k]` f32 weights.
    pub fn f32(w: &[f32], n: usize, k: usize) -> Self {
        Mat {
            n,
            k,
            data: Data::F32(pack(w, n, k, 0.0)),
        }
    }

    /// From row-major `[n, k]` f16 weights.
    pub fn f16(w: &[f16], n: usize, k: usize) -> Self {
        Mat {
            n,
            k,
            data: Data::F16(pack(w, n, k, f16::ZERO)),
        }
    }

    /// From row-major `[n, k]` bf16 weights.
    pub fn bf16(w: &[bf16], n: usize, k: usize) -> Self {
        Mat {
            n,
            k,
            data: Data::Bf16(pack(w, n, k, bf16::ZERO)),
        }
    }

    /// Outputs (`n`).
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Inputs per output (`k`).
    pub fn inputs(&self) -> usize {
        self.k
    }

    /// Row `j` of the `[n, k]` matrix (output j's weights, e.g. an embedding), widened into
    /// `out` (`k` long).
    pub fn row_into(&self, j: usize, out: &mut [f32]) {
        assert!(
            j < self.n && out.len() == self.k,
            "row {j} of a {}×{} matrix",
            self.n,
            self.k
        );
        let base = (j / LANES) * self.k * LANES + j % LANES;
        let at = |c: usize| base + c * LANES;
        match &self.data {
            Data::F32(v) => out.iter_mut().enumerate().for_each(|(c, o)| *o = v[at(c)]),
            Data::F16(v) => out
                .iter_mut()
                .enumerate()
                .for_each(|(c, o)| *o = v[at(c)].to_f32()),
            Data::Bf16(v) => out
                .iter_mut()
                .enumerate()
                .for_each(|(c, o)| *o = v[at(c)].to_f32()),
        }
    }

    /// The stored precision's name.
    pub fn precision(&self) -> &'static str {
        match &self.data {
            Data::F32(_) => "f32",
            Data::F16(_) => "f16",
            Data::Bf16(_) => "bf16",
        }
    }

    /// Bytes held (padding included).
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len() * 4,
            Data::F16(v) => v.len() * 2,
            Data::Bf16(v) => v.len() * 2,
        }
    }

    fn raw(&self) -> (*const u8, u8) {
        match &self.data {
            Data::F32(v) => (v.as_ptr() as *const u8, F32),
            Data::F16(v) => (v.as_ptr() as *const u8, F16),
            Data::Bf16(v) => (v.as_ptr() as *const u8, BF16),
        }
    }
}

/// Weight bytes per block of panels: a quarter of a 512 KiB per-core L2 (this machine's `lscpu`
/// "1 MiB (2 instances)" is two 512 KiB caches), so the block being multiplied, the next one
/// being prefetched and the rows fit together.
const L2_BLOCK_BYTES: usize = 128 * 1024;

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// `dst [m, n] = x [m, k] · wᵀ` for `w` of `n` outputs × `k` inputs; panels split across
/// `team`.
pub fn matmul_rows(team: &Team, x: &[f32], m: usize, k: usize, w: &Mat, n: usize, dst: &mut [f32]) {
    assert!(
        w.k == k && w.n == n,
        "matmul_rows: a {}×{} matrix used as {n}×{k}",
        w.n,
        w.k
    );
    assert!(
        x.len() >= m * k && dst.len() >= m * n,
        "matmul_rows: short slices"
    );
    if m == 0 || n == 0 {
        return;
    }
    let (w, kind) = w.raw();
    let panels = n.div_ceil(LANES);
    let parts = team.threads().min(panels);
    let chunk = panels.div_ceil(parts);
    let job = Product {
        x: x.as_ptr(),
        m,
        k,
        w,
        kind,
        dst: dst.as_mut_ptr(),
        n,
    };
    team.run(parts, &|i| {
        let (p0, p1) = (i * chunk, ((i + 1) * chunk).min(panels));
        if p0 < p1 {
            // SAFETY: `x` holds m·k floats, the weights `panels` packed panels of `kind`, `dst`
            // m·n floats (asserted above); this part writes the columns of panels p0..p1 only.
            unsafe { rows_part(job, p0, p1) }
        }
    });
}

/// One product's operands as raw parts: `dst [m, n] = x [m, k] · wᵀ`, weights packed, of
/// precision `kind`.
#[derive(Clone, Copy)]
struct Product {
    x: *const f32,
    m: usize,
    k: usize,
    w: *const u8,
    kind: u8,
    dst: *mut f32,
    n: usize,
}

// SAFETY: the weights and rows are only read; each parallel part writes its own columns of `dst`.
unsafe impl Sync for Product {}
unsafe impl Send for Product {}

/// The columns of panels `p0..p1` of `dst` for every row of `x`.
unsafe fn rows_part(job: Product, p0: usize, p1: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked); extents as documented by the caller.
        return unsafe { avx::part(job, p0, p1) };
    }
    // SAFETY: as documented by the caller.
    unsafe { portable(job, p0, p1) }
}

/// The same sums in plain code, for CPUs without AVX2/FMA/F16C.
unsafe fn portable(job: Product, p0: usize, p1: usize) {
    let Product {
        x,
        m,
        k,
        w,
        kind,
        dst,
        n,
    } = job;
    for i in 0..m {
        for j in p0 * LANES..(p1 * LANES).min(n) {
            let base = (j / LANES) * k * LANES + j % LANES;
            let mut s = 0f32;
            for c in 0..k {
                // SAFETY: i < m, j < n, c < k inside the caller's extents.
                s = unsafe { widen(w, kind, base + c * LANES).mul_add(*x.add(i * k + c), s) };
            }
            // SAFETY: as above.
            unsafe { *dst.add(i * n + j) = s };
        }
    }
}

/// Element `idx` of the packed weights, as f32.
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
    use super::{Product, BF16, F16, F32, LANES};
    use std::arch::x86_64::*;

    /// Prefetch the next block of panels into L2 while the first row group multiplies the
    /// current one. A model's weights (22 MB for the embedded f16 model) do not stay in this
    /// VM's share of L3, so every forward streams them from memory; requested ahead, that
    /// streaming overlaps the arithmetic (docs/benchmarks.md).
    const PREFETCH: bool = true;

    /// Eight weights from element `idx` on, widened.
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

    /// `M` rows of `x` against `Q` panels from panel `p` on: M·2Q accumulators, each holding
    /// eight outputs' sums; one broadcast activation serves 2Q weight vectors, one weight vector
    /// M rows. Writes the columns that exist (`n`) of `dst` (row stride `n`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const KIND: u8, const M: usize, const Q: usize>(
        x: *const f32,
        k: usize,
        w: *const u8,
        p: usize,
        dst: *mut f32,
        n: usize,
        ahead: *const u8,
        lines: usize,
    ) {
        let mut acc = [[[_mm256_setzero_ps(); 2]; Q]; M];
        // SAFETY (whole function): rows x[0..M], panels p..p+Q, the prefetched lines and the
        // written dst entries are inside the extents `part` was given.
        unsafe {
            for l in 0..lines {
                _mm_prefetch::<_MM_HINT_T1>(ahead.add(l * 64) as *const i8);
            }
            for c in 0..k {
                let mut wv = [[_mm256_setzero_ps(); 2]; Q];
                for (q, v) in wv.iter_mut().enumerate() {
                    let at = ((p + q) * k + c) * LANES;
                    v[0] = load::<KIND>(w, at);
                    v[1] = load::<KIND>(w, at + 8);
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*x.add(i * k + c));
                    for (a, v) in acc_i.iter_mut().zip(&wv) {
                        a[0] = _mm256_fmadd_ps(b, v[0], a[0]);
                        a[1] = _mm256_fmadd_ps(b, v[1], a[1]);
                    }
                }
            }
            for (i, acc_i) in acc.iter().enumerate() {
                for (q, a) in acc_i.iter().enumerate() {
                    let j = (p + q) * LANES;
                    let row = dst.add(i * n + j);
                    if j + LANES <= n {
                        _mm256_storeu_ps(row, a[0]);
                        _mm256_storeu_ps(row.add(8), a[1]);
                    } else {
                        // The last, zero-padded panel: only the outputs that exist.
                        let mut tmp = [0f32; LANES];
                        _mm256_storeu_ps(tmp.as_mut_ptr(), a[0]);
                        _mm256_storeu_ps(tmp.as_mut_ptr().add(8), a[1]);
                        let valid = n.saturating_sub(j).min(LANES);
                        std::ptr::copy_nonoverlapping(tmp.as_ptr(), row, valid);
                    }
                }
            }
        }
    }

    /// Panels p0..p1 for `M` rows, `Q` panels at a time; the first row group also requests the
    /// `ahead` bytes (the next block), a share before each tile.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn panels<const KIND: u8, const M: usize, const Q: usize>(
        x: *const f32,
        k: usize,
        w: *const u8,
        p0: usize,
        p1: usize,
        dst: *mut f32,
        n: usize,
        ahead: (*const u8, usize),
    ) {
        let (ahead_ptr, ahead_len) = ahead;
        let total = ahead_len.div_ceil(64);
        let per_tile = total.div_ceil(((p1 - p0) / Q).max(1));
        let mut fetched = 0;
        let mut p = p0;
        // SAFETY: as in `tile`; the prefetched lines stay inside the next block.
        unsafe {
            while p + Q <= p1 {
                let lines = per_tile.min(total - fetched);
                let at = ahead_ptr.add(fetched * 64);
                tile::<KIND, M, Q>(x, k, w, p, dst, n, at, lines);
                fetched += lines;
                p += Q;
            }
            while p < p1 {
                tile::<KIND, M, 1>(x, k, w, p, dst, n, ahead_ptr, 0);
                p += 1;
            }
        }
    }

    /// Panels p0..p1 for every row, in blocks of panels whose weights stay in the core's L2
    /// while all row groups pass over them (a vocabulary-sized head is otherwise streamed from
    /// memory once per group of rows).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn by_kind<const KIND: u8>(job: Product, p0: usize, p1: usize) {
        let Product {
            x, m, k, w, dst, n, ..
        } = job;
        let elem = if KIND == F32 { 4 } else { 2 };
        let panel_bytes = (k * LANES * elem).max(1);
        let block = (super::L2_BLOCK_BYTES / panel_bytes).max(1);
        let mut b0 = p0;
        while b0 < p1 {
            let b1 = (b0 + block).min(p1);
            let b2 = (b1 + block).min(p1);
            // SAFETY: panels b1..b2 lie inside the matrix (b2 ≤ p1).
            let next = (unsafe { w.add(b1 * panel_bytes) }, (b2 - b1) * panel_bytes);
            let mut i = 0;
            // SAFETY: every group's rows i..i+g are inside x and dst; panels b0..b1 inside
            // the caller's p0..p1.
            unsafe {
                while i < m {
                    let (xi, di) = (x.add(i * k), dst.add(i * n));
                    let g = (m - i).min(6);
                    let ahead = if i == 0 && PREFETCH { next } else { (w, 0) };
                    match g {
                        1 => panels::<KIND, 1, 3>(xi, k, w, b0, b1, di, n, ahead),
                        2 => panels::<KIND, 2, 2>(xi, k, w, b0, b1, di, n, ahead),
                        3 => panels::<KIND, 3, 1>(xi, k, w, b0, b1, di, n, ahead),
                        4 => panels::<KIND, 4, 1>(xi, k, w, b0, b1, di, n, ahead),
                        5 => panels::<KIND, 5, 1>(xi, k, w, b0, b1, di, n, ahead),
                        _ => panels::<KIND, 6, 1>(xi, k, w, b0, b1, di, n, ahead),
                    }
                    i += g;
                }
            }
            b0 = b1;
        }
    }

    pub(super) unsafe fn part(job: Product, p0: usize, p1: usize) {
        // SAFETY: the caller checked the CPU features and the extents.
        unsafe {
            match job.kind {
                F32 => by_kind::<F32>(job, p0, p1),
                F16 => by_kind::<F16>(job, p0, p1),
                _ => by_kind::<BF16>(job, p0, p1),
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

    /// Every precision, row count 1–13 (every group size and remainders), output counts that
    /// leave a partial last panel and panels that do not divide among the threads, inputs not a
    /// multiple of 8, and a width whose weights span several L2 blocks; the packed matrix gives
    /// back every row exactly.
    #[test]
    fn matches_a_plain_product_for_every_shape_and_precision() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let teams = [Team::new(1, "t").unwrap(), Team::new(3, "t").unwrap()];
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
                Mat::f32(&w, n, k),
                Mat::f16(
                    &w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
                    n,
                    k,
                ),
                Mat::bf16(
                    &w.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(),
                    n,
                    k,
                ),
            ];
            for mat in &mats {
                let mut row = vec![0f32; k];
                for j in 0..n {
                    mat.row_into(j, &mut row);
                    assert_eq!(row, w[j * k..(j + 1) * k], "row {j} of {n}×{k}");
                }
            }
            for m in 1..=13 {
                let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
                let want = reference(&x, m, k, &w, n);
                for mat in &mats {
                    for team in &teams {
                        let mut got = vec![f32::NAN; m * n];
                        matmul_rows(team, &x, m, k, mat, n, &mut got);
                        for (g, e) in got.iter().zip(&want) {
                            assert!(
                                (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                                "k {k} n {n} m {m} {}: {g} vs {e}",
                                mat.precision()
                            );
                        }
                    }
                }
            }
        }
    }

    /// The portable loop (what CPUs without AVX2 run) on a partial panel and several rows.
    #[test]
    fn the_portable_loop_matches_too() {
        let (m, k, n) = (3, 37, 21);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let want = reference(&x, m, k, &w, n);
        for mat in [
            Mat::f32(&w, n, k),
            Mat::f16(
                &w.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
                n,
                k,
            ),
        ] {
            let mut got = vec![f32::NAN; m * n];
            let (w, kind) = mat.raw();
            let job = Product {
                x: x.as_ptr(),
                m,
                k,
                w,
                kind,
                dst: got.as_mut_ptr(),
                n,
            };
            // SAFETY: x is m·k, got m·n, the matrix n.div_ceil(LANES) panels of k inputs.
            unsafe { portable(job, 0, n.div_ceil(LANES)) };
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{g} vs {e}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "used as")]
    fn a_shape_mismatch_is_refused() {
        let w = Mat::f32(&[0.0; 6], 2, 3);
        matmul_rows(
            &Team::new(1, "t").unwrap(),
            &[0.0; 2],
            1,
            2,
            &w,
            3,
            &mut [0.0; 3],
        );
    }
}
