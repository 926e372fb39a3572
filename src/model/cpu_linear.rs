//! A CPU matmul for the few-row products of decoding: `x [m, k] · wt [k, n]` with the output
//! columns split across the rayon pool, each part one single-threaded `gemm` call.
//!
//! Why: for one row `gemm` takes its matrix-vector path, which runs on one thread, so an
//! autoregressive forward used one core to stream every weight; for a few rows its own threading
//! stays off below its work threshold. Splitting columns keeps each thread's weights contiguous
//! and needs no reduction.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};

/// Rows up to which the split path is used (measured faster than candle's matmul for 1–64 rows
/// on the embedded model's shapes; above, `gemm`'s own packing and threading are left to it).
pub const MAX_ROWS: usize = 64;

/// `x [m, k]` times a weight: `[k, n]` (`transposed: false`) or `[n, k]` used as its transpose
/// (`transposed: true`, the checkpoint's own layout: each output's weights contiguous).
pub struct SplitMatmul {
    pub transposed: bool,
}

struct SendPtr(*mut f32);
// SAFETY: every task writes a disjoint set of columns of the destination.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl CustomOp2 for SplitMatmul {
    fn name(&self) -> &'static str {
        "split-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else {
            candle_core::bail!("split-matmul: f32 only")
        };
        let (m, k) = l1.shape().dims2()?;
        let (k2, n) = if self.transposed {
            let (n, k) = l2.shape().dims2()?;
            (k, n)
        } else {
            l2.shape().dims2()?
        };
        if k != k2 || !l1.is_contiguous() || !l2.is_contiguous() {
            candle_core::bail!("split-matmul: shapes {:?} {:?}", l1.shape(), l2.shape())
        }
        let x = &x[l1.start_offset()..l1.start_offset() + m * k];
        let w = &w[l2.start_offset()..l2.start_offset() + k * n];
        let mut dst = vec![0f32; m * n];
        matmul_into(x, m, k, w, n, self.transposed, &mut dst);
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }
}

/// `dst [m, n] = x [m, k] · w`, with `w` stored `[k, n]` or (`transposed`) `[n, k]`; the output
/// columns are split across the current rayon pool (the caller's, when called inside
/// `ThreadPool::install`), each part one single-threaded `gemm` call.
pub fn matmul_into(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    transposed: bool,
    dst: &mut [f32],
) {
    assert!(
        x.len() >= m * k && w.len() >= k * n && dst.len() >= m * n,
        "matmul_into: short slices"
    );
    if m == 0 || n == 0 {
        return;
    }
    // Strides of the weight as the `[k, n]` right-hand side, and where output c starts.
    let (w_cs, w_rs, w_col) = if transposed {
        (k as isize, 1isize, k)
    } else {
        (1isize, n as isize, 1)
    };
    let threads = rayon::current_num_threads().max(1);
    // Column chunks in multiples of 16 (two AVX registers), at least 64 wide.
    let chunk = n.div_ceil(threads).next_multiple_of(16).max(64);
    let ptr = SendPtr(dst.as_mut_ptr());
    let ptr = &ptr;
    let part = move |c0: usize| {
        let cols = chunk.min(n - c0);
        // SAFETY: `x`, `w` and `dst` outlive the call (checked lengths above); columns
        // c0..c0+cols of every row of `dst` belong to this part alone; strides describe the
        // row-major arrays.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                ptr.0.add(c0),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr().add(c0 * w_col),
                w_cs,
                w_rs,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    if chunk >= n {
        part(0);
        return;
    }
    rayon::scope(|s| {
        let mut starts = (0..n).step_by(chunk);
        let first = starts.next().expect("n > 0");
        for c0 in starts {
            s.spawn(move |_| part(c0));
        }
        // The calling thread takes a part itself instead of only waiting.
        part(first);
    });
}
